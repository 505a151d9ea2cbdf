"""Probes into the XTTS model for the evaluation's depth checks, with coqui-tts's own code.

- ``clip_losses``: each held-out clip's teacher-forced Mel CE and Text CE, through the same
  GPTTrainer data path as the evaluation's eval losses, one clip per batch, so that the losses
  can be split by source (a speaking style forgotten shows there, not in the mean).
- ``dvae_clip_errors``: the DVAE (XTTS's audio tokenizer) encodes a clip's mel to codes and
  decodes it again; how far the decoded mel is from the input (squared and absolute error sums,
  peak), per clip.
- ``count_generated_codes``: how many audio tokens the GPT generated per ``inference`` call and
  whether it stopped by itself, to count the sentences that ran into the evaluation's token cap.
- ``SAMPLING_DEFAULTS``: coqui's own sampling defaults of ``Xtts.inference``.
- ``generation_cap``: at most this many audio tokens inside a block (the evaluation's per-sentence
  cap), the model's own cap restored after.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from voicebook.coqui.losses import CheckpointLosses
from voicebook.coqui.models import dvae_mel, load_audio, load_dvae

SAMPLING_KEYS = ("temperature", "repetition_penalty", "top_p", "top_k", "length_penalty")


def sampling_defaults() -> dict[str, float]:
    """``Xtts.inference``'s own defaults of the sampling settings the evaluation exposes."""
    from TTS.tts.models.xtts import Xtts

    params = inspect.signature(Xtts.inference).parameters
    return {key: params[key].default for key in SAMPLING_KEYS}


# --- per-clip teacher-forced losses --------------------------------------------------------


def clip_losses(
    losses: CheckpointLosses, dataset_dir: str | os.PathLike, *, max_clips: int = 0
) -> list[dict[str, Any]]:
    """``[{audio_file, mel_ce, text_ce}]``, one per held-out clip (``max_clips`` > 0: the first
    ones only), from coqui's ``GPTTrainer.eval_step`` on one-clip batches of the eval loader of
    the checkpoint's ``losses`` model (the evaluation's data path, cached codes included; Text
    CE as the trainer logs it, x0.01)."""
    return [
        {"audio_file": audio_file, "mel_ce": mel_ce, "text_ce": text_ce}
        for (audio_file,), mel_ce, text_ce in islice(
            losses.batches(dataset_dir, batch_size=1), max_clips or None
        )
    ]


# --- the DVAE's reconstruction -------------------------------------------------------------


@torch.no_grad()
def dvae_clip_errors(
    base_dir: str | os.PathLike, clips: list[str | os.PathLike], device: str | torch.device = "cpu"
) -> list[dict]:
    """Per clip: the DVAE mel (as GPTTrainer makes it) encoded to codes and decoded again;
    ``elements`` (mel bins x frames compared), ``sq_error`` and ``abs_error`` (sums over
    them) and ``peak`` (the largest absolute error), in the DVAE's normalised log-mel units."""
    dvae = load_dvae(base_dir, device)
    mel = dvae_mel(Path(base_dir) / "mel_stats.pth", device)
    rows = []
    for clip in clips:
        spec = mel(load_audio(clip).to(device))
        decoded, _ = dvae.decode(dvae.get_codebook_indices(spec))
        frames = min(spec.shape[-1], decoded.shape[-1])  # the decoder's frames: codes x 4
        diff = (decoded[..., :frames] - spec[..., :frames]).abs()
        rows.append(
            {
                "audio_file": str(clip),
                "elements": int(diff.numel()),
                "sq_error": float(diff.square().sum()),
                "abs_error": float(diff.sum()),
                "peak": float(diff.max()),
            }
        )
    return rows


# --- generated audio tokens ----------------------------------------------------------------


@contextmanager
def count_generated_codes(model: Any) -> Iterator[list[dict[str, Any]]]:
    """Within the block, every ``model.gpt.generate`` call appends ``{codes, stopped}``: the
    audio tokens generated before the stop token (all of them when it never came) and whether
    it came. The GPT's own ``generate`` is back in place afterwards."""
    gpt = model.gpt
    original = gpt.generate
    had_own = "generate" in vars(gpt)
    calls: list[dict[str, Any]] = []

    def generate(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        codes = out[0] if isinstance(out, tuple) else out  # (sequences, output) on request
        calls.append(generated_codes(codes[0], gpt.stop_audio_token))
        return out

    gpt.generate = generate
    try:
        yield calls
    finally:
        if had_own:
            gpt.generate = original
        else:
            del gpt.generate


def generated_codes(sequence: torch.Tensor, stop_token: int) -> dict[str, Any]:
    """``{codes, stopped}`` of one generated sequence (the stop token and what follows it do
    not count)."""
    stops = (sequence == stop_token).nonzero()
    if len(stops):
        return {"codes": int(stops[0, 0]), "stopped": True}
    return {"codes": int(sequence.shape[-1]), "stopped": False}


@contextmanager
def generation_cap(model: Any, cap: int) -> Iterator[int]:
    """Inside the block XTTS's GPT generates at most ``min(cap, its own cap)`` audio tokens
    (``gpt.max_gen_mel_tokens``); its own cap comes back after. Yields the cap in force."""
    own = model.gpt.max_gen_mel_tokens
    model.gpt.max_gen_mel_tokens = min(own, cap)
    try:
        yield model.gpt.max_gen_mel_tokens
    finally:
        model.gpt.max_gen_mel_tokens = own
