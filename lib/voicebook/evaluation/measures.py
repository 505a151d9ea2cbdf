"""What a candidate is measured with, shared by the evaluation's scoring and its depth checks:
the held-out clips, the synthesised test sentences (under a per-sentence audio-token cap), the
real-time factor and the character error rate (a local speech recogniser hears the synthesis).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from voicebook.coqui.limits import AUDIO_TOKENS_PER_CHAR
from voicebook.measures import takes

BASE = "base"
SHORT_SENTENCE_WORDS = 3


def is_short(sentence: str) -> bool:
    return len(sentence.split()) <= SHORT_SENTENCE_WORDS


def synthesize(
    model: Any,
    sentences: list[str],
    references: list[Path],
    out_dir: Path,
    *,
    language: str = "hu",
    seed: int = 1,
    tokens_per_char: float = AUDIO_TOKENS_PER_CHAR,
    voice: tuple[torch.Tensor, torch.Tensor] | None = None,
    sampling: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Speak every sentence once with ``model`` in the voice of ``references`` (or in ``voice``,
    a (gpt_cond_latent, speaker_embedding) pair); write ``sNN.wav``.

    One take each of ``voicebook.measures.takes.synthesize_takes`` (capped at
    ``token_cap(sentence)`` audio tokens; ``sampling`` overrides the evaluation's pinned
    ``Sampler``). Returns one row per sentence: sentence_id, text, wav, audio_s, synth_s
    (inference time, conditioning excluded), codes (audio tokens generated before the stop
    token) and cap.
    """
    if voice is None:
        voice = model.get_conditioning_latents(audio_path=[str(p) for p in references])
    table = takes.sentence_table(list(sentences))
    found = takes.synthesize_takes(
        model, table, voice, out_dir, takes=1, seed=seed, language=language,
        sampler=takes.Sampler(**(sampling or {})), tokens_per_char=tokens_per_char,
    )  # fmt: skip
    return found[["sentence_id", "text", "wav", "audio_s", "synth_s", "codes", "cap"]]


def real_time_factor(samples: pd.DataFrame) -> float:
    """Synthesis seconds per second of audio over all sentences (< 1 is faster than real time)."""
    audio = samples["audio_s"].sum()
    return float(samples["synth_s"].sum() / audio) if audio > 0 else math.nan


def load_asr(asr_model: str, language: str, device: str = "auto") -> Callable[[Path], str] | None:
    """The transcriber for CER (``voicebook.asr``, the one data prep uses) on ``device``, or
    None when ``asr_model`` is ``""``."""
    from voicebook.asr import load_recognizer

    return load_recognizer(asr_model, language, device)
