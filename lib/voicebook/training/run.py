"""One phase: train (or continue, or return a finished run) under health guards, losing nothing.

``run_phase(params)`` trains the XTTS GPT of a base (phase 1; ``init_from`` starts from an earlier
checkpoint instead) or continues a phase-1 checkpoint at a lower lr (phase 2; ``resume_from`` is
"best", "final", a step number or a path). Everything lands in ``outputs/<experiment>/<stage>/``:

- the trainer's run folder(s) ``<stage>-run<n>-<date>/`` (periodic ``checkpoint_<step>.pth``
  with optimizer state, a slim ``best_model_<step>.pth``, ``config.json``,
  ``trainer_0_log.txt``, TensorBoard events);
- ``curves.csv`` (one row per train step and per evaluation, appended as training goes),
  ``health.json`` (every health event) and ``status.json`` (params, state, run folder, parent,
  best checkpoint, device), so a killed run loses nothing;
- ``attempts/<n>/`` copies of the log and config of attempts that failed or were cut off;
- ``history/<n>/`` the top-level files of an earlier run with *different* parameters.

Re-running with the same parameters continues an interrupted run from its last periodic
checkpoint (optimizer, scheduler and step restored) or, when the run has finished, returns its
results without training. Re-running with different parameters never overwrites: the earlier
run's files move to ``history/<n>/`` and a new run folder starts.

``loss_text_ce`` is recorded as the trainer logs it: multiplied by ``gpt_loss_text_ce_weight``
(0.01). ``loss`` is ``loss_mel_ce + loss_text_ce``. Train rows carry the trainer's 0-based step
index (the number in ``checkpoint_<step>.pth``); eval rows the number of steps done, as in
TensorBoard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicebook.core import runs
from voicebook.core.paths import experiment_dir
from voicebook.core.stages import DATA_PREP as DATA_PREP_STAGE
from voicebook.core.stages import PHASE1, PHASE2
from voicebook.training.costs import CostClock
from voicebook.training.files import (
    CURVE_COLUMNS,
    archive_previous_run,
    copy_attempt_files,
    next_number,
    read_curves,
    read_json,
    resolvable_parent,
    resumable_checkpoints,
    set_attempt_aside,
    trim_curves,
    write_json,
)
from voicebook.training.health import (
    HealthEvent,
    HealthMonitor,
    PreflightError,
    TrainingStopped,
    check_metadata,
    preflight,
)
from voicebook.training.params import PhaseParams
from voicebook.training.recorder import PhaseRecorder
from voicebook.training.result import PhaseResult

# A clip threshold no gradient reaches: the trainer then computes (and logs) the gradient norm
# without changing the update. With grad_clip 0 it logs 0 for every step.
NORM_ONLY_GRAD_CLIP = 1e9
FINISHED_STATES = ("finished", "stopped")


def _result(params: PhaseParams, phase_dir: Path) -> PhaseResult:
    curves = read_curves(phase_dir)
    status = read_json(phase_dir / "status.json", {})
    runs.wrote(params.stage, "best_checkpoint", status.get("best_checkpoint"))
    return PhaseResult(
        stage=params.stage,
        params=params.to_dict(),
        status=status,
        curves=curves[CURVE_COLUMNS],
        health=read_json(phase_dir / "health.json", []),
        phase_dir=phase_dir,
    )


def _same_run(status: dict | None, params: PhaseParams, parent: Path | None) -> bool:
    """Whether the recorded run was made with these parameters and this starting point."""
    if status is None:
        return False
    recorded = params.identity_of(status.get("params") or {})
    identity = json.loads(json.dumps(params.training_identity()))
    return (recorded, status.get("parent")) == (identity, str(parent or ""))


def _note_inputs(params: PhaseParams, exp: Path, parent: Path | None) -> None:
    """What this run rests on (``voicebook.core.runs``): the dataset, and where it starts from."""
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    runs.read_input(
        params.stage, "dataset", dataset, None if params.dataset_dir else DATA_PREP_STAGE.stem
    )
    producer = PHASE1.stem if params.stage == PHASE2.short else None
    runs.read_input(params.stage, "parent", parent, producer)


def run_phase(
    params: PhaseParams, on_row: Callable[[dict[str, Any]], None] | None = None
) -> PhaseResult:
    """Train one phase (or continue it, or return it when already finished); see module doc."""
    from voicebook.coqui.base import resolve_base
    from voicebook.coqui.config import gpt_trainer_config, load_samples
    from voicebook.core.device import check_precision, loader_workers, resolve_device

    stage = params.stage
    exp = experiment_dir(params.experiment, params.outputs_dir)
    phase_dir = exp / stage
    phase_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params.device)
    check_precision(params.precision, device)
    parent = resolvable_parent(exp, params)
    _note_inputs(params, exp, parent)
    status = read_json(phase_dir / "status.json")
    same = _same_run(status, params, parent)
    if same and status.get("state") in FINISHED_STATES:
        print(f"{stage} already {status['state']} with these parameters: results from {phase_dir}.")
        return _result(params, phase_dir)
    if status is not None and not same:
        moved = archive_previous_run(phase_dir)
        print(f"Parameters differ from the earlier {stage} run: its files moved to {moved}.")
        status = None

    base = resolve_base(params.base_model)
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    attempt = next_number(phase_dir / "attempts")
    run_dir = Path(status["run_dir"]) if status and status.get("run_dir") else None
    quarantine = phase_dir / "attempts" / str(attempt)
    resume = resumable_checkpoints(run_dir, quarantine) if run_dir else []
    if run_dir and not resume:  # cut off before its first checkpoint: start a fresh run folder
        copy_attempt_files(phase_dir, run_dir, attempt, "stopped before its first checkpoint")
        run_dir = None
    if run_dir is None and status is not None:  # a failed attempt's curves and health: set aside
        set_attempt_aside(phase_dir, attempt)
        attempt, status = attempt + 1, None

    workers = loader_workers(device)
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
        num_loader_workers=workers,
        precision=params.precision,
    )
    config.grad_clip = NORM_ONLY_GRAD_CLIP
    if parent:
        config.model_args.xtts_checkpoint = str(parent)
    status = status or {"stage": stage, "params": params.to_dict(), "parent": str(parent or "")}
    status["device"] = str(device)
    best = status.get("best_step")
    monitor = HealthMonitor(
        params.patience_steps,
        params.lr_floor,
        (best, status["best_mel_ce"]) if best is not None else None,
    )
    recorder = PhaseRecorder(phase_dir, monitor, status, on_row)
    try:
        try:
            check_metadata(dataset)
            train_samples, eval_samples = load_samples(config)
            checks = preflight(
                base,
                train_samples,
                eval_samples,
                dataset,
                phase_dir,
                params.keep_checkpoints,
                params.batch_size,
                device=device,
                workers=workers,
                lora=params.lora_spec(),
            )
            recorder.events(checks)
        except PreflightError as exc:
            recorder.save_status(state="failed", stop_reason=str(exc))
            recorder.health.append(HealthEvent(0, "preflight", "stop", str(exc)).to_dict())
            write_json(phase_dir / "health.json", recorder.health)
            raise
        _train(params, config, recorder, run_dir, train_samples, eval_samples, attempt, device)
    finally:
        recorder.close()
    return _result(params, phase_dir)


def _train(params, config, recorder, run_dir, train, evals, attempt, device) -> None:
    """Build the trainer (new run or continued), fit, and finish cleanly whatever happens."""
    from voicebook.coqui.trainer import new_trainer

    phase_dir = recorder.phase_dir
    trainer = new_trainer(
        config,
        recorder,
        run_dir=run_dir,
        output_path=phase_dir,
        train_samples=train,
        eval_samples=evals,
        grad_accum=params.grad_accum,
        max_steps=params.max_steps,
        device=device,
        lora=params.lora_spec(),
    )
    run_dir = trainer.run_dir
    resumed = trainer.steps_done if trainer.resumed_from else 0
    if resumed:
        trim_curves(phase_dir, resumed - 1, attempt)
        copy_attempt_files(phase_dir, run_dir, attempt, f"cut off; continued from step {resumed}")
        recorder.save_status(resumed_from=str(trainer.resumed_from))
        print(f"Continuing {run_dir.name} from {trainer.resumed_from.name}.")
    recorder.save_status(state="running", run_dir=str(run_dir), attempt=attempt, stop_reason="")
    clock = CostClock(recorder, trainer, params.finetune, device)
    stop: HealthEvent | None = None
    try:
        if not resumed:
            trainer.eval_epoch()  # the starting point's eval loss: step 0 of the curves
        trainer.fit_steps()
    except TrainingStopped as exc:
        stop = exc.event
    except KeyboardInterrupt:
        _interrupted(trainer, recorder, clock, attempt)
        raise
    except BaseException as exc:
        recorder.save_status(state="failed", stop_reason=f"{type(exc).__name__}: {exc}")
        copy_attempt_files(phase_dir, run_dir, attempt, f"failed: {type(exc).__name__}: {exc}")
        raise
    try:
        _finish(trainer, recorder, stop, clock)
    except KeyboardInterrupt:  # e.g. a sweep's scheduler stopping the trial in the final eval
        _interrupted(trainer, recorder, clock, attempt)
        raise


def _interrupted(trainer: Any, recorder: PhaseRecorder, clock, attempt: int) -> None:
    """Ctrl-C (Jupyter's interrupt, a sweep's stop): the status says so first, then a resume
    point is written, so that a failing save cannot leave the phase marked as running."""
    recorder.save_status(state="interrupted", final_step=trainer.steps_done)
    trainer.save_resume_point()
    clock.record()
    copy_attempt_files(
        recorder.phase_dir, trainer.run_dir, attempt, "interrupted (KeyboardInterrupt)"
    )


def _finish(trainer: Any, recorder: PhaseRecorder, stop: HealthEvent | None, clock) -> None:
    """Final eval and checkpoint (unless the weights are bad), status, logger."""
    healthy = stop is None or stop.severity != "stop" or trainer.weights_finite()
    if stop is None or stop.kind == "max_steps":
        try:
            trainer.eval_epoch()
        except TrainingStopped as exc:  # patience can fire at this last eval
            stop = exc.event
    final = str(trainer.last_checkpoint()) if healthy else None
    trainer.close()
    clock.record()
    state = "stopped" if stop is not None and stop.severity == "stop" else "finished"
    recorder.save_status(
        state=state,
        stop_reason=stop.message if stop else "",
        final_step=trainer.steps_done,
        final_checkpoint=final,
    )
