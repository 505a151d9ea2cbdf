"""Phase 1 and phase 2 fine-tuning: coqui-tts's GPTTrainer under health guards, losing nothing.

``run_phase(params)`` trains the XTTS GPT of a base (phase 1; ``init_from`` starts from an earlier
checkpoint instead) or continues a phase-1 checkpoint at a lower lr (phase 2; ``resume_from`` is
"best", "final", a step number or a path). Everything lands in ``outputs/<experiment>/<stage>/``:

- the trainer's run folder(s) ``<stage>-run<n>-<date>/`` (checkpoints, ``best_model_<step>.pth``,
  ``config.json``, ``trainer_0_log.txt``, TensorBoard events);
- ``curves.csv`` (one row per train step and per evaluation, appended as training goes),
  ``health.json`` (every health event) and ``status.json`` (params, state, run folder, parent,
  best checkpoint), so a killed run loses nothing;
- ``attempts/<n>/`` copies of the log and config of attempts that failed or were cut off;
- ``history/<n>/`` the top-level files of an earlier run with *different* parameters.

Re-running with the same parameters continues an interrupted run from its last checkpoint
(``TrainerArgs.continue_path``: optimizer, scheduler and step restored) or, when the run has
finished, returns its results without training. Re-running with different parameters never
overwrites: the earlier run's files move to ``history/<n>/`` and a new run folder starts.

``loss_text_ce`` is recorded as the trainer logs it: multiplied by ``gpt_loss_text_ce_weight``
(0.01). ``loss`` is ``loss_mel_ce + loss_text_ce``. Train rows carry the trainer's 0-based step
index (the number in ``checkpoint_<step>.pth``); eval rows the number of steps done, as in
TensorBoard.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.health import (
    HealthEvent,
    HealthMonitor,
    PreflightError,
    TrainingStopped,
    check_metadata,
    preflight,
)
from voicebook.live import LiveChart
from voicebook.paths import experiment_dir

STAGES = ("phase1", "phase2")
CURVE_COLUMNS = ["step", "split", "loss_mel_ce", "loss_text_ce", "loss", "lr", "grad_norm"]
# A clip threshold no gradient reaches: the trainer then computes (and logs) the gradient norm
# without changing the update. With grad_clip 0 it logs 0 for every step.
NORM_ONLY_GRAD_CLIP = 1e9
FINISHED_STATES = ("finished", "stopped")


@dataclass
class PhaseParams:
    """Parameters shared by both phases (the notebooks' parameters cells mirror them)."""

    experiment: str = "demo"
    outputs_dir: str = ""  # "" = $VOICEBOOK_OUTPUTS or <repo>/outputs
    base_model: str = "tiny"  # "tiny", "xtts_v2" or a folder in the XTTS v2 layout
    dataset_dir: str = ""  # "" = outputs/<experiment>/dataset (the data-prep stage's output)
    lr: float = 5e-4
    epochs: int = 8
    max_steps: int = 0  # 0 = no cap; else stop after this many steps
    batch_size: int = 3
    grad_accum: int = 1
    eval_every: int = 20  # steps between evaluations (and at every epoch end)
    save_every: int = 45  # steps between checkpoints
    keep_checkpoints: int = 2
    patience_steps: int = 500  # stop when eval Mel CE has not improved for this many steps
    lr_floor: float = 1e-7  # a learning rate below this is flagged
    seed: int = 1
    language: str = "hu"
    export_checkpoint: str | int = "best"  # what export/ holds: "best", "final" or a step

    stage = "phase1"
    # Settings that do not change what is trained: changing them never starts a new run.
    NOT_TRAINING = ("export_checkpoint",)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_identity(self) -> dict[str, Any]:
        """The parameters that define the run (a finished run with the same ones is reused)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.NOT_TRAINING}


@dataclass
class Phase1Params(PhaseParams):
    init_from: str = ""  # "" = the base's weights; else a checkpoint (.pth) or export folder


@dataclass
class Phase2Params(PhaseParams):
    resume_from: str | int = "best"  # phase 1's "best" or "final" checkpoint, a step, or a path
    lr: float = 2e-4
    epochs: int = 4

    stage = "phase2"


def params_for(stage: str, **values: Any) -> PhaseParams:
    """The params dataclass of ``stage`` filled with ``values`` (unknown names are an error)."""
    cls = {"phase1": Phase1Params, "phase2": Phase2Params}[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"Unknown {stage} parameter(s) {unknown}; known: {sorted(names)}.")
    return cls(**values)


def params_from(stage: str, namespace: dict[str, Any]) -> PhaseParams:
    """The params of ``stage`` taken from a notebook's variables (its parameters cell)."""
    from voicebook.config import from_params

    return from_params({"phase1": Phase1Params, "phase2": Phase2Params}[stage], namespace)


@dataclass
class PhaseResult:
    stage: str
    params: dict[str, Any]
    status: dict[str, Any]
    curves: pd.DataFrame
    health: list[dict[str, Any]]
    phase_dir: Path

    @property
    def best_checkpoint(self) -> str | None:
        return self.status.get("best_checkpoint")

    def scraps(self) -> dict[str, Any]:
        """The stage's scraps, as docs/stages.md defines them."""
        s = self.status
        scraps = {
            "stage": self.stage,
            "params": self.params,
            "best_mel_ce": s.get("best_mel_ce"),
            "best_text_ce": s.get("best_text_ce"),
            "best_step": s.get("best_step"),
            "best_checkpoint": s.get("best_checkpoint"),
            "final_step": s.get("final_step"),
            "curves": self.curves,
            "health": self.health,
        }
        if self.stage == "phase2":
            scraps["parent_checkpoint"] = s.get("parent")
        return scraps

    def summary(self) -> pd.DataFrame:
        """A one-column table of what a person wants to know after the run."""
        s = self.status
        rows = {
            "state": s.get("state"),
            "stop reason": s.get("stop_reason") or "",
            "steps done": s.get("final_step"),
            "best eval Mel CE": s.get("best_mel_ce"),
            "Text CE at best (x0.01)": s.get("best_text_ce"),
            "best step": s.get("best_step"),
            "best checkpoint": s.get("best_checkpoint"),
            "started from": s.get("parent") or "base model",
            "run folder": s.get("run_dir"),
        }
        for event in self.health:
            if event["severity"] != "info" or event["kind"] == "early_stop":
                rows[f"{event['severity']} at step {event['step']}"] = event["message"]
        return pd.DataFrame({"value": rows})


# --- files of a phase ---------------------------------------------------------------------------


def read_json(path: Path, default: Any = None) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, value: Any) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, indent=2, default=str))
    partial.replace(path)  # atomic: a kill never leaves half a status file


