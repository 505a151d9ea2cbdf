"""Health guards of a fine-tuning phase: checks before training and watchers during it.

Before training, ``preflight`` checks what has cost whole runs in practice (missing base files,
an empty dataset, texts the tokenizer cannot encode, clips XTTS skips, a full disk, too little
GPU memory) and raises one ``PreflightError`` listing every problem with its fix.

During training, ``HealthMonitor`` turns each train step and each evaluation into events
``{step, kind, severity, message}``: a NaN/inf loss or a gradient that stays zero stops the run
(severity ``stop``), Text CE above 0.04 is an ``alarm``, eval loss rising while train loss falls
is ``overfitting``, a learning rate under the floor is a ``warning``, and no eval Mel CE
improvement for ``patience_steps`` ends the run early (``info``: a normal, planned stop).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TEXT_CE_ALARM = 0.04  # logged (x0.01-weighted) Text CE above this: the text side is degrading
OVERFIT_MIN_RISE = 0.01  # eval Mel CE must rise by more than this to count (not eval noise)
ZERO_GRAD_STEPS = 5  # this many optimizer steps in a row with a zero gradient norm stop the run
MIN_CLIP_SECONDS = 0.5  # XTTSDataset skips shorter clips
MAX_WAV_SAMPLES = 255995  # GPTArgs.max_wav_length used by voicebook: longer clips are skipped
MAX_TEXT_TOKENS = 200  # GPTArgs.max_text_length
SAMPLE_RATE = 22050
# Rough GPU need of XTTS GPT fine-tuning: weights, gradients and two AdamW moments (4 copies of
# the weights), plus activations that grow with the batch (~1.2 GB per clip for the 520M-param
# XTTS v2 GPT at 11.6 s clips; scaled by model size for smaller bases).
XTTS_V2_PARAMS = 520e6
ACTIVATION_BYTES_PER_CLIP = 1.2e9


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
        if seconds < MIN_CLIP_SECONDS:
            problems.append(
                f"{path}: {seconds:.2f} s is shorter than {MIN_CLIP_SECONDS} s; drop or merge it."
            )
        elif seconds * SAMPLE_RATE > MAX_WAV_SAMPLES:
            problems.append(
                f"{path}: {seconds:.1f} s is longer than XTTS's "
                f"{MAX_WAV_SAMPLES / SAMPLE_RATE:.1f} s; split it in data prep."
            )
    return problems


def check_metadata(dataset_dir: Path) -> None:
    """Both metadata tables have at least one clip (coqui's reader crashes on an empty one)."""
    empty = []
    for name in ("metadata_train.csv", "metadata_eval.csv"):
        lines = (dataset_dir / name).read_text(encoding="utf-8").splitlines()
        if not [line for line in lines[1:] if line.strip()]:
            empty.append(f"{dataset_dir / name} has no clips")
    if empty:
        raise PreflightError(
            f"Cannot start training: {'; '.join(empty)}. Run 00_data_prep (and read its "
            "rejected.csv for why clips were dropped)."
        )


def checkpoint_bytes(base_dir: Path) -> int:
    """Estimated size of one trainer checkpoint: GPT weights with two AdamW moments, plus DVAE."""
    return 3 * (base_dir / "model.pth").stat().st_size + (base_dir / "dvae.pth").stat().st_size


def check_disk(base_dir: Path, run_dir: Path, keep_checkpoints: int) -> list[str]:
    """Room for the kept checkpoints, the best model (two copies) and the slim export."""
    slim_export = (base_dir / "model.pth").stat().st_size
    need = checkpoint_bytes(base_dir) * (keep_checkpoints + 2) + slim_export
    run_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        return [
            (
                f"{run_dir}: {free / 1e9:.1f} GB free, the run needs about {need / 1e9:.1f} GB "
                f"({keep_checkpoints} kept checkpoints + best model + export); free space or lower "
                "keep_checkpoints."
            )
        ]
    return []


def check_gpu_memory(n_params: int, batch_size: int) -> list[str]:
    """On a GPU, enough free memory for weights, optimizer state and the batch's activations."""
    import torch

    if not torch.cuda.is_available():
        return []
    free, _total = torch.cuda.mem_get_info()
    need = 16 * n_params + batch_size * ACTIVATION_BYTES_PER_CLIP * n_params / XTTS_V2_PARAMS
    if free < need:
        return [
            (
                f"GPU: {free / 1e9:.1f} GB free, batch_size {batch_size} needs about {need / 1e9:.1f}"
                " GB; lower batch_size (and raise grad_accum to keep the effective batch)."
            )
        ]
    return []


def preflight(
    base_dir: Path,
    train_samples: list[dict],
    eval_samples: list[dict],
    dataset_dir: Path,
    run_dir: Path,
    keep_checkpoints: int,
    batch_size: int,
    n_params: int = 0,
) -> list[HealthEvent]:
    """Every check before training; raises ``PreflightError`` listing all problems found."""
    from voicebook.models import load_tokenizer, validate_base_dir

    validate_base_dir(base_dir)  # raises with the missing files and the fix
    problems: list[str] = []
    for name, samples in (
        ("metadata_train.csv", train_samples),
        ("metadata_eval.csv", eval_samples),
    ):
        if not samples:
            problems.append(
                f"{dataset_dir / name} has no clips; run 00_data_prep (or check its rejected.csv)."
            )
    samples = train_samples + eval_samples
    problems += check_texts(samples, load_tokenizer(base_dir))
    problems += check_clips(samples)
    problems += check_disk(base_dir, run_dir, keep_checkpoints)
    problems += check_gpu_memory(n_params, batch_size)
    if problems:
        raise PreflightError(
            f"Cannot start training ({len(problems)} problem(s)):\n- " + "\n- ".join(problems)
        )
    return [
        HealthEvent(
            0,
            "preflight",
            "info",
            f"preflight passed: {len(train_samples)} train and {len(eval_samples)} eval clips, "
            f"free disk {shutil.disk_usage(run_dir).free / 1e9:.0f} GB",
        )
    ]


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
        above = text_ce > TEXT_CE_ALARM
        starting_point = not self.evals and not self.train_mel_since_eval  # before any step
        if above and starting_point:
            # Not this run's doing: the weights it starts from are already there.
            events.append(
                HealthEvent(
                    step,
                    "text_ce_at_start",
                    "warning",
                    f"the starting weights already have eval Text CE {text_ce:.4f}, above "
                    f"{TEXT_CE_ALARM} (logged x0.01 scale): check the base model and the text.",
                )
            )
        elif above and not self.text_alarm_on:
            events.append(
                HealthEvent(
                    step,
                    "text_ce_alarm",
                    "alarm",
                    f"eval Text CE {text_ce:.4f} is above {TEXT_CE_ALARM} (logged x0.01 scale): "
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
