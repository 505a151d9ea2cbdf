"""The failures XTTS users report, flagged per take from Whisper's word timestamps.

- **runaway** (coqui-ai/TTS #3964, #3516, #3598): the generation ran into its token cap, or
  Whisper hears words after the text's last word, or there is voiced audio for longer than
  ``VOICED_TAIL_S`` after the last word heard;
- **truncated** (alltalk_tts #477): the text's last word is not heard;
- **skipped_or_repeated**: a word of the text is not heard while words after it are, or a word
  is heard twice where the text has it once.

The alignment is difflib's longest-matching-blocks alignment of the normalised words (the same
normalisation as CER); a misheard word that still resembles the text's word
(``SIMILAR_WORD`` of its characters) counts as heard, so an ordinary recognition error is not
a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher

import numpy as np

from voicebook.measures.text import normalise_for_cer

FLAGS = ("runaway", "truncated", "skipped_or_repeated")
SIMILAR_WORD = 0.5  # character similarity (difflib ratio) above which a misheard word counts
VOICED_TAIL_S = 1.0  # voiced seconds after the last word heard that make a runaway tail
TAIL_GRACE_S = 0.3  # a word's own decay after Whisper's end time
FRAME_S = 0.03
VOICED_SHARE_OF_LOUD = 0.1  # a frame is voiced above this share of the take's loud frames' RMS


@dataclass(frozen=True)
class HeardWord:
    """One word Whisper heard, with its end time in the take (seconds; None when unknown)."""

    text: str
    end: float | None = None


@dataclass(frozen=True)
class Flags:
    runaway: bool
    truncated: bool
    skipped_or_repeated: bool

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @property
    def any(self) -> bool:
        return self.runaway or self.truncated or self.skipped_or_repeated


def words_of(text: str) -> list[str]:
    return normalise_for_cer(text).split()


def _same_word(a: str, b: str) -> bool:
    return a == b or SequenceMatcher(None, a, b, autojunk=False).ratio() >= SIMILAR_WORD


def _matched(expected: list[str], heard: list[str]) -> tuple[list[int | None], list[bool]]:
    """For each expected word, the index of the heard word aligned to it (None: not heard);
    for each heard word, whether it was aligned to an expected word."""
    to_heard: list[int | None] = [None] * len(expected)
    used = [False] * len(heard)
    ops = SequenceMatcher(None, expected, heard, autojunk=False).get_opcodes()
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":
            pairs = zip(range(i1, i2), range(j1, j2))
        elif op == "replace":
            pairs = ((i, j) for i, j in zip(range(i1, i2), range(j1, j2))
                     if _same_word(expected[i], heard[j]))  # fmt: skip
        else:
            continue
        for i, j in pairs:
            to_heard[i], used[j] = j, True
    return to_heard, used


def failure_flags(
    text: str,
    heard: Sequence[HeardWord | str],
    *,
    cap_hit: bool = False,
    voiced_tail_s: float = 0.0,
) -> Flags:
    """The three flags of one take: ``text`` the sentence asked for, ``heard`` Whisper's words
    in order, ``cap_hit`` whether generation ran into the token cap, ``voiced_tail_s`` the voiced
    seconds after the last word heard (``voiced_after``)."""
    expected = words_of(text)
    words = [w if isinstance(w, HeardWord) else HeardWord(w) for w in heard]
    said = [t for w in words for t in words_of(w.text)]
    to_heard, used = _matched(expected, said)
    aligned = [j for j in to_heard if j is not None]
    last = max(aligned) if aligned else -1
    after = any(not used[j] for j in range(last + 1, len(said)))
    runaway = cap_hit or after or voiced_tail_s > VOICED_TAIL_S
    truncated = bool(expected) and to_heard[-1] is None
    heard_up_to = max((i for i, j in enumerate(to_heard) if j is not None), default=-1)
    skipped = heard_up_to > 0 and any(j is None for j in to_heard[:heard_up_to])
    repeated = any(
        not used[j] and any(_same_word(said[j], said[k]) for k in (j - 1, j + 1)
                            if 0 <= k < len(said) and used[k])
        for j in range(len(said))
    )  # fmt: skip
    return Flags(runaway, truncated, skipped or repeated)


def voiced_after(samples: np.ndarray, rate: int, after_s: float) -> float:
    """Seconds of voiced audio in ``samples`` after ``after_s`` (+ a short grace): frames whose
    RMS is above ``VOICED_SHARE_OF_LOUD`` of the take's loud frames (its 95th percentile)."""
    samples = np.asarray(samples, np.float32)
    hop = max(1, int(FRAME_S * rate))
    n = len(samples) // hop
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = float(np.percentile(rms, 95))
    if loud <= 0:
        return 0.0
    start = int(max(after_s + TAIL_GRACE_S, 0) / FRAME_S)
    return float(np.sum(rms[start:] > VOICED_SHARE_OF_LOUD * loud) * FRAME_S)