def read_curves(phase_dir: Path) -> pd.DataFrame:
    path = phase_dir / "curves.csv"
    if not path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.read_csv(path)


def _next_number(folder: Path) -> int:
    return 1 + max((int(p.name) for p in folder.glob("*") if p.name.isdigit()), default=0)


def archive_previous_run(phase_dir: Path) -> Path | None:
    """Move an earlier run's top-level files to ``history/<n>/`` (run folders stay put)."""
    names = ("status.json", "curves.csv", "health.json", "export")
    present = [phase_dir / n for n in names if (phase_dir / n).exists()]
    if not present:
        return None
    dest = phase_dir / "history" / str(_next_number(phase_dir / "history"))
    dest.mkdir(parents=True)
    for item in present:
        item.replace(dest / item.name)
    return dest


def valid_checkpoints(run_dir: Path, quarantine: Path) -> list[Path]:
    """Checkpoints of a run folder that open, newest first; unreadable ones (a kill mid-write)
    move to ``quarantine`` so the trainer resumes from the newest good one."""
    import torch

    found = sorted(
        [*run_dir.glob("checkpoint_*.pth"), *run_dir.glob("best_model_*.pth")],
        key=lambda p: int(p.stem.rsplit("_", 1)[1]),
        reverse=True,
    )
    good = []
    for path in found:
        try:
            torch.load(path, map_location="cpu", mmap=True, weights_only=False)
            good.append(path)
        except Exception:  # noqa: BLE001 - any unreadable file: set aside
            quarantine.mkdir(parents=True, exist_ok=True)
            path.replace(quarantine / path.name)
    return good


