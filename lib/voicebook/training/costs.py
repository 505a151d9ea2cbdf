"""What a phase cost: weights trained, training time, peak memory and disk.

Recorded in the phase's ``status.json`` (``finetune``, ``trained_weights``, ``gpt_weights`` when
the trainer is built; ``train_seconds``, ``peak_memory_mb``, ``memory``, ``disk_mb`` and
``checkpoint_mb`` and ``save_seconds``, what saves cost the training thread, whenever an
attempt ends), so the report can put LoRA beside full fine-tuning
(``voicebook.decision.finetune_compare``). ``train_seconds`` adds up the attempts of a resumed run; the
peak memory is the largest of them (the process's peak RSS on a CPU, torch's peak allocation
on a GPU).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import torch

MB = 1e6


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(peak MB so far, what was measured) on ``device``."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB, "GPU memory allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, "process RSS"


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / MB


class CostClock:
    """Started when an attempt's training starts; ``record`` adds what it cost to the status."""

    def __init__(self, recorder: Any, trainer: Any, finetune: str, device: torch.device):
        self.recorder, self.trainer, self.device = recorder, trainer, torch.device(device)
        self.start = time.monotonic()
        self.saves = trainer.save_seconds
        recorder.save_status(
            finetune=finetune,
            trained_weights=trainer.trained_weights,
            gpt_weights=trainer.gpt_weights,
        )

    def record(self) -> None:
        status, run_dir = self.recorder.status, self.trainer.run_dir
        peak, what = peak_memory(self.device)
        newest = max(
            run_dir.glob("checkpoint_*.pth"), key=lambda p: p.stat().st_mtime, default=None
        )
        self.recorder.save_status(
            train_seconds=status.get("train_seconds", 0.0) + time.monotonic() - self.start,
            peak_memory_mb=max(peak, status.get("peak_memory_mb") or 0.0),
            memory=what,
            disk_mb=folder_mb(run_dir),
            checkpoint_mb=newest.stat().st_size / MB if newest else None,
            save_seconds=status.get("save_seconds", 0.0) + self.trainer.save_seconds - self.saves,
        )
        self.saves = self.trainer.save_seconds
        self.start = time.monotonic()


class Stopwatch:
    """How long each part of an attempt's start took (``startup_seconds`` in the status: plan,
    preflight, trainer, first_eval), to see where start-up goes."""

    def __init__(self) -> None:
        self.last, self.parts = time.perf_counter(), {}

    def lap(self, name: str) -> dict[str, float]:
        now = time.perf_counter()
        self.parts[name] = round(now - self.last, 3)
        self.last = now
        return self.parts
