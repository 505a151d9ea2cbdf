"""What never changes between training steps, computed once: each clip's DVAE audio codes.

coqui's GPTTrainer decodes every clip from disk, computes its DVAE mel spectrogram and runs the
frozen DVAE on every step, although a clip's codes are the same numbers for the same base in
every epoch. ``FeatureCache`` computes them once per clip and base (on the GPU when there is
one) and keeps them on disk, keyed by content:

- the clip's bytes (a re-recorded or re-trimmed clip with the same name gets new codes);
- the base's ``dvae.pth`` and ``mel_stats.pth`` and the audio settings (another base, or the
  same base with other stats, gets its own codes; the GPT weights do not matter);
- ``FEATURES_VERSION`` (bumped when the way codes are computed changes).

So a cache built by one experiment serves the next, and a changed clip or base recomputes only
what changed. Files are written atomically: a run cut off mid-fill leaves no half file.

What is *not* cached, on purpose: the conditioning window. coqui draws a random 3–6 s slice of
the clip for every sample; its mel is cheap next to the whole clip's DVAE pass, and cutting the
same samples from the waveform keeps the training draws identical to coqui's (see
``prompt_slice``). Clips are read with ``models.load_audio`` (soundfile: coqui's samples, about
100x faster).

Why codes are computed per clip and not per batch: coqui computes them on the zero-padded batch,
so the last two or three codes of a shorter clip see some padding through the DVAE's
convolutions.
Per-clip codes are what the clip alone encodes to; the losses differ from coqui's only through
those last codes of the shorter clips of a batch (``tests/test_features.py`` states the bound).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voicebook.coqui.limits import SAMPLE_RATE
from voicebook.coqui.models import dvae_mel, load_audio, load_dvae
from voicebook.core.fileio import atomic_path, base_file_digest, file_digest
from voicebook.core.paths import cache_dir

# Bump when the computation of the cached codes changes: older entries are then never read.
FEATURES_VERSION = 1


def prompt_slice(
    clip: torch.Tensor, max_length: int, min_length: int, is_eval: bool
) -> tuple[torch.Tensor, int, list[int]]:
    """coqui's ``get_prompt_slice`` on an already-read clip, with the same random draws.

    The conditioning window: in training a random length in [min, max] samples at a random
    start; in evaluation the middle length from the start (reproducible). Zero-padded to
    ``max_length``. Draws come from Python's ``random``, in coqui's order, so seeded runs draw
    the same windows with or without the cache.
    """
    length = (min_length + max_length) // 2 if is_eval else random.randint(min_length, max_length)
    if clip.shape[-1] - length < 0:
        length = clip.shape[-1] // 2
    start = 0 if is_eval else random.randint(0, clip.shape[-1] - length)
    window = clip[:, start : start + length]
    window = F.pad(window, pad=(0, max_length - window.shape[-1]))
    return window, window.shape[-1], [start, start + length]


class FeatureCache:
    """DVAE codes of clips for one base, on disk under ``<cache>/features/<base key>/``."""

    def __init__(
        self,
        dvae_file: str | os.PathLike,
        mel_stats_file: str | os.PathLike,
        sample_rate: int,
        dvae_sample_rate: int,
        root: str | os.PathLike | None = None,
    ):
        self.sample_rate, self.dvae_sample_rate = sample_rate, dvae_sample_rate
        self.base_key = hashlib.sha256(
            "|".join(
                [
                    base_file_digest(dvae_file),
                    base_file_digest(mel_stats_file),
                    str(sample_rate),
                    str(dvae_sample_rate),
                    str(FEATURES_VERSION),
                ]
            ).encode()
        ).hexdigest()[:24]
        self.folder = Path(root or cache_dir() / "features") / self.base_key
        self._keys: dict[str, str] = {}
        self.computed = 0  # clips whose codes this object computed (the rest were on disk)
        self.unreadable: set[str] = set()

    def key(self, clip: str | os.PathLike) -> str:
        """The content key of a clip (its bytes), remembered per path for this object's life."""
        name = str(clip)
        if name not in self._keys:
            self._keys[name] = file_digest(clip)
        return self._keys[name]

    def path(self, clip: str | os.PathLike) -> Path:
        key = self.key(clip)
        return self.folder / key[:2] / f"{key}.npy"

    def missing(self, clips: Iterable[str | os.PathLike]) -> list[str]:
        return [str(c) for c in clips if not self.path(c).is_file()]

    def fill(self, clips: Iterable[str | os.PathLike], dvae: Any, mel: Any) -> int:
        """Compute and store the codes of every clip not cached yet; returns how many.

        ``dvae`` and ``mel`` are the base's DVAE and its mel front-end (a GPTTrainer's ``dvae``
        and ``torch_mel_spectrogram_dvae``), on whatever device they live: the GPU where
        there is one.
        """
        todo = sorted(set(self.missing(clips)) - self.unreadable)
        for clip in todo:
            try:
                codes = self.compute(clip, dvae, mel)
            except (OSError, ValueError, RuntimeError):
                # coqui's dataset skips a clip it cannot load; so does its cached twin (the
                # missing entry makes the item fail there). Data prep reports such clips.
                self.unreadable.add(clip)
                continue
            target = self.path(clip)
            with atomic_path(target) as partial, open(partial, "wb") as handle:
                np.save(handle, codes)  # atomic: a kill never leaves half an entry
        done = len(todo) - len(self.unreadable.intersection(todo))
        self.computed += done
        return done

    @torch.no_grad()
    def compute(self, clip: str | os.PathLike, dvae: Any, mel: Any) -> np.ndarray:
        """A clip's DVAE codes, exactly as GPTTrainer computes them for a batch of that clip."""
        wav = load_audio(clip, self.sample_rate)
        if self.sample_rate != self.dvae_sample_rate:
            import torchaudio

            wav = torchaudio.functional.resample(wav, self.sample_rate, self.dvae_sample_rate)
        device = next(dvae.parameters()).device
        codes = dvae.get_codebook_indices(mel(wav.unsqueeze(0).to(device)))
        return codes[0].to("cpu", torch.int16).numpy()  # 1024 codes fit int16

    def codes(self, clip: str | os.PathLike) -> torch.Tensor:
        """The cached codes of one clip as a LongTensor ``[n_codes]``."""
        path = self.path(clip)
        if not path.is_file():
            raise KeyError(f"No cached DVAE codes for {clip}: call FeatureCache.fill first.")
        return torch.from_numpy(np.load(path).astype(np.int64))

    def table(self, clips: Iterable[str | os.PathLike]) -> dict[str, torch.Tensor]:
        """Codes of many clips by path, read once (a dataset holds them in memory)."""
        return {str(c): self.codes(c) for c in clips}


