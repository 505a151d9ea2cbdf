"""Takes: every sentence spoken several times by one model, with pinned sampler settings and
one conditioning, so that every candidate's take *k* of sentence *s* pairs with every other's.

XTTS samples its speech, so one take cannot tell a better model from a lucky draw. Each take
has its own seed (``take_seed``): the same for every candidate, so a difference between two
candidates' takes is the models', not the dice's. coqui's ``Xtts.synthesize()`` and
``Xtts.inference()`` have different sampling defaults; :class:`Sampler` passes every setting
explicitly, so no default of either path decides anything.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from voicebook.coqui.limits import AUDIO_TOKENS_PER_CHAR, MIN_AUDIO_TOKENS
from voicebook.coqui.losses import seed_everything
from voicebook.coqui.probes import count_generated_codes, generation_cap

TAKE_COLUMNS = ["sentence_id", "set", "take", "seed", "text", "wav", "audio_s", "synth_s",
                "codes", "cap", "cap_hit"]  # fmt: skip
SEED_STRIDE = 1000  # take k of sentence i is seeded seed + (k - 1) * SEED_STRIDE + i


@dataclass(frozen=True)
class Sampler:
    """Every sampling setting of ``Xtts.inference``, pinned. The defaults are the evaluation's:
    temperature inside the seeds' 0.55-0.75, the rest ``Xtts.inference``'s own."""

    temperature: float = 0.65
    top_p: float = 0.85
    top_k: int = 50
    repetition_penalty: float = 10.0
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1 or self.temperature <= 0 or self.top_k < 0:
            raise ValueError(f"top_p in (0, 1], temperature above 0 and top_k >= 0: {self}.")

    def kwargs(self) -> dict[str, Any]:
        """What ``Xtts.inference`` takes: these five and the ones that must not vary (sampling
        on, one beam, normal speed, the text as one piece)."""
        fixed = {"do_sample": True, "num_beams": 1, "speed": 1.0, "enable_text_splitting": False}
        return asdict(self) | fixed

    def describe(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in asdict(self).items())


def token_cap(text: str, tokens_per_char: float = AUDIO_TOKENS_PER_CHAR) -> int:
    """The most audio tokens the GPT may generate for ``text``."""
    return max(MIN_AUDIO_TOKENS, math.ceil(tokens_per_char * len(text)))


def take_seed(seed: int, sentence_number: int, take: int) -> int:
    """The seed of take ``take`` (from 1) of sentence ``sentence_number`` (from 1)."""
    return seed + (take - 1) * SEED_STRIDE + sentence_number


def wav_name(sentence_id: str, take: int) -> str:
    """``s01.wav`` for the first take (the listening test's sample), ``s01_t2.wav`` after."""
    return f"{sentence_id}.wav" if take == 1 else f"{sentence_id}_t{take}.wav"


def sentence_table(sentences: list[str], stress: list[str] | None = None) -> pd.DataFrame:
    """``sentence_id, set, text``: the test sentences (``s01``...), then the stress set
    (``x01``...)."""
    rows = [(f"s{i:02d}", "test", t) for i, t in enumerate(sentences, start=1)]
    rows += [(f"x{i:02d}", "stress", t) for i, t in enumerate(stress or [], start=1)]
    return pd.DataFrame(rows, columns=["sentence_id", "set", "text"])


@torch.inference_mode()
def synthesize_takes(
    model: Any,
    sentences: pd.DataFrame,
    voice: tuple[torch.Tensor, torch.Tensor],
    out_dir: Path,
    *,
    takes: int = 1,
    seed: int = 1,
    sampler: Sampler | None = None,
    language: str = "hu",
    tokens_per_char: float = AUDIO_TOKENS_PER_CHAR,
) -> pd.DataFrame:
    """Speak each row of ``sentences`` (``sentence_table``) ``takes`` times with ``model`` in
    ``voice`` (gpt_cond_latent, speaker_embedding: computed once, the same for every take);
    write ``<sentence_id>[_t<k>].wav`` into ``out_dir``. Generation is capped at
    ``token_cap(text)`` audio tokens. One row per take (``TAKE_COLUMNS``)."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    rate = model.config.audio.output_sample_rate
    options = (sampler or Sampler()).kwargs()
    latent, speaker = (t.to(model.device) for t in voice)
    rows = []
    with count_generated_codes(model) as generated:
        for number, s in enumerate(sentences.itertuples(), start=1):
            for take in range(1, takes + 1):
                with generation_cap(model, token_cap(s.text, tokens_per_char)) as cap:
                    seed_everything(take_seed(seed, number, take))
                    start = time.perf_counter()
                    out = model.inference(s.text, language, latent, speaker, **options)
                    elapsed = time.perf_counter() - start
                wav = np.asarray(out["wav"], np.float32)
                path = out_dir / wav_name(s.sentence_id, take)
                sf.write(path, wav, rate)
                codes = generated[-1]["codes"]
                rows.append([s.sentence_id, s.set, take, take_seed(seed, number, take), s.text,
                             str(path), len(wav) / rate, elapsed, codes, cap, codes >= cap])  # fmt: skip
    return pd.DataFrame(rows, columns=TAKE_COLUMNS)