def resolve_parent(experiment_path: Path, resume_from: str | int) -> Path:
    """The phase-1 checkpoint phase 2 starts from ("best", "final", a step number, or a path)."""
    phase1 = experiment_path / "phase1"
    spec = str(resume_from).strip()
    if spec not in ("best", "final") and not spec.isdigit():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"resume_from={spec!r}: no such checkpoint file.")
        return path
    status = read_json(phase1 / "status.json")
    if not status or not status.get("run_dir"):
        raise FileNotFoundError(
            f"No phase 1 run in {phase1} (status.json missing): run 01_phase1 first, or pass "
            "resume_from a checkpoint path."
        )
    run_dir = Path(status["run_dir"])
    if spec in ("best", "final"):
        path = Path(status.get(f"{spec}_checkpoint") or "")
        if not path.is_file():
            raise FileNotFoundError(
                f"Phase 1's {spec} checkpoint {path} is missing (see {phase1 / 'status.json'}); "
                "pass resume_from a step number or a checkpoint path."
            )
        return path
    for name in (f"checkpoint_{spec}.pth", f"best_model_{spec}.pth"):
        if (run_dir / name).is_file():
            return run_dir / name
    steps = sorted(
        {int(p.stem.rsplit("_", 1)[1]) for p in run_dir.glob("*_*.pth") if p.stem[-1].isdigit()}
    )
    raise FileNotFoundError(
        f"Phase 1 has no checkpoint at step {spec} in {run_dir}. Available steps: "
        f"{', '.join(map(str, steps)) or 'none'}. Pass one of them as resume_from."
    )


def resolve_init(init_from: str) -> Path | None:
    """Phase 1's starting weights: None for the base's, else a checkpoint file or export folder."""
    if not init_from:
        return None
    path = Path(init_from).expanduser()
    if path.is_dir():
        path = path / "model.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from={init_from!r}: no checkpoint there. Pass a .pth checkpoint (e.g. an "
            "earlier phase's best_model_<step>.pth) or an export folder, or '' for the base."
        )
    return path


# --- recording and the trainer ------------------------------------------------------------------


