"""A perceptual quality score per take: Distill-MOS (MIT; its weights ship in the wheel, so it
runs offline). It predicts a mean opinion score from 1 to 5 from 16 kHz mono audio.

Its fine grades are for real speech: synthetic or robotic speech lies outside its training data
(espeak speech scored 2.2-3.2 and, at mild noise, sometimes higher than clean). Heavy faults (a
take of noise, a runaway buzz) it scores low. Load it once per evaluation (``DistillMos()``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16000


class DistillMos:
    """Distill-MOS loaded once; ``score_waves`` / ``score_files`` give one MOS per clip."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        import distillmos

        with contextlib.redirect_stdout(io.StringIO()):  # it prints where its weights are
            self.model = distillmos.ConvTransformerSQAModel()
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    @torch.no_grad()
    def score_waves(self, waves: Iterable[np.ndarray]) -> np.ndarray:
        """One MOS per 16 kHz mono waveform (each scored alone: lengths differ)."""
        scores = []
        for wave in waves:
            x = torch.as_tensor(np.asarray(wave, np.float32)).reshape(1, -1).to(self.device)
            scores.append(float(self.model(x).reshape(-1)[0]))
        return np.asarray(scores, float)

    def score_files(self, files: Iterable[str | Path]) -> np.ndarray:
        """One MOS per audio file (resampled to 16 kHz mono)."""
        import librosa

        return self.score_waves(librosa.load(str(f), sr=SAMPLE_RATE)[0] for f in files)
