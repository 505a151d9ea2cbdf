"""Health guards of a fine-tuning phase: checks before training and watchers during it.

Before training, ``preflight`` checks what has cost whole runs in practice (missing base files,
a vocabulary that does not fit the model, an empty dataset, texts the tokenizer cannot encode,
clips XTTS skips, too little disk, host RAM or GPU memory for the model, as
``voicebook.training.resources`` computes them) and raises one ``PreflightError`` listing every problem
with its fix. It states the device, and warns loudly when a full-size model would train on a
CPU.

During training, ``HealthMonitor`` turns each train step and each evaluation into events
``{step, kind, severity, message}``: a NaN/inf loss or a gradient that stays zero stops the run
(severity ``stop``), Text CE at or above 0.04 (``core.thresholds``) is an ``alarm``, eval loss rising while train loss falls
is ``overfitting``, a learning rate strictly under the floor is a ``warning``, and no eval Mel CE
improvement for ``patience_steps`` ends the run early (``info``: a normal, planned stop).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voicebook.coqui.limits import MAX_SECONDS, MAX_TEXT_TOKENS, MIN_SECONDS
from voicebook.coqui.lora import HEADS
from voicebook.core.paths import EVAL_META, TRAIN_META
from voicebook.core.thresholds import TEXT_CE_ALARM, text_ce_alarming
from voicebook.training.resources import (
    FULL_SIZE_GPT_PARAMS,
    ModelSize,
    adapter_weights,
    available_ram,
    gb,
    model_size,
)

OVERFIT_MIN_RISE = 0.01  # eval Mel CE must rise by more than this to count (not eval noise)
ZERO_GRAD_STEPS = 5  # this many optimizer steps in a row with a zero gradient norm stop the run
# A learning rate strictly below this is flagged. Strictly: 1e-6 itself is the documented good
# phase-2 lr (README: `-p lr 1e-6`), while the symptom seen in practice was a run at 1e-7.
LR_FLOOR = 1e-6


class PreflightError(RuntimeError):
    """Training cannot start; the message lists every problem found and how to fix it."""


class TrainingStopped(Exception):
    """Raised inside the trainer to end a run cleanly; carries the event that stopped it."""

    def __init__(self, event: HealthEvent):
        super().__init__(event.message)
        self.event = event


@dataclass
class HealthEvent:
    step: int
    kind: str
    severity: str  # info | warning | alarm | stop
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- before training ------------------------------------------------------------------------


def check_texts(
    samples: list[dict], tokenizer: Any, max_tokens: int = MAX_TEXT_TOKENS
) -> list[str]:
    """Problems with transcripts, judged by the data-prep stage's checker (unknown tokens, which
    XTTSDataset asserts on, too many tokens or characters, empty text)."""
    from voicebook.dataprep.text import TextChecker

    checkers: dict[str, TextChecker] = {}
    problems = []
    for sample in samples:
        language = sample["language"]
        checker = checkers.setdefault(language, TextChecker(tokenizer, language, max_tokens))
        reason = checker.problem(str(sample["text"]).strip())
        if reason:
            problems.append(f"{Path(sample['audio_file']).name}: {reason}.")
    return problems


def check_clips(samples: list[dict]) -> list[str]:
    """Problems with audio: missing/unreadable files, clips XTTSDataset would silently skip."""
    import soundfile

    problems = []
    for sample in samples:
        path = Path(sample["audio_file"])
        try:
            info = soundfile.info(str(path))
        except Exception as exc:  # noqa: BLE001 - missing, truncated or not audio
            problems.append(f"{path}: cannot read it ({exc}); re-run data prep or remove the row.")
            continue
        seconds = info.frames / info.samplerate
        if seconds < MIN_SECONDS:
            problems.append(
                f"{path}: {seconds:.2f} s is shorter than {MIN_SECONDS} s; drop or merge it."
            )
        elif seconds > MAX_SECONDS:
            problems.append(
                f"{path}: {seconds:.1f} s is longer than XTTS's {MAX_SECONDS:.1f} s; split it "
                "in data prep."
            )
    return problems


def check_metadata(dataset_dir: Path) -> None:
    """Both metadata tables have at least one clip (coqui's reader crashes on an empty one)."""
    empty = []
    for name in (TRAIN_META, EVAL_META):
        lines = (dataset_dir / name).read_text(encoding="utf-8").splitlines()
        if not [line for line in lines[1:] if line.strip()]:
            empty.append(f"{dataset_dir / name} has no clips")
    if empty:
        raise PreflightError(
            f"Cannot start training: {'; '.join(empty)}. Run 00_data_prep (and read its "
            "rejected.csv for why clips were dropped)."
        )


def check_vocab(base_dir: Path) -> list[str]:
    """Every token id of ``vocab.json`` fits the GPT's text embedding (``gpt_number_text_tokens``
    in ``config.json``): a larger id is an index error deep inside the first step."""
    vocab = json.loads((base_dir / "vocab.json").read_text(encoding="utf-8"))
    ids = list(vocab.get("model", {}).get("vocab", {}).values())
    ids += [t["id"] for t in vocab.get("added_tokens", [])]
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    n_tokens = config.get("model_args", {}).get("gpt_number_text_tokens")
    if not ids or n_tokens is None or max(ids) < n_tokens:
        return []
    return [
        (
            f"{base_dir / 'vocab.json'} has token ids up to {max(ids)}, but the model has "
            f"gpt_number_text_tokens={n_tokens} ({base_dir / 'config.json'}): the vocabulary does "
            "not belong to this model. Use the vocab.json the model was trained with, or a base "
            f"whose gpt_number_text_tokens is at least {max(ids) + 1}."
        )
    ]


def check_disk(
    size: ModelSize, run_dir: Path, keep_checkpoints: int, keep_best: int = 1
) -> list[str]:
    """Room for the kept checkpoints, best models and the export (``ModelSize.disk_bytes``)."""
    need = size.disk_bytes(keep_checkpoints, keep_best)
    run_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free >= need:
        return []
    return [
        (
            f"{run_dir}: {gb(free)} free, the run needs about {gb(need)} ({keep_checkpoints + 1} "
            f"checkpoints of {gb(size.checkpoint_bytes)} with optimizer state, best models of "
            f"{gb(size.best_bytes)}, an export of {gb(size.slim_bytes)}); free space or lower "
            "keep_checkpoints or keep_best."
        )
    ]


def check_memory(size: ModelSize, batch_size: int, device: Any, workers: int) -> list[str]:
    """Host RAM for the run and, on a GPU, free device memory for training."""
    import torch

    problems = []
    on_gpu = torch.device(device).type == "cuda"
    need, free = size.host_bytes(batch_size, on_gpu, workers), available_ram()
    if free < need:
        problems.append(
            f"RAM: {gb(free)} available, batch_size {batch_size} on the {'GPU' if on_gpu else 'CPU'}"
            f" needs about {gb(need)}; close other programs, lower batch_size (raise grad_accum "
            "to keep the effective batch), or use a larger machine."
        )
    if on_gpu:
        from voicebook.core.device import gpu_memory_free

        (free, fraction), need = gpu_memory_free(device), size.training_bytes(batch_size)
        capped = f" to this process (memory fraction {fraction:g})" if fraction < 1 else ""
        if free < need:
            problems.append(
                f"GPU: {gb(free)} free{capped}, batch_size {batch_size} needs about {gb(need)};"
                " lower batch_size (and raise grad_accum to keep the effective batch)."
            )
    return problems


def cpu_warning(size: ModelSize, batch_size: int, device: Any) -> list[HealthEvent]:
    """A loud warning when a full-size GPT would train on a CPU, with the time it will take."""
    import torch

    from voicebook.core.device import cpu_cores

    if torch.device(device).type == "cuda" or size.n_gpt < FULL_SIZE_GPT_PARAMS:
        return []
    per_step = size.cpu_seconds_per_step(batch_size, torch.get_num_threads() or cpu_cores())
    message = (
        f"FULL-SIZE MODEL ON THE CPU: a {size.n_gpt / 1e6:.0f} M-weight GPT at batch_size "
        f"{batch_size} takes about {per_step:.0f} s per step here ({torch.get_num_threads()} "
        f"threads): 1000 steps = {per_step * 1000 / 3600:.1f} h. Run it on a GPU host "
        "(device='auto' finds the GPU); on a CPU keep max_steps small."
    )
    return [HealthEvent(0, "full_size_on_cpu", "warning", message)]


def preflight(
    base_dir: Path,
    train_samples: list[dict],
    eval_samples: list[dict],
    dataset_dir: Path,
    run_dir: Path,
    keep_checkpoints: int,
    batch_size: int,
    device: Any = "cpu",
    workers: int = 0,
    lora: Any = None,
    keep_best: int = 1,
) -> list[HealthEvent]:
    """Every check before training; raises ``PreflightError`` listing all problems found.
    ``lora`` (a ``LoraSpec``): disk and memory are sized for its adapters, not the whole GPT;
    the disk holds ``keep_best`` best models.

    Returns the events to record: what was checked (device, disk and RAM needs) and, for a
    full-size model on a CPU, the loud warning.
    """
    from voicebook.coqui.base import validate_base_dir
    from voicebook.coqui.models import load_tokenizer
    from voicebook.core.device import describe

    validate_base_dir(base_dir)  # raises with the missing files and the fix
    problems: list[str] = []
    for name, samples in ((TRAIN_META, train_samples), (EVAL_META, eval_samples)):
        if not samples:
            problems.append(
                f"{dataset_dir / name} has no clips; run 00_data_prep (or check its rejected.csv)."
            )
    problems += check_vocab(base_dir)
    samples = train_samples + eval_samples
    if not problems:  # a vocab that does not fit the model makes every text check meaningless
        problems += check_texts(samples, load_tokenizer(base_dir))
    problems += check_clips(samples)
    size = model_size(base_dir)
    if lora is not None:
        heads = HEADS if lora.train_heads else ()
        size = size.with_adapters(adapter_weights(base_dir, lora.rank, lora.targets, heads))
    problems += check_disk(size, run_dir, keep_checkpoints, keep_best)
    problems += check_memory(size, batch_size, device, workers)
    if problems:
        raise PreflightError(
            f"Cannot start training ({len(problems)} problem(s)):\n- " + "\n- ".join(problems)
        )
    import torch

    on_gpu = torch.device(device).type == "cuda"
    passed = (
        f"preflight passed: {len(train_samples)} train and {len(eval_samples)} eval clips; "
        f"device {describe(device)}; {size.n_params / 1e6:.0f} M weights in the model ("
        f"{size.n_trained / 1e6:.3g} M trained); disk needs {gb(size.disk_bytes(keep_checkpoints, keep_best))} of "
        f"{gb(shutil.disk_usage(run_dir).free)} free; RAM needs "
        f"{gb(size.host_bytes(batch_size, on_gpu, workers))} of {gb(available_ram())} available"
    )
    return [HealthEvent(0, "preflight", "info", passed), *cpu_warning(size, batch_size, device)]


# --- during training ------------------------------------------------------------------------


def is_finite(value: Any) -> bool:
    return value is None or math.isfinite(float(value))


class HealthMonitor:
    """Watches train rows and eval rows; returns the new events (``stop`` ones end the run)."""

    def __init__(self, patience_steps: int, lr_floor: float, best_eval: tuple[int, float] | None):
        self.patience_steps = patience_steps
        self.lr_floor = lr_floor
        self.zero_grad_run = 0
        self.lr_flagged = False
        self.text_alarm_on = False
        self.overfit_on = False
        self.best_step, self.best_mel = best_eval or (0, math.inf)
        self.evals: list[tuple[float, float]] = []  # (eval mel, mean train mel since last eval)
        self.train_mel_since_eval: list[float] = []

    def check_loss(self, step: int, losses: dict[str, float]) -> list[HealthEvent]:
        bad = {k: v for k, v in losses.items() if not is_finite(v)}
        if bad:
            return [
                HealthEvent(
                    step,
                    "nan_loss",
                    "stop",
                    f"loss is not finite ({', '.join(f'{k}={v}' for k, v in bad.items())}): run "
                    "stopped before the bad update; the last good checkpoint is kept. Lower lr "
                    "or check the clips of this batch.",
                )
            ]
        return []

    def on_train(
        self, step: int, mel_ce: float, lr: float, grad_norm: float | None
    ) -> list[HealthEvent]:
        events = []
        self.train_mel_since_eval.append(mel_ce)
        if lr < self.lr_floor and not self.lr_flagged:
            self.lr_flagged = True
            events.append(
                HealthEvent(
                    step,
                    "low_lr",
                    "warning",
                    f"learning rate {lr:.2e} is below the floor {self.lr_floor:.0e}: the model "
                    "will barely change; raise lr (or lower lr_floor if this is intended).",
                )
            )
        if grad_norm is not None:  # None: no optimizer step this batch (gradient accumulation)
            self.zero_grad_run = self.zero_grad_run + 1 if grad_norm == 0 else 0
            if self.zero_grad_run >= ZERO_GRAD_STEPS:
                events.append(
                    HealthEvent(
                        step,
                        "zero_gradient",
                        "stop",
                        f"gradient norm was 0 for {self.zero_grad_run} steps in a row: no gradient"
                        " flows: check the data and frozen layers.",
                    )
                )
        return events

    def on_eval(self, step: int, mel_ce: float, text_ce: float) -> list[HealthEvent]:
        events = []
        above = text_ce_alarming(text_ce)
        starting_point = not self.evals and not self.train_mel_since_eval  # before any step
        if above and starting_point:
            # Not this run's doing: the weights it starts from are already there.
            events.append(
                HealthEvent(
                    step,
                    "text_ce_at_start",
                    "warning",
                    f"the starting weights already have eval Text CE {text_ce:.4f}, at or "
                    f"above {TEXT_CE_ALARM} (logged x0.01 scale): check the base model and the text.",
                )
            )
        elif above and not self.text_alarm_on:
            events.append(
                HealthEvent(
                    step,
                    "text_ce_alarm",
                    "alarm",
                    f"eval Text CE {text_ce:.4f} is at or above {TEXT_CE_ALARM} (logged x0.01 scale): "
                    "the model is losing the text; lower lr or stop at an earlier checkpoint.",
                )
            )
        self.text_alarm_on = above

        train_mel = sum(self.train_mel_since_eval) / max(len(self.train_mel_since_eval), 1)
        self.train_mel_since_eval = []
        if self.evals:
            prev_eval, prev_train = self.evals[-1]
            overfit = mel_ce > prev_eval + OVERFIT_MIN_RISE and train_mel < prev_train
            if overfit and not self.overfit_on:
                events.append(
                    HealthEvent(
                        step,
                        "overfitting",
                        "warning",
                        f"eval Mel CE rose {prev_eval:.3f} -> {mel_ce:.3f} while train Mel CE fell "
                        f"{prev_train:.3f} -> {train_mel:.3f}: overfitting; prefer the best "
                        "checkpoint, fewer epochs or more data.",
                    )
                )
            self.overfit_on = overfit
        self.evals.append((mel_ce, train_mel))

        if mel_ce < self.best_mel:
            self.best_step, self.best_mel = step, mel_ce
        elif self.patience_steps and step - self.best_step >= self.patience_steps:
            events.append(
                HealthEvent(
                    step,
                    "early_stop",
                    "info",
                    f"no eval Mel CE improvement for {step - self.best_step} steps (best "
                    f"{self.best_mel:.3f} at step {self.best_step}): stopped early.",
                )
            )
        return events