class PhaseRecorder:
    """Appends curve rows and health events to the phase folder as they happen."""

    def __init__(
        self,
        phase_dir: Path,
        monitor: HealthMonitor,
        status: dict[str, Any],
        on_row: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.phase_dir, self.monitor, self.status, self.on_row = phase_dir, monitor, status, on_row
        self.health: list[dict[str, Any]] = read_json(phase_dir / "health.json", [])
        path = phase_dir / "curves.csv"
        new = not path.is_file()
        self.curves_file = path.open("a", newline="", buffering=1)
        self.writer = csv.writer(self.curves_file)
        if new:
            self.writer.writerow(CURVE_COLUMNS)
        self.last_eval_step: int | None = None

    def close(self) -> None:
        self.curves_file.close()

    def row(self, step: int, split: str, mel: float, text: float, lr: float, norm: Any) -> None:
        values = [step, split, mel, text, mel + text, lr, norm]
        self.writer.writerow(["" if v is None else v for v in values])
        self.curves_file.flush()
        if self.on_row:
            self.on_row(dict(zip(CURVE_COLUMNS, values, strict=True)))

    def events(self, events: list[HealthEvent]) -> None:
        """Record events; the first ``stop`` one ends the run."""
        if not events:
            return
        self.health += [e.to_dict() for e in events]
        write_json(self.phase_dir / "health.json", self.health)
        for event in events:
            print(f"[health] step {event.step} {event.severity}: {event.message}")
        stops = [e for e in events if e.severity == "stop" or e.kind == "early_stop"]
        if stops:
            raise TrainingStopped(stops[0])

    def save_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(self.phase_dir / "status.json", self.status)


def make_trainer_class():
    """The coqui Trainer with voicebook's recording and guards (built lazily: coqui is heavy)."""
    from trainer import Trainer
    from trainer.generic_utils import KeepAverage

    class PhaseTrainer(Trainer):
        """Records every step and evaluation, evaluates/keeps the best at every eval, guards."""

        def __init__(self, *args: Any, recorder: PhaseRecorder, max_steps: int, **kw: Any):
            self.recorder, self.max_steps = recorder, max_steps
            super().__init__(*args, **kw)

        def _compute_loss(self, batch, criterion, optimizer_idx):
            outputs, loss_dict = super()._compute_loss(batch, criterion, optimizer_idx)
            if loss_dict:  # before backward: a NaN never reaches the weights
                losses = {k: float(loss_dict[k].detach()) for k in ("loss_mel_ce", "loss_text_ce")}
                self.recorder.events(
                    self.recorder.monitor.check_loss(self.total_steps_done, losses)
                )
            return outputs, loss_dict

        def train_step(self, batch, batch_n_steps, step, loader_start_time):
            index = self.total_steps_done
            outputs, losses = super().train_step(batch, batch_n_steps, step, loader_start_time)
            if outputs is None:
                return outputs, losses
            stepped = (step + 1) % self.grad_accum_steps == 0 or step + 1 == batch_n_steps
            norm = float(losses.get("grad_norm", 0.0)) if stepped else None
            mel, text, lr = losses["loss_mel_ce"], losses["loss_text_ce"], losses["current_lr"]
            self.recorder.row(index, "train", mel, text, lr, norm)
            self.recorder.events(self.recorder.monitor.on_train(index, mel, lr, norm))
            if self.max_steps and self.total_steps_done >= self.max_steps:
                raise TrainingStopped(
                    HealthEvent(index, "max_steps", "info", f"reached max_steps={self.max_steps}")
                )
            return outputs, losses

        def eval_epoch(self) -> None:
            step = self.total_steps_done
            if self.recorder.last_eval_step == step:  # the epoch-end eval right after a step eval
                return
            self.keep_avg_eval = KeepAverage()  # a fresh average per evaluation, not per epoch
            super().eval_epoch()
            self.recorder.last_eval_step = step
            avg = self.keep_avg_eval.avg_values
            mel, text = avg["avg_loss_mel_ce"], avg["avg_loss_text_ce"]
            self.recorder.row(
                step, "eval", mel, text, self.optimizer[0].param_groups[0]["lr"], None
            )
            self.save_best_model()
            best = self.output_path / f"best_model_{step}.pth"
            if best.is_file():
                self.recorder.save_status(
                    best_step=step, best_mel_ce=mel, best_text_ce=text, best_checkpoint=str(best)
                )
            self.recorder.events(self.recorder.monitor.on_eval(step, mel, text))

        def save_best_model(self) -> None:
            """The trainer's rule (lower eval target loss wins), with one write instead of two:
            written under a temporary name then renamed (a kill never leaves half a best
            model), ``best_model.pth`` a hard link, older ``best_model_<step>.pth`` removed."""
            from trainer.io import save_model

            eval_loss = self._pick_target_avg_loss(self.keep_avg_eval)
            if eval_loss is None or eval_loss >= self.best_loss["eval_loss"]:
                return
            step, out = self.total_steps_done, Path(self.output_path)
            path, partial = out / f"best_model_{step}.pth", out / f"best_model_{step}.partial"
            train_loss = self._pick_target_avg_loss(self.keep_avg_train) or math.inf
            self.best_loss = {"train_loss": train_loss, "eval_loss": eval_loss}
            save_model(
                self.config,
                self._get_model(),
                partial,
                current_step=step,
                epoch=self.epochs_done,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                model_loss=self.best_loss,
            )
            partial.replace(path)
            for older in out.glob("best_model_*.pth"):
                if older != path:
                    older.unlink()
            shortcut = out / "best_model.pth"
            shortcut.unlink(missing_ok=True)
            try:
                os.link(path, shortcut)
            except OSError:  # file systems without hard links
                shutil.copy2(path, shortcut)

        def _restore_best_loss(self) -> None:
            super()._restore_best_loss()
            # The trainer restores the *last* eval loss as the best; use the recorded best.
            best = self.recorder.status.get("best_mel_ce")
            if self.continue_run and best is not None:
                self.best_loss = {"train_loss": math.inf, "eval_loss": best}

    return PhaseTrainer


# --- one phase ----------------------------------------------------------------------------------


def _copy_attempt_files(phase_dir: Path, run_dir: Path | None, attempt: int, why: str) -> Path:
    """Keep the log and config of an attempt outside the run folder."""
    dest = phase_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    if run_dir and run_dir.is_dir():
        for name in ("trainer_0_log.txt", "config.json"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, dest / name)
    (dest / "why.txt").write_text(why)
    return dest


def _result(params: PhaseParams, phase_dir: Path) -> PhaseResult:
    curves = read_curves(phase_dir)
    return PhaseResult(
        stage=params.stage,
        params=params.to_dict(),
        status=read_json(phase_dir / "status.json", {}),
        curves=curves[CURVE_COLUMNS],
        health=read_json(phase_dir / "health.json", []),
        phase_dir=phase_dir,
    )


def _trim_curves(phase_dir: Path, resumed_step: int, attempt: int) -> None:
    """Drop rows recorded after the checkpoint a run resumes from (kept in ``attempts/<n>/``)."""
    curves = read_curves(phase_dir)
    keep = (curves["step"] <= resumed_step) | (
        (curves["split"] == "eval") & (curves["step"] == resumed_step + 1)
    )
    if keep.all():
        return
    dest = phase_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    curves[~keep].to_csv(dest / "curves_after_checkpoint.csv", index=False)
    curves[keep].to_csv(phase_dir / "curves.csv", index=False)


def run_phase(
    params: PhaseParams, on_row: Callable[[dict[str, Any]], None] | None = None
) -> PhaseResult:
    """Train one phase (or continue it, or return it when already finished); see module doc."""
    from trainer import TrainerArgs

    from voicebook.models import resolve_base
    from voicebook.xtts import gpt_trainer_config, gpt_trainer_model, load_samples

    stage = params.stage
    exp = experiment_dir(params.experiment, params.outputs_dir)
    phase_dir = exp / stage
    phase_dir.mkdir(parents=True, exist_ok=True)
    parent = (
        resolve_parent(exp, params.resume_from)
        if isinstance(params, Phase2Params)
        else resolve_init(params.init_from)
    )
    status = read_json(phase_dir / "status.json")
    recorded = ((status or {}).get("params") or {}).items()
    recorded = {k: v for k, v in recorded if k not in params.NOT_TRAINING}
    same = status is not None and (recorded, status.get("parent")) == (
        json.loads(json.dumps(params.training_identity())),
        str(parent or ""),
    )
    if same and status.get("state") in FINISHED_STATES:
        print(f"{stage} already {status['state']} with these parameters: results from {phase_dir}.")
        return _result(params, phase_dir)
    if status is not None and not same:
        moved = archive_previous_run(phase_dir)
        print(f"Parameters differ from the earlier {stage} run: its files moved to {moved}.")
        status = None

    base = resolve_base(params.base_model)
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    attempt = _next_number(phase_dir / "attempts")
    run_dir = Path(status["run_dir"]) if status and status.get("run_dir") else None
    resume = valid_checkpoints(run_dir, phase_dir / "attempts" / str(attempt)) if run_dir else []
    if run_dir and not resume:  # cut off before its first checkpoint: start a fresh run folder
        _copy_attempt_files(phase_dir, run_dir, attempt, "stopped before its first checkpoint")
        run_dir = None
    if run_dir is None and status is not None:  # a failed attempt's curves and health: set aside
        dest = phase_dir / "attempts" / str(attempt)
        for name in ("curves.csv", "health.json"):
            if (phase_dir / name).is_file():
                dest.mkdir(parents=True, exist_ok=True)
                (phase_dir / name).replace(dest / name)
        attempt, status = attempt + 1, None

    n_runs = len([p for p in phase_dir.glob(f"{stage}-run*") if p.is_dir()])
    config = gpt_trainer_config(
        base,
        dataset,
        phase_dir,
        language=params.language,
        lr=params.lr,
        batch_size=params.batch_size,
        epochs=params.epochs,
        eval_every=params.eval_every,
        save_every=params.save_every,
        keep_checkpoints=params.keep_checkpoints,
        seed=params.seed,
        run_name=f"{stage}-run{n_runs + 1}",
    )
    config.grad_clip = NORM_ONLY_GRAD_CLIP
    if parent:
        config.model_args.xtts_checkpoint = str(parent)
    status = status or {"stage": stage, "params": params.to_dict(), "parent": str(parent or "")}
    monitor = HealthMonitor(
        params.patience_steps,
        params.lr_floor,
        (status["best_step"], status["best_mel_ce"])
        if status.get("best_step") is not None
        else None,
    )
    recorder = PhaseRecorder(phase_dir, monitor, status, on_row)
    try:
        try:
            check_metadata(dataset)
            train_samples, eval_samples = load_samples(config)
            recorder.events(
                preflight(
                    base,
                    train_samples,
                    eval_samples,
                    dataset,
                    phase_dir,
                    params.keep_checkpoints,
                    params.batch_size,
                    n_params=(base / "model.pth").stat().st_size // 4,
                )
            )
        except PreflightError as exc:
            recorder.save_status(state="failed", stop_reason=str(exc))
            recorder.health.append(HealthEvent(0, "preflight", "stop", str(exc)).to_dict())
            write_json(phase_dir / "health.json", recorder.health)
            raise
        _train(
            params,
            config,
            gpt_trainer_model,
            TrainerArgs,
            recorder,
            run_dir,
            train_samples,
            eval_samples,
            attempt,
        )
    finally:
        recorder.close()
    return _result(params, phase_dir)


def _train(params, config, model_cls, args_cls, recorder, run_dir, train, evals, attempt) -> None:
    """Build the trainer (new run or continued), fit, and finish cleanly whatever happens."""
    phase_dir = recorder.phase_dir
    model = model_cls(config)
    args = args_cls(
        continue_path=str(run_dir) if run_dir else "", grad_accum_steps=params.grad_accum
    )
    trainer = make_trainer_class()(
        args,
        config,
        output_path=run_dir or phase_dir,
        model=model,
        train_samples=train,
        eval_samples=evals,
        parse_command_line_args=False,
        recorder=recorder,
        max_steps=params.max_steps,
    )
    run_dir = Path(trainer.output_path)
    resumed = trainer.total_steps_done if args.continue_path else 0
    if resumed:
        if Path(trainer.args.restore_path).name.startswith("best_model_"):
            # saved at an eval, after <step> updates (a checkpoint_<step> holds <step> + 1)
            trainer.total_steps_done -= 1
            resumed -= 1
        _trim_curves(phase_dir, resumed - 1, attempt)
        _copy_attempt_files(phase_dir, run_dir, attempt, f"cut off; continued from step {resumed}")
        recorder.save_status(resumed_from=trainer.args.restore_path)
        print(f"Continuing {run_dir.name} from {Path(trainer.args.restore_path).name}.")
    recorder.save_status(state="running", run_dir=str(run_dir), attempt=attempt, stop_reason="")
    stop: HealthEvent | None = None
    try:
        if not resumed:
            trainer.eval_epoch()  # the starting point's eval loss: step 0 of the curves
        trainer._fit()
    except TrainingStopped as exc:
        stop = exc.event
    except KeyboardInterrupt:
        trainer.save_checkpoint()
        recorder.save_status(state="interrupted", final_step=trainer.total_steps_done)
        _copy_attempt_files(phase_dir, run_dir, attempt, "interrupted (KeyboardInterrupt)")
        raise
    except BaseException as exc:
        recorder.save_status(state="failed", stop_reason=f"{type(exc).__name__}: {exc}")
        _copy_attempt_files(phase_dir, run_dir, attempt, f"failed: {type(exc).__name__}: {exc}")
        raise
    _finish(trainer, recorder, stop)


def _finish(trainer: Any, recorder: PhaseRecorder, stop: HealthEvent | None) -> None:
    """Final eval and checkpoint (unless the weights are bad), status, logger."""
    import torch

    healthy = stop is None or stop.severity != "stop"
    if not healthy:  # keep the current weights only if they are finite
        healthy = all(torch.isfinite(p).all() for p in trainer.model.parameters())
    if stop is None or stop.kind == "max_steps":
        try:
            trainer.eval_epoch()
        except TrainingStopped as exc:  # patience can fire at this last eval
            stop = exc.event
    final = None
    if healthy:
        trainer.save_checkpoint()
        final = str(Path(trainer.output_path) / f"checkpoint_{trainer.total_steps_done}.pth")
    trainer.dashboard_logger.finish()
    state = "stopped" if stop is not None and stop.severity == "stop" else "finished"
    recorder.save_status(
        state=state,
        stop_reason=stop.message if stop else "",
        final_step=trainer.total_steps_done,
        final_checkpoint=final,
    )


# --- export and live view -----------------------------------------------------------------------


def export_phase(result: PhaseResult, checkpoint: str | int = "best") -> Path:
    """Write ``<stage>/export/`` for the best, final, a step's, or a given checkpoint."""
    from voicebook.export import export_folder
    from voicebook.models import resolve_base

    status, spec = result.status, str(checkpoint)
    if spec in ("best", "final"):
        path = Path(status[f"{spec}_checkpoint"])
    elif spec.isdigit():
        path = Path(status["run_dir"]) / f"checkpoint_{spec}.pth"
        path = path if path.is_file() else path.with_name(f"best_model_{spec}.pth")
    else:
        path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint {path} to export: pick 'best', 'final' or a step.")
    params = result.params
    dataset = Path(params["dataset_dir"] or result.phase_dir.parent / "dataset")
    reference = _reference_clip(dataset)
    return export_folder(
        path, resolve_base(params["base_model"]), result.phase_dir / "export", reference
    )


def _reference_clip(dataset: Path) -> Path | None:
    """The first eval clip of the dataset: a held-out sample of the voice."""
    meta = dataset / "metadata_eval.csv"
    lines = meta.read_text(encoding="utf-8").splitlines()[1:] if meta.is_file() else []
    return dataset / lines[0].split("|")[0] if lines else None


class LiveView(LiveChart):
    """Train and eval Mel CE / Text CE by step, redrawn as rows arrive, under a progress bar."""

    def __init__(self, title: str, total_steps: int, start_step: int = 0, redraw_every: int = 10):
        super().__init__(title, curves_figure, CURVE_COLUMNS, total_steps, start_step, "step")
        self.redraw_every = redraw_every

    def on_row(self, row: dict[str, Any]) -> None:
        train = row["split"] == "train"
        redraw = not train or (len(self.rows) + 1) % self.redraw_every == 0
        self.add(row, train, redraw, mel_ce=f"{row['loss_mel_ce']:.3f}")


def curves_figure(curves: pd.DataFrame, title: str = ""):
    """Train and eval Mel CE (left) and Text CE x0.01 (right) by step."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Mel CE", "Text CE (x0.01, as logged)"))
    # One colour per split in both charts, so the legend's two entries cover Text CE too.
    colours = {"train": qualitative.Plotly[0], "eval": qualitative.Plotly[1]}
    for col, loss in ((1, "loss_mel_ce"), (2, "loss_text_ce")):
        for split, mode in (("train", "lines"), ("eval", "lines+markers")):
            part = curves[curves["split"] == split]
            fig.add_scatter(
                x=part["step"].tolist(),
                y=part[loss].tolist(),
                name=f"{split} (Mel CE, Text CE)",
                mode=mode,
                line={"color": colours[split]},
                legendgroup=split,
                showlegend=col == 1,
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=380)
    return fig


def live_view(params: PhaseParams) -> LiveView:
    """A LiveView sized for ``params``: planned steps from the dataset, start from past curves."""
    exp = experiment_dir(params.experiment, params.outputs_dir)
    meta = Path(params.dataset_dir or exp / "dataset") / "metadata_train.csv"
    n_train = max(len(meta.read_text().splitlines()) - 1, 0) if meta.is_file() else 0
    curves = read_curves(exp / params.stage)
    done = int((curves["split"] == "train").sum())
    return LiveView(params.stage.replace("phase", "Phase "), planned_steps(params, n_train), done)


def planned_steps(params: PhaseParams, n_train: int) -> int:
    """Steps the run will take (epochs x batches, capped by max_steps), for the progress bar."""
    steps = params.epochs * math.ceil(n_train / params.batch_size)
    return min(steps, params.max_steps) if params.max_steps else steps


# --- command line: python -m voicebook.training phase1 --lr 1e-4 ... ---------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = argv[0] if argv and argv[0] in STAGES else None
    if stage is None:
        print(f"usage: python -m voicebook.training {{{','.join(STAGES)}}} [--name value ...]")
        return 2
    cls = Phase1Params if stage == "phase1" else Phase2Params
    parser = argparse.ArgumentParser(prog=f"voicebook.training {stage}")
    for f in dataclasses.fields(cls):
        default = f.default
        kind = str if f.name in ("resume_from", "export_checkpoint") else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)
    params = cls(**vars(parser.parse_args(argv[1:])))
    result = run_phase(params)
    print(result.summary().to_string())
    return 0 if result.status.get("state") == "finished" else 1


if __name__ == "__main__":
    raise SystemExit(main())
