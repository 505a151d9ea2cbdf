"""Measures per take: CER, speaker similarity, Distill-MOS, tempo and the failure flags.

:class:`TakeScorer` holds what is loaded once per evaluation (the speaker encoder with the
speaker's mean embedding, the recogniser, Distill-MOS) and adds the measure columns to a takes
table (``voicebook.measures.takes.synthesize_takes``):

- ``cer``: character error rate of what the recogniser heard;
- ``speaker_similarity``: cosine to the speaker's mean embedding (the held-out clips');
- ``mos``: Distill-MOS (1-5);
- ``sec_per_char`` and ``rate_error`` = |log(sec_per_char / the speaker's own)|: 0 is the
  speaker's tempo, 0.69 twice or half as fast;
- ``runaway``, ``truncated``, ``skipped_or_repeated`` (``voicebook.measures.failures``) and
  ``failure``: any of the three.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voicebook.measures.failures import FLAGS, HeardWord, failure_flags, voiced_after
from voicebook.measures.text import character_error_rate

MEASURE_COLUMNS = ["cer", "speaker_similarity", "mos", "sec_per_char", "rate_error", *FLAGS,
                   "failure", "heard"]  # fmt: skip


def speaker_rate(clips: Iterable[tuple[str | Path, str]]) -> float:
    """The speaker's seconds per character over ``(audio file, transcript)`` pairs (total
    seconds over total characters, so long clips weigh more)."""
    import soundfile as sf

    seconds = chars = 0.0
    for audio, text in clips:
        seconds += sf.info(str(audio)).duration
        chars += len(text)
    return seconds / chars if chars else math.nan


def hear(transcribe: Any, wav: str | Path) -> tuple[str, list[HeardWord]]:
    """What the recogniser heard: its ``transcript`` (text and timed words) when it has one,
    else the text a plain callable returns, as untimed words."""
    if hasattr(transcribe, "transcript"):
        text, words = transcribe.transcript(Path(wav))
        return text, [HeardWord(w.text, w.end) for w in words]
    text = transcribe(Path(wav))
    return text, [HeardWord(w) for w in text.split()]


@dataclass
class TakeScorer:
    """The per-take measures' models, loaded once. Any of them may be None (that measure is
    then NaN); ``rate`` is the speaker's seconds per character (``speaker_rate``)."""

    similarity: Any = None  # voicebook.speaker.SpeakerSimilarity with the speaker's reference
    transcribe: Callable[[Path], str] | Any = None  # a recogniser (voicebook.asr) or callable
    mos: Any = None  # voicebook.measures.quality.DistillMos
    rate: float = math.nan

    def score(self, takes: pd.DataFrame) -> pd.DataFrame:
        """``takes`` with ``MEASURE_COLUMNS`` added (one row per take)."""
        out = takes.copy()
        wavs = out["wav"].tolist()
        nan = [math.nan] * len(out)
        out["speaker_similarity"] = self.similarity.score(wavs) if self.similarity else nan
        out["mos"] = self.mos.score_files(wavs) if self.mos else nan
        out["sec_per_char"] = out["audio_s"] / out["text"].str.len()
        out["rate_error"] = np.abs(np.log(out["sec_per_char"] / self.rate))
        if self.transcribe is None:
            return out.assign(cer=nan, **{f: None for f in FLAGS}, failure=None, heard=None)
        rows = [self._heard(r) for r in out.itertuples()]
        return out.assign(**pd.DataFrame(rows, index=out.index))

    def _heard(self, take: Any) -> dict[str, Any]:
        import soundfile as sf

        text, words = hear(self.transcribe, take.wav)
        samples, rate = sf.read(take.wav, dtype="float32")
        last_end = max((w.end for w in words if w.end is not None), default=None)
        tail = voiced_after(samples, rate, last_end) if last_end is not None else 0.0
        flags = failure_flags(take.text, words, cap_hit=bool(take.cap_hit), voiced_tail_s=tail)
        return {"cer": character_error_rate(take.text, text), **flags.to_dict(),
                "failure": flags.any, "heard": text}  # fmt: skip
