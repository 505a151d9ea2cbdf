"""Eval Mel CE / Text CE of a checkpoint through coqui's own ``GPTTrainer.eval_step``."""

from __future__ import annotations

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


@torch.no_grad()
def eval_batch_losses(
    base_dir: Path,
    dataset_dir: Path,
    checkpoint: Path | None,
    work_dir: Path,
    *,
    language: str = "hu",
    seed: int = 1,
    batch_size: int = 3,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[list[str], float, float]]:
    """``(clip files, Mel CE, Text CE)`` of each eval batch of one checkpoint, in order.

    Builds the same GPTTrainer the training stages use (cached codes included), loads
    ``checkpoint`` (None = the base) and runs ``eval_step`` over the dataset's eval split on
    ``device``, seeded so that every candidate sees identical batches. Text CE is as the trainer
    logs it (x0.01).
    """
    config = reading_config(
        base_dir, dataset_dir, work_dir, language=language, batch_size=batch_size, seed=seed
    )
    config.model_args.xtts_checkpoint = str(checkpoint or Path(base_dir) / "model.pth")
    seed_everything(seed)
    model = gpt_trainer_model(config).to(device)
    model.eval()
    _, eval_samples = load_samples(config)
    seed_everything(seed)
    loader = model.get_data_loader(config, is_eval=True, samples=eval_samples, verbose=False)
    for batch in loader:
        files = [str(f) for f in batch["filenames"]]
        batch = model.format_batch(batch)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        _, losses = model.eval_step(model.format_batch_on_device(batch), None)
        yield files, float(losses["loss_mel_ce"]), float(losses["loss_text_ce"])


def eval_losses(
    base_dir: Path,
    dataset_dir: Path,
    checkpoint: Path | None,
    work_dir: Path,
    *,
    max_batches: int = 0,
    **batch_options: Any,
) -> dict[str, float]:
    """Mean eval Mel CE and Text CE of one checkpoint over the eval batches
    (``eval_batch_losses``, which takes ``batch_options``: language, seed, batch_size,
    device); ``max_batches`` > 0 stops early (cheap demos)."""
    batches = eval_batch_losses(base_dir, dataset_dir, checkpoint, work_dir, **batch_options)
    mel, text = [], []
    for _, batch_mel, batch_text in islice(batches, max_batches or None):
        mel.append(batch_mel)
        text.append(batch_text)
    if not mel:
        raise ValueError(
            f"No usable eval clip in {Path(dataset_dir) / EVAL_META}: every clip was skipped "
            "(too long, too short or untokenisable). Re-run data prep with a larger eval split."
        )
    return {"mel_ce": float(np.mean(mel)), "text_ce": float(np.mean(text)), "n_batches": len(mel)}
