"""Eval Mel CE / Text CE of a checkpoint through coqui's own ``GPTTrainer.eval_step``."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voicebook.coqui.config import gpt_trainer_model, load_samples, reading_config
from voicebook.core.paths import EVAL_META


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CheckpointLosses:
    """One checkpoint's GPTTrainer (the training stages' own, cached codes included), built on
    the first pass and kept for every eval-loss pass over that checkpoint: the eval split's
    batches, its one-clip batches, another dataset's. Building it (a whole Xtts, its DVAE) costs
    more than a pass, and the evaluation makes three passes per checkpoint. The model is built
    after ``seed_everything(seed)`` and every pass re-seeds before its loader, as a freshly built
    model's pass did, so every candidate sees identical batches and sharing changes no number.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None,
        work_dir: str | os.PathLike,
        *,
        language: str = "hu",
        seed: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        self.base_dir, self.checkpoint, self.work_dir = Path(base_dir), checkpoint, Path(work_dir)
        self.language, self.seed, self.device = language, seed, device
        self.model: Any = None

    @torch.no_grad()
    def batches(
        self, dataset_dir: str | os.PathLike, batch_size: int = 3
    ) -> Iterator[tuple[list[str], float, float]]:
        """``(clip files, Mel CE, Text CE)`` of each batch of ``dataset_dir``'s eval split, in
        order, through ``eval_step`` on ``device`` (Text CE as the trainer logs it, x0.01)."""
        config = reading_config(
            self.base_dir, dataset_dir, self.work_dir,
            language=self.language, batch_size=batch_size, seed=self.seed,
        )  # fmt: skip
        config.model_args.xtts_checkpoint = str(self.checkpoint or self.base_dir / "model.pth")
        if self.model is None:  # the model reads only the base's settings, not the dataset's
            seed_everything(self.seed)
            self.model = gpt_trainer_model(config).to(self.device)
            self.model.eval()
        _, eval_samples = load_samples(config)
        seed_everything(self.seed)
        model = self.model
        loader = model.get_data_loader(config, is_eval=True, samples=eval_samples, verbose=False)
        for batch in loader:
            files = [str(f) for f in batch["filenames"]]
            batch = model.format_batch(batch)
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            _, losses = model.eval_step(model.format_batch_on_device(batch), None)
            yield files, float(losses["loss_mel_ce"]), float(losses["loss_text_ce"])

    def means(
        self, dataset_dir: str | os.PathLike, batch_size: int = 3, max_batches: int = 0
    ) -> dict[str, float]:
        """Mean Mel CE and Text CE over the eval batches (``max_batches`` > 0: the first ones
        only, for cheap demos) and how many batches."""
        mel, text = [], []
        for _, batch_mel, batch_text in islice(self.batches(dataset_dir, batch_size),
                                               max_batches or None):  # fmt: skip
            mel.append(batch_mel)
            text.append(batch_text)
        if not mel:
            raise ValueError(
                f"No usable eval clip in {Path(dataset_dir) / EVAL_META}: every clip was "
                "skipped (too long, too short or untokenisable). Re-run data prep with a larger "
                "eval split."
            )
        return {"mel_ce": float(np.mean(mel)), "text_ce": float(np.mean(text)),
                "n_batches": len(mel)}  # fmt: skip


def eval_losses(
    base_dir: Path,
    dataset_dir: Path,
    checkpoint: Path | None,
    work_dir: Path,
    *,
    max_batches: int = 0,
    batch_size: int = 3,
    **model_options: Any,
) -> dict[str, float]:
    """Mean eval Mel CE and Text CE of one checkpoint over the eval batches, on a GPTTrainer
    built for this call (``CheckpointLosses``, which takes ``model_options``: language, seed,
    device); ``max_batches`` > 0 stops early (cheap demos)."""
    losses = CheckpointLosses(base_dir, checkpoint, work_dir, **model_options)
    return losses.means(dataset_dir, batch_size, max_batches)
