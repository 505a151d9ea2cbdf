"""Does the voice search find a good voice when one exists? Start it from a corrupted one.

The reference clips' latent plus Gaussian noise (``noise_scale`` times the latent's RMS, per
element, seeded) raises validation Mel CE by a known gap over the reference latent; the latent
half then searches from the corrupted latent, exactly as the stage does (``latent_half``), and
``closed`` is the share of that gap it closed (1.0: back to the reference; above 1: better). On
the demo the uncorrupted search gains almost nothing (the tiny base's reference voice is already
near what its GPT can use), so this is the check that the search can move at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from voicebook.voice_search.search import SearchConfig, Setup, latent_half

NOISE_SCALE = 1.0  # noise per element, in units of the reference latent's RMS


@dataclass
class Recovery:
    method: str
    reference_mel_ce: float  # validation Mel CE of the reference latent
    corrupted_mel_ce: float  # ... of the corrupted start
    recovered_mel_ce: float  # ... of what the search kept
    closed: float  # (corrupted - recovered) / (corrupted - reference)
    generations: int
    seconds_per_generation: float


def corrupt(latent: torch.Tensor, noise_scale: float, seed: int) -> torch.Tensor:
    """``latent`` plus seeded Gaussian noise of ``noise_scale`` x its RMS per element."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latent.shape, generator=generator)
    return latent + noise_scale * latent.pow(2).mean().sqrt() * noise


def recover(params: SearchConfig, setup: Setup, noise_scale: float = NOISE_SCALE) -> Recovery:
    """The latent half of ``params.method`` started from the corrupted reference latent."""
    from voicebook.coqui.latents import LatentObjective  # heavy (coqui-tts)

    reference = setup.start[0]
    corrupted = corrupt(reference, noise_scale, params.seed)
    start = (corrupted, setup.start[1])
    half = latent_half(params, dataclasses.replace(setup, start=start))
    with torch.no_grad():
        measured = LatentObjective(setup.model.gpt).mel_ce(reference, setup.clips["eval"])
    o = half.outcome
    gap = o.start_heldout - float(measured[0])
    seconds = o.curves["seconds"].iloc[1:]
    return Recovery(
        method=params.method,
        reference_mel_ce=float(measured[0]),
        corrupted_mel_ce=o.start_heldout,
        recovered_mel_ce=o.best_heldout,
        closed=(o.start_heldout - o.best_heldout) / gap if gap > 0 else float("nan"),
        generations=o.generations_done,
        seconds_per_generation=float(seconds.mean()) if len(seconds) else float("nan"),
    )
