"""Transcript text: normalise it, and check it the way XTTS's tokenizer will see it.

``TextChecker`` takes the tokenizer as an argument (any coqui ``VoiceBpeTokenizer``), so the
checks run against the base model actually being fine-tuned.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from voicebook.dataprep.config import XTTS_MAX_TEXT_TOKENS

# Typography XTTS's cleaners do not know: mapped to what they do know, or dropped.
_REPLACE = str.maketrans(
    {
        "\u201e": "",  # „
        "\u201c": "",  # "
        "\u201d": "",  # "
        '"': "",  # XTTS's cleaner drops it too; in a '|' table it would start a quoted field
        "\u00ab": "",  # «
        "\u00bb": "",  # »
        "\u2018": "'",
        "\u2019": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "|": " ",
        "\u00a0": " ",
    }
)
_INVISIBLE = re.compile(r"[\u0000-\u001f\u007f\u200b-\u200f\u2060\ufeff]")
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # subtitle tags: <i>, <c.x>, {\an8}


def normalise_text(text: str) -> str:
    """NFC, subtitle tags and invisible characters removed, typography simplified, spaces
    collapsed. Case and punctuation are kept: XTTS lowercases and expands numbers itself."""
    text = unicodedata.normalize("NFC", text)
    text = _MARKUP.sub("", text)
    text = _INVISIBLE.sub(" ", text).translate(_REPLACE)
    return " ".join(text.split())


def is_question(text: str) -> bool:
    return text.rstrip(" .\"')»”").endswith("?")


@dataclass
class TextChecker:
    """Validates transcript text for one language against an XTTS tokenizer."""

    tokenizer: Any  # TTS.tts.layers.xtts.tokenizer.VoiceBpeTokenizer
    language: str
    max_tokens: int = XTTS_MAX_TEXT_TOKENS

    def problem(self, text: str) -> str | None:
        """Why ``text`` cannot train XTTS, in plain words; None when it can."""
        return self.check(text)[0]

    def check(self, text: str) -> tuple[str | None, int]:
        """(problem or None, number of tokens) for ``text``."""
        if not text:
            return "empty transcript: write the spoken words, or remove the clip", 0
        if "\ufffd" in text:
            return "transcript has undecodable bytes (shown as \ufffd): save the file as UTF-8", 0
        char_limit = self.tokenizer.char_limits.get(self.language.split("-")[0], 250)
        if len(text) > char_limit:
            return (
                f"transcript is {len(text)} characters, over XTTS's {char_limit} for "
                f"'{self.language}': split the clip"
            ), 0
        try:
            ids = self._encode(text)
        except Exception as exc:  # noqa: BLE001 -- num2words & co. fail on odd numbers/symbols
            return f"the tokenizer cannot read this transcript ({type(exc).__name__}: {exc})", 0
        if len(ids) > self.max_tokens:
            return (
                f"transcript is {len(ids)} tokens, over XTTS's limit of {self.max_tokens}: "
                "split the clip"
            ), len(ids)
        unk = self.tokenizer.tokenizer.token_to_id("[UNK]")
        if unk in ids:
            chars = "".join(self.unknown_characters(text)) or "?"
            return (
                f"characters the base model's vocabulary does not know: {chars!r}; "
                "spell them out or remove them"
            ), len(ids)
        stop = self.tokenizer.tokenizer.token_to_id("[STOP]")
        if stop in ids:
            return "transcript contains the literal token [STOP]: remove it", len(ids)
        return None, len(ids)

    def n_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of the cleaned text that the vocabulary maps to [UNK]."""
        cleaned = self.tokenizer.preprocess_text(text, self.language)
        unk = self.tokenizer.tokenizer.token_to_id("[UNK]")
        return [
            c for c in sorted(set(cleaned) - {" "}) if unk in self.tokenizer.tokenizer.encode(c).ids
        ]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, self.language))


class _DropCharLimitWarning(logging.Filter):
    """coqui's encode() warns about char_limits on every long text; ``check`` reports it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The text length exceeds the character limit")


logging.getLogger("TTS.tts.layers.xtts.tokenizer").addFilter(_DropCharLimitWarning())