def feature_cache_for(config: Any) -> FeatureCache:
    """The cache for a GPTTrainer config's base (its DVAE, mel stats and audio settings)."""
    args, audio = config.model_args, config.audio
    return FeatureCache(
        args.dvae_checkpoint, args.mel_norm_file, audio.sample_rate, audio.dvae_sample_rate
    )


class ClipCoder:
    """A clip's DVAE codes, made exactly as GPTTrainer makes its training targets, read from the
    feature cache the trainer uses (``features.FeatureCache``; computed here the first time)."""

    def __init__(self, base_dir: str | os.PathLike, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.dvae = load_dvae(base_dir, self.device)
        self.mel = dvae_mel(Path(base_dir) / "mel_stats.pth", self.device)
        base = Path(base_dir)
        self.features = FeatureCache(
            base / "dvae.pth", base / "mel_stats.pth", SAMPLE_RATE, SAMPLE_RATE
        )

    def __call__(self, clip: str | os.PathLike) -> tuple[torch.Tensor, int]:
        """(codes on the CPU, shape (n,), number of audio samples of the clip)."""
        self.features.fill([clip], self.dvae, self.mel)
        if str(clip) in self.features.unreadable:
            raise ValueError(
                f"Cannot read audio {clip}: re-run data prep, which checks every clip."
            )
        return self.features.codes(clip), load_audio(clip).shape[-1]
