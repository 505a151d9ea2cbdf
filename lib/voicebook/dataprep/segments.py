"""Long recordings into clips: subtitle cues (SRT / WebVTT), voice activity, and the planner that
merges short cues and splits over-long ones at their longest pause. (Speech recognition's own
cuts: ``transcribe``.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from voicebook.dataprep.audio import pauses

_SENTENCE_END = re.compile(r"[.?!…]\s+")
_CLAUSE_END = re.compile(r"[,;:]\s+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Cue:
    """A stretch of a recording (seconds) with its text; ``inputs`` are the ids it stands for."""

    start: float
    end: float
    text: str
    inputs: tuple[str, ...]
    split: bool = False  # a part of a cue that was cut at a pause

    @property
    def duration(self) -> float:
        return self.end - self.start


def clock(seconds: float) -> str:
    """``m:ss.ss`` (or ``h:mm:ss.ss``) for item names people can find in a player."""
    m, s = divmod(round(seconds, 2), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


def merge_short(
    cues: list[Cue], min_seconds: float, max_seconds: float, max_gap: float
) -> list[Cue]:
    """Join cues shorter than ``min_seconds`` with their neighbours (gap at most ``max_gap``,
    result at most ``max_seconds``): forwards first, then into the previous clip."""

    def join(a: Cue, b: Cue) -> Cue:
        return Cue(a.start, b.end, f"{a.text} {b.text}".strip(), a.inputs + b.inputs)

    def fits(a: Cue, b: Cue) -> bool:
        return b.start - a.end <= max_gap and b.end - a.start <= max_seconds

    forward: list[Cue] = []
    for cue in cues:
        if forward and forward[-1].duration < min_seconds and fits(forward[-1], cue):
            forward[-1] = join(forward[-1], cue)
        else:
            forward.append(cue)
    merged: list[Cue] = []
    for cue in forward:
        if merged and cue.duration < min_seconds and fits(merged[-1], cue):
            merged[-1] = join(merged[-1], cue)
        else:
            merged.append(cue)
    return merged


def split_text(text: str, fraction: float) -> tuple[str, str] | None:
    """Cut ``text`` near ``fraction`` of its length: at a sentence end if one is close, else at
    a comma, else at a space. None if the text has no place to cut."""
    for pattern, tolerance in ((_SENTENCE_END, 0.2), (_CLAUSE_END, 0.2), (_SPACE, 1.0)):
        cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
        if cuts:
            best = min(cuts, key=lambda c: abs(c / len(text) - fraction))
            if abs(best / len(text) - fraction) <= tolerance:
                return text[:best].strip(), text[best:].strip()
    return None


def split_long(
    cue: Cue,
    samples: np.ndarray,
    sample_rate: int,
    min_seconds: float,
    max_seconds: float,
    top_db: float,
    min_pause_s: float,
) -> list[Cue] | None:
    """Cut a cue longer than ``max_seconds`` at its longest inner pause (recursively) so every
    part is at most ``max_seconds`` and at least ``min_seconds``. None when no pause allows it."""
    if cue.duration <= max_seconds:
        return [cue]
    a, b = int(cue.start * sample_rate), int(cue.end * sample_rate)
    candidates = []
    for p0, p1 in pauses(samples[a:b], sample_rate, top_db, min_pause_s):
        at = cue.start + (p0 + p1) / 2 / sample_rate
        if at - cue.start >= min_seconds and cue.end - at >= min_seconds:
            candidates.append((p1 - p0, at))
    for _, at in sorted(candidates, reverse=True):  # longest pause first
        texts = split_text(cue.text, (at - cue.start) / cue.duration)
        if texts is None:
            return None
        left = split_long(
            Cue(cue.start, at, texts[0], cue.inputs, split=True),
            samples, sample_rate, min_seconds, max_seconds, top_db, min_pause_s,
        )  # fmt: skip
        right = split_long(
            Cue(at, cue.end, texts[1], cue.inputs, split=True),
            samples, sample_rate, min_seconds, max_seconds, top_db, min_pause_s,
        )  # fmt: skip
        if left and right:
            return left + right
    return None


def padded(cues: list[Cue], padding: float, total: float) -> list[Cue]:
    """Widen each cue by ``padding`` s either side, never past the middle of the gap to a
    neighbour or the recording's ends (subtitle times are often a little tight)."""
    out = []
    for i, cue in enumerate(cues):
        lo = (cues[i - 1].end + cue.start) / 2 if i else 0.0
        hi = (cue.end + cues[i + 1].start) / 2 if i + 1 < len(cues) else total
        start = max(min(cue.start, max(lo, cue.start - padding)), 0.0)
        end = min(max(cue.end, min(hi, cue.end + padding)), total)
        out.append(replace(cue, start=start, end=end))
    return out


def speech_segments(samples_16k: np.ndarray, max_seconds: float) -> list[tuple[float, float]]:
    """Speech (start, end) seconds in 16 kHz audio, by silero-vad (weights ship in its wheel)."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    torch.set_num_threads(1)
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(samples_16k, dtype=np.float32)),
        _silero(load_silero_vad),
        sampling_rate=16000,
        max_speech_duration_s=max_seconds,
        min_silence_duration_ms=300,
        speech_pad_ms=50,
        return_seconds=True,
    )
    return [(float(s["start"]), float(s["end"])) for s in stamps]


_SILERO: list = []


def _silero(loader: Callable):
    if not _SILERO:
        _SILERO.append(loader())
    return _SILERO[0]
