"""Where a stage runs: the ``device`` parameter (auto | cpu | cuda), threads, loader workers,
mixed precision.

Every stage that runs a model takes ``device``: ``"auto"`` is the GPU when torch sees one, else
the CPU. Asking for ``"cuda"`` where there is none is an error that says so, never a silent
fall-back to a CPU run that would take hours.
"""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_LOADER_WORKERS = 8  # coqui's XTTS v2 recipe; more buys nothing at batch sizes that fit


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``device`` as a torch device; ``"auto"``: the GPU when there is one, else the CPU."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: use one of {', '.join(DEVICES)}.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} but torch sees no GPU (torch {torch.__version__}, CUDA "
            f"{torch.version.cuda or 'none'}): check nvidia-smi and CUDA_VISIBLE_DEVICES, or "
            "pass device='auto' or 'cpu'."
        )
    return torch.device(name)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_all_cores() -> int:
    """Set torch's CPU threads back to the cores after coqui-tts's import set them to 1.

    coqui's ``TTS/tts/layers/xtts/trainer/dataset.py`` calls ``torch.set_num_threads(1)`` at
    import, so a CPU run would use one core. ``OMP_NUM_THREADS``, when set, wins (on a machine
    shared with others, ``OMP_NUM_THREADS=1`` keeps a run to its share). Returns the count.
    """
    threads = thread_count()
    torch.set_num_threads(threads)
    return threads


def thread_count() -> int:
    """CPU threads a stage should use: ``OMP_NUM_THREADS`` when set, else the cores."""
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(wanted) if wanted.isdigit() and int(wanted) > 0 else cpu_cores()


def loader_workers(device: torch.device | str) -> int:
    """DataLoader worker processes: on a GPU, decoding audio on the main thread starves it
    (``loader_time`` in the tens of seconds), so up to 8 workers, one core left for the main
    process; on a CPU, 0: workers would compete with the training step for the same cores."""
    if torch.device(device).type != "cuda":
        return 0
    return max(1, min(MAX_LOADER_WORKERS, cpu_cores() - 1))


def check_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` if it can run on ``device``; a clear error otherwise.

    bf16 and fp16 are the trainer's mixed precision (autocast, plus a gradient scaler for fp16):
    a GPU feature. On a CPU only fp32 trains.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision != "fp32" and torch.device(device).type != "cuda":
        raise ValueError(
            f"precision={precision!r} needs a GPU, and this stage runs on {device}: use "
            "precision='fp32' on a CPU."
        )
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16': this GPU has no bfloat16; use 'fp16' or 'fp32'.")
    return precision


def describe(device: torch.device | str) -> str:
    """One line naming the device: the GPU's name and memory, or the CPU cores and threads."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"GPU {props.name} ({props.total_memory / 1e9:.0f} GB)"
    return f"CPU ({cpu_cores()} cores, {torch.get_num_threads()} torch threads)"


def gpu_memory_free(device: torch.device | str) -> tuple[int, float]:
    """Bytes this process may still allocate on the GPU ``device``, and its memory fraction:
    the driver's free memory, capped by ``torch.cuda.set_per_process_memory_fraction`` (which
    the driver knows nothing of: a preflight reading the driver alone passes, and training then
    runs out of memory at its first batch) less what torch's allocator already holds."""
    device = torch.device(device)
    free, total = torch.cuda.mem_get_info(device)
    fraction = torch.cuda.get_per_process_memory_fraction(device)
    allowed = int(fraction * total) - torch.cuda.memory_reserved(device)
    return max(0, min(free, allowed)), fraction
