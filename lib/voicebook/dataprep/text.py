"""Transcript text: normalise it, and check it the way XTTS's tokenizer will see it.

``TextChecker`` takes the tokenizer as an argument (any coqui ``VoiceBpeTokenizer``), so the
checks run against the base model actually being fine-tuned.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, NamedTuple

from voicebook.coqui.limits import MAX_TEXT_TOKENS as XTTS_MAX_TEXT_TOKENS
from voicebook.coqui.limits import char_limit as xtts_char_limit

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


class TextCheck(NamedTuple):
    kind: str | None  # None: the text is fine
    reason: str | None
    n_tokens: int = 0


@dataclass
class TextChecker:
    """Validates transcript text for one language against an XTTS tokenizer."""

    tokenizer: Any  # TTS.tts.layers.xtts.tokenizer.VoiceBpeTokenizer
    language: str
    max_tokens: int = XTTS_MAX_TEXT_TOKENS

    def problem(self, text: str) -> str | None:
        """Why ``text`` cannot train XTTS, in plain words; None when it can."""
        return self.check(text).reason

    def check(self, text: str) -> TextCheck:
        """The verdict on ``text``: problem kind and reason (None if fine) and token count."""
        if not text:
            return TextCheck("empty_text", "empty transcript: write the spoken words, or remove it")
        if "\ufffd" in text:
            reason = "transcript has undecodable bytes (shown as \ufffd): save the file as UTF-8"
            return TextCheck("undecodable_text", reason)
        char_limit = xtts_char_limit(self.language)
        if len(text) > char_limit:
            reason = (
                f"transcript is {len(text)} characters, over XTTS's {char_limit} for "
                f"'{self.language}': split the clip"
            )
            return TextCheck("text_too_long", reason)
        try:
            ids = self._encode(text)
        except Exception as exc:  # noqa: BLE001 -- num2words & co. fail on odd numbers/symbols
            reason = f"the tokenizer cannot read this transcript ({type(exc).__name__}: {exc})"
            return TextCheck("untokenizable_text", reason)
        if len(ids) > self.max_tokens:
            reason = (
                f"transcript is {len(ids)} tokens, over XTTS's limit of {self.max_tokens}: "
                "split the clip"
            )
            return TextCheck("text_too_long", reason, len(ids))
        if self.tokenizer.tokenizer.token_to_id("[UNK]") in ids:
            chars = "".join(self.unknown_characters(text)) or "?"
            reason = (
                f"characters the base model's vocabulary does not know: {chars!r}; "
                "spell them out or remove them"
            )
            return TextCheck("unknown_characters", reason, len(ids))
        if self.tokenizer.tokenizer.token_to_id("[STOP]") in ids:
            reason = "transcript contains the literal token [STOP]: remove it"
            return TextCheck("untokenizable_text", reason, len(ids))
        return TextCheck(None, None, len(ids))

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
