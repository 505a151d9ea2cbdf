"""What a phase needs from the machine, computed from the base's parameter counts.

Fine-tuning trains the GPT with AdamW (two fp32 moments per weight) and keeps the rest of XTTS
(HiFi-GAN decoder, DVAE, mel front-ends) frozen in fp32. From the counts in the base's
``model.pth`` and ``dvae.pth`` follow the size of every file a phase writes and the memory it
takes; the constants below that are not arithmetic were measured (``tests/test_fullsize.py``
checks the estimates against a full-size run).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

FP32 = 4  # bytes per weight
ADAM_MOMENTS = 2  # AdamW's exp_avg and exp_avg_sq, fp32, per trained weight
# torch, coqui-tts and the dataset in one process, before any model (measured: ~1.1 GB RSS).
RUNTIME_BYTES = 1.2e9
# Activations (and their gradients) of one clip of up to 11.6 s through the XTTS v2 GPT (431 M
# weights), scaled by GPT size for other bases: ~1.2 GB on a GPU, as measured on the CPU too.
XTTS_V2_GPT_PARAMS = 431e6
ACTIVATION_BYTES_PER_CLIP = 1.2e9
LOADER_WORKER_BYTES = 0.5e9  # one DataLoader worker process (a forked copy of the runtime)
# CPU training cost: core-seconds per trained GPT weight per clip of a step (measured: 20-30 s a
# step at batch 2 on 2 cores for the full-size GPT; the tiny base is far below it).
CPU_CORE_SECONDS_PER_PARAM_CLIP = 5.8e-8
FULL_SIZE_GPT_PARAMS = 100e6  # a GPT this large on a CPU gets the loud warning


@dataclass(frozen=True)
class ModelSize:
    """Weights of a base: all of XTTS (``model.pth``), its GPT (what trains), and the DVAE."""

    n_params: int
    n_gpt: int
    n_dvae: int
    n_adapters: int = 0  # a LoRA phase: the weights its adapters (and heads) train; 0: full

    @property
    def n_trained(self) -> int:
        return self.n_adapters or self.n_gpt

    def with_adapters(self, n_adapters: int) -> ModelSize:
        """The same base, trained by LoRA with ``n_adapters`` weights (``adapter_weights``)."""
        return dataclasses.replace(self, n_adapters=n_adapters)

    @property
    def slim_bytes(self) -> int:
        """A slim file (a full phase's best model, every export): the XTTS weights alone."""
        return FP32 * self.n_params

    @property
    def best_bytes(self) -> int:
        """A best model: slim, or a LoRA phase's adapters alone."""
        return FP32 * self.n_adapters if self.n_adapters else self.slim_bytes

    @property
    def checkpoint_bytes(self) -> int:
        """A periodic trainer checkpoint: the trainer's model (XTTS + DVAE) and the optimizer;
        a LoRA phase's holds its adapters and their optimizer state only."""
        if self.n_adapters:
            return FP32 * (1 + ADAM_MOMENTS) * self.n_adapters
        return FP32 * (self.n_params + self.n_dvae) + FP32 * ADAM_MOMENTS * self.n_gpt

    def activation_bytes(self, batch_size: int) -> float:
        return batch_size * ACTIVATION_BYTES_PER_CLIP * self.n_gpt / XTTS_V2_GPT_PARAMS

    def training_bytes(self, batch_size: int) -> float:
        """Device memory of training: weights, the GPT's gradients and AdamW moments, the
        DVAE, and the batch's activations."""
        trained = FP32 * (1 + ADAM_MOMENTS) * self.n_trained  # gradients + moments
        return FP32 * (self.n_params + self.n_dvae) + trained + self.activation_bytes(batch_size)

    def host_bytes(self, batch_size: int, on_gpu: bool, workers: int = 0) -> float:
        """Peak host RAM of a phase: on a CPU everything of training plus, at the start, the
        starting weights loaded beside the model, later the best models' host copies (one
        being written, one waiting: ``BackgroundSaves``); on a GPU the model as built on the
        CPU before it moves, the loaded weights, and the loader workers (the host copies are
        less than the model that moved)."""
        loaded = FP32 * self.n_params  # the checkpoint's state dict, read while the model exists
        if on_gpu:
            return RUNTIME_BYTES + 2 * FP32 * self.n_params + loaded + workers * LOADER_WORKER_BYTES
        return RUNTIME_BYTES + self.training_bytes(batch_size) + max(loaded, 2 * self.best_bytes)

    def disk_bytes(self, keep_checkpoints: int, keep_best: int = 1) -> int:
        """Peak disk of a phase: ``keep_checkpoints`` periodic checkpoints and the next one
        being written before the oldest goes; the ``keep_best`` kept best models and the next
        one being written before the one it pushes out goes; the export."""
        checkpoints = (keep_checkpoints + 1) * self.checkpoint_bytes
        return checkpoints + (keep_best + 1) * self.best_bytes + self.slim_bytes

    def cpu_seconds_per_step(self, batch_size: int, cores: int) -> float:
        return CPU_CORE_SECONDS_PER_PARAM_CLIP * self.n_gpt * batch_size / max(cores, 1)


def _state(path: Path) -> dict:
    import torch

    try:  # mmap: counting a 1.8 GB file's weights reads none of them
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except RuntimeError:  # a file in torch's legacy format cannot be mapped
        state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("model", state) if isinstance(state, dict) else state


@functools.lru_cache(maxsize=16)
def _shapes(file: str, stamp: tuple) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each weight's name (without ``xtts.``) and shape; cached while the file is unchanged
    (``stamp``), so sizing and adapter counts read a base once."""
    return tuple((k.removeprefix("xtts."), tuple(t.shape)) for k, t in _state(Path(file)).items())


def _file_shapes(path: Path) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return _shapes(str(path), (path.stat().st_mtime, path.stat().st_size))


def adapter_weights(base_dir: str | os.PathLike, rank: int, targets, heads=()) -> int:
    """The weights a LoRA phase on ``base_dir`` trains, before any model is built (preflight):
    ``rank`` x (in + out) for every 2-D weight of the GPT's transformer blocks whose module is a
    target (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``), and every weight of the ``heads`` that
    train with them (``gpt.<head>``)."""
    n = 0
    for key, shape in _file_shapes(Path(base_dir) / "model.pth"):
        parts = key.split(".")
        if key.startswith("gpt.gpt.h.") and parts[-2] in targets and parts[-1] == "weight":
            n += rank * sum(shape) if len(shape) == 2 else 0
        elif any(key.startswith(f"gpt.{head}.") for head in heads):
            n += math.prod(shape)
    return n


def model_size(base_dir: str | os.PathLike) -> ModelSize:
    """The weight counts of a base folder (cached while its files are unchanged)."""
    model = _file_shapes(Path(base_dir) / "model.pth")
    n_params = sum(math.prod(s) for k, s in model if not k.startswith("mel_stats"))
    n_gpt = sum(math.prod(s) for k, s in model if k.startswith("gpt."))
    n_dvae = sum(math.prod(s) for _, s in _file_shapes(Path(base_dir) / "dvae.pth"))
    return ModelSize(n_params, n_gpt, n_dvae)


def available_ram() -> int:
    """Host memory a new allocation can get now (free + reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"
