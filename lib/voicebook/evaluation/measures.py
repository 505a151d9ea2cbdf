"""What a candidate is measured with, shared by the evaluation's scoring and its depth checks:
the held-out clips, the synthesised test sentences (under a per-sentence audio-token cap), the
real-time factor and the character error rate (a local speech recogniser hears the synthesis).
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from voicebook.coqui.limits import AUDIO_TOKENS_PER_CHAR, MIN_AUDIO_TOKENS
from voicebook.coqui.losses import seed_everything
from voicebook.coqui.probes import count_generated_codes, generation_cap

BASE = "base"
SHORT_SENTENCE_WORDS = 3


def is_short(sentence: str) -> bool:
    return len(sentence.split()) <= SHORT_SENTENCE_WORDS


def token_cap(text: str, tokens_per_char: float = AUDIO_TOKENS_PER_CHAR) -> int:
    """The most audio tokens the GPT may generate for ``text``."""
    return max(MIN_AUDIO_TOKENS, math.ceil(tokens_per_char * len(text)))


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
    """Speak every sentence with ``model`` in the voice of ``references`` (or in ``voice``,
    a (gpt_cond_latent, speaker_embedding) pair); write ``sNN.wav``.

    Generation is capped at ``token_cap(sentence)`` audio tokens; ``sampling`` goes to
    ``Xtts.inference`` (temperature, repetition_penalty, top_p, top_k). Returns one row per
    sentence: sentence_id, text, wav, audio_s, synth_s (inference time, conditioning excluded),
    codes (audio tokens generated before the stop token) and cap.
    """
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    rate = model.config.audio.output_sample_rate
    if voice is None:
        voice = model.get_conditioning_latents(audio_path=[str(p) for p in references])
    latent, speaker = (t.to(model.device) for t in voice)
    rows = []
    with count_generated_codes(model) as generated:
        for i, text in enumerate(sentences, start=1):
            with generation_cap(model, token_cap(text, tokens_per_char)) as cap:
                seed_everything(seed + i)
                start = time.perf_counter()
                out = model.inference(text, language, latent, speaker, **(sampling or {}))
                elapsed = time.perf_counter() - start
            wav = np.asarray(out["wav"], np.float32)
            path = out_dir / f"s{i:02d}.wav"
            sf.write(path, wav, rate)
            rows.append({"sentence_id": f"s{i:02d}", "text": text, "wav": str(path),
                         "audio_s": len(wav) / rate, "synth_s": elapsed,
                         "codes": generated[-1]["codes"], "cap": cap})  # fmt: skip
    return pd.DataFrame(rows)


def real_time_factor(samples: pd.DataFrame) -> float:
    """Synthesis seconds per second of audio over all sentences (< 1 is faster than real time)."""
    audio = samples["audio_s"].sum()
    return float(samples["synth_s"].sum() / audio) if audio > 0 else math.nan


def normalise_for_cer(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character edit distance over the reference length, after lower-casing and dropping
    punctuation (so 1.0 can be exceeded by a long wrong hypothesis)."""
    from torchaudio.functional import edit_distance

    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    if not ref:
        raise ValueError("Cannot compute a CER against an empty reference text.")
    return edit_distance(list(ref), list(hyp)) / len(ref)


def load_asr(asr_model: str, language: str, device: str = "auto") -> Callable[[Path], str] | None:
    """The transcriber for CER (``voicebook.asr``, the one data prep uses) on ``device``, or
    None when ``asr_model`` is ``""``."""
    from voicebook.asr import load_recognizer

    return load_recognizer(asr_model, language, device)
