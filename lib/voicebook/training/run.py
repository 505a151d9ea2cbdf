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

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebook.core import runs
from voicebook.core.paths import experiment_dir
from voicebook.core.stages import DATA_PREP as DATA_PREP_STAGE
from voicebook.core.stages import PHASE1, PHASE2
from voicebook.training.bundle import TRAINING_ONLY
from voicebook.training.costs import CostClock, Stopwatch
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
from voicebook.training.params import PhaseConfig
from voicebook.training.recorder import PhaseRecorder
from voicebook.training.result import PhaseResult

# A clip threshold no gradient reaches: the trainer then computes (and logs) the gradient norm
# without changing the update. With grad_clip 0 it logs 0 for every step.
NORM_ONLY_GRAD_CLIP = 1e9
FINISHED_STATES = ("finished", "stopped")


@dataclass
class PhasePlan:
    """What a phase run starts from: its folders, device, parent, and the attempt it is."""

    params: PhaseConfig
    phase_dir: Path
    device: Any
    parent: Path | None
    status: dict[str, Any] | None
    attempt: int = 1
    run_dir: Path | None = None  # the run folder to continue, None for a new run
    resume: list[Path] = field(default_factory=list)  # its checkpoints that open, newest first

    @property
    def finished(self) -> bool:
        return bool(self.status) and self.status.get("state") in FINISHED_STATES

    @property
    def dataset(self) -> Path:
        p = self.params
        return Path(p.dataset_dir) if p.dataset_dir else self.phase_dir.parent / "dataset"


def run_phase(
    params: PhaseConfig, on_row: Callable[[dict[str, Any]], None] | None = None
) -> PhaseResult:
    """Train one phase (or continue it, or return it when already finished); see module doc."""
    watch = Stopwatch()
    plan = plan_phase(params)
    if plan.finished:
        print(
            f"{params.stage} already {plan.status['state']} with these parameters: results "
            f"from {plan.phase_dir}."
        )
        return _result(params, plan.phase_dir)
    plan_attempt(plan)
    watch.lap("plan")
    recorder = _recorder(plan, on_row)
    try:
        config, samples = _preflight(plan, recorder)
        watch.lap("preflight")
        _train(plan, config, recorder, samples, watch)
    finally:
        recorder.close()
    return _result(params, plan.phase_dir)


def plan_phase(params: PhaseConfig) -> PhasePlan:
    """The phase's folder, device and parent; the recorded status if it is this same run (an
    earlier run with other parameters moves to ``history/``)."""
    from voicebook.core.device import check_precision, resolve_device  # imports torch

    phase_dir = experiment_dir(params.experiment, params.outputs_dir) / params.stage
    phase_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params.device)
    check_precision(params.precision, device)
    parent = resolvable_parent(phase_dir.parent, params)
    _note_inputs(params, phase_dir.parent, parent)
    plan = PhasePlan(params, phase_dir, device, parent, read_json(phase_dir / "status.json"))
    if plan.status is not None and not _same_run(plan.status, plan):
        moved = archive_previous_run(phase_dir)
        print(f"Parameters differ from the earlier {params.stage} run: its files moved to {moved}.")
        plan.status = None
    return plan


def plan_attempt(plan: PhasePlan) -> None:
    """The attempt/resume bookkeeping, all of it: which attempt this is, and whether it continues
    the recorded run folder (from a checkpoint that opens) or starts a fresh one. A run cut off
    before its first checkpoint, or a failed attempt, leaves its files in ``attempts/<n>/``."""
    phase_dir, status = plan.phase_dir, plan.status
    plan.attempt = next_number(phase_dir / "attempts")
    run_dir = Path(status["run_dir"]) if status and status.get("run_dir") else None
    quarantine = phase_dir / "attempts" / str(plan.attempt)
    plan.resume = resumable_checkpoints(run_dir, quarantine) if run_dir else []
    if run_dir and not plan.resume:  # cut off before its first checkpoint: a fresh run folder
        copy_attempt_files(phase_dir, run_dir, plan.attempt, "stopped before its first checkpoint")
        run_dir = None
    if run_dir is None and status is not None:  # a failed attempt's curves and health: aside
        set_attempt_aside(phase_dir, plan.attempt)
        plan.attempt, plan.status = plan.attempt + 1, None
    plan.run_dir = run_dir


def _recorder(plan: PhasePlan, on_row) -> PhaseRecorder:
    p = plan.params
    status = plan.status or {
        "stage": p.stage,
        "params": p.to_dict(),
        "parent": _resolved(plan.parent),
        "dataset": _resolved(plan.dataset),
    }
    status["device"] = str(plan.device)
    best = status.get("best_step")
    monitor = HealthMonitor(
        p.patience_steps, p.lr_floor, (best, status["best_mel_ce"]) if best is not None else None
    )
    return PhaseRecorder(plan.phase_dir, monitor, status, on_row, max_steps=p.max_steps)


def _preflight(plan: PhasePlan, recorder: PhaseRecorder) -> tuple[Any, tuple[list, list]]:
    """The trainer's config and samples, once every check before training passed; a failed
    check is recorded (status "failed", a health event) and raised."""
    from voicebook.coqui.base import resolve_base
    from voicebook.coqui.config import eval_batch_size, load_samples  # imports coqui-tts

    p, dataset = plan.params, plan.dataset
    try:
        base = resolve_base(p.base_model)
        config = _config(plan, base)  # a missing dataset: FileNotFoundError, run data prep
        check_metadata(dataset)
        train, evals = load_samples(config)
        config.eval_batch_size = eval_batch_size(p.batch_size, len(evals))
        checks = preflight(
            base,
            train,
            evals,
            dataset,
            plan.phase_dir,
            p.keep_checkpoints,
            p.batch_size,
            device=plan.device,
            workers=config.num_loader_workers,
            lora=p.lora_spec(),
            keep_best=p.keep_best,
        )
        recorder.events(checks)
    except PreflightError as exc:
        recorder.save_status(state="failed", stop_reason=str(exc))
        recorder.health.append(HealthEvent(0, "preflight", "stop", str(exc)).to_dict())
        write_json(plan.phase_dir / "health.json", recorder.health)
        raise
    return config, (train, evals)


def _config(plan: PhasePlan, base: Path) -> Any:
    from voicebook.coqui.config import gpt_trainer_config  # imports coqui-tts
    from voicebook.core.device import loader_workers

    p, stage = plan.params, plan.params.stage
    n_runs = len([d for d in plan.phase_dir.glob(f"{stage}-run*") if d.is_dir()])
    settings = p.trainer_settings(f"{stage}-run{n_runs + 1}", loader_workers(plan.device))
    config = gpt_trainer_config(base, plan.dataset, plan.phase_dir, **settings)
    config.grad_clip = NORM_ONLY_GRAD_CLIP
    if plan.parent:
        config.model_args.xtts_checkpoint = str(plan.parent)
    return config


def best_weights(state: dict[str, Any]) -> dict[str, Any]:
    """A best model's weights in a trainer model's state: the slim file's (as ``export``
    writes), keys without the ``xtts.`` prefix, not copied (the trainer copies them)."""
    keys = ((k, k.removeprefix("xtts.")) for k in state)
    return {slim: state[k] for k, slim in keys if not slim.startswith(TRAINING_ONLY)}


def kept_on_disk(status: dict[str, Any]) -> list[tuple[float, int, Path]]:
    """A run's kept best models that are on disk, as (eval Mel CE, step, path)."""
    kept = [(k["mel_ce"], k["step"], Path(k["checkpoint"])) for k in status.get("kept", [])]
    return [k for k in kept if k[2].is_file()]


def _result(params: PhaseConfig, phase_dir: Path) -> PhaseResult:
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


def _same_run(status: dict | None, plan: PhasePlan) -> bool:
    """Whether the recorded run was made with these parameters, from this starting point and on
    this dataset, however each was spelt (``voicebook run`` gives outputs_dir as an absolute
    folder, papermill with ``$VOICEBOOK_OUTPUTS`` as ""; a path may be relative)."""
    if status is None:
        return False
    params = plan.params
    recorded = params.identity_of(status.get("params") or {})
    identity = json.loads(json.dumps(params.training_identity()))
    dataset = status.get("dataset") or _recorded_dataset(status, plan.phase_dir)
    return (recorded, _resolved(status.get("parent")), _resolved(dataset)) == (
        identity,
        _resolved(plan.parent),
        _resolved(plan.dataset),
    )


def _resolved(path: str | Path | None) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


def _recorded_dataset(status: dict[str, Any], phase_dir: Path) -> str:
    """The dataset of a run recorded before its status named it: its ``dataset_dir``, or the
    experiment's own dataset."""
    given = (status.get("params") or {}).get("dataset_dir")
    return str(given) if given else str(phase_dir.parent / "dataset")


def _note_inputs(params: PhaseConfig, exp: Path, parent: Path | None) -> None:
    """What this run rests on (``voicebook.core.runs``): the dataset, and where it starts from."""
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    runs.read_input(
        params.stage, "dataset", dataset, None if params.dataset_dir else DATA_PREP_STAGE.stem
    )
    producer = PHASE1.stem if params.stage == PHASE2.short else None
    runs.read_input(params.stage, "parent", parent, producer)


def _new_trainer(plan: PhasePlan, config: Any, recorder: PhaseRecorder, samples) -> Any:
    from voicebook.coqui.trainer import new_trainer  # imports coqui's trainer

    p = plan.params
    return new_trainer(
        config,
        recorder,
        output_path=plan.phase_dir,
        samples=samples,
        grad_accum=p.grad_accum,
        device=plan.device,
        slim=best_weights,
        run_dir=plan.run_dir,
        restore=plan.resume[0] if plan.resume else None,
        best_eval_loss=recorder.status.get("best_mel_ce"),
        lora=p.lora_spec(),
        keep_best=p.keep_best,
        kept=kept_on_disk(recorder.status),
    )


def _train(plan: PhasePlan, config: Any, recorder: PhaseRecorder, samples, watch) -> None:
    """Build the trainer (new run or continued), fit, and finish cleanly whatever happens."""
    trainer = _new_trainer(plan, config, recorder, samples)
    watch.lap("trainer")
    _note_resumed(plan, trainer, recorder)
    recorder.save_status(
        state="running", run_dir=str(trainer.run_dir), attempt=plan.attempt, stop_reason=""
    )
    clock = CostClock(recorder, trainer, plan.params.finetune, plan.device)
    stop: HealthEvent | None = None
    try:
        if not trainer.resumed_from:
            trainer.eval_epoch()  # the starting point's eval loss: step 0 of the curves
        recorder.save_status(startup_seconds=watch.lap("first_eval"))
        trainer.fit_steps()
    except TrainingStopped as exc:
        stop = exc.event
    except KeyboardInterrupt:
        _interrupted(trainer, recorder, clock, plan.attempt)
        raise
    except BaseException as exc:
        _failed(trainer, recorder, plan.attempt, exc)
        raise
    try:
        _finish(trainer, recorder, stop, clock)
    except KeyboardInterrupt:  # e.g. a sweep's scheduler stopping the trial in the final eval
        _interrupted(trainer, recorder, clock, plan.attempt)
        raise


def _note_resumed(plan: PhasePlan, trainer: Any, recorder: PhaseRecorder) -> None:
    """A continued run: curves cut back to its checkpoint, the cut-off attempt's files kept."""
    resumed = trainer.steps_done if trainer.resumed_from else 0
    if not resumed:
        return
    trim_curves(plan.phase_dir, resumed - 1, plan.attempt)
    copy_attempt_files(
        plan.phase_dir, trainer.run_dir, plan.attempt, f"cut off; continued from step {resumed}"
    )
    recorder.save_status(resumed_from=str(trainer.resumed_from))
    print(f"Continuing {trainer.run_dir.name} from {trainer.resumed_from.name}.")


def _failed(trainer: Any, recorder: PhaseRecorder, attempt: int, exc: BaseException) -> None:
    with contextlib.suppress(Exception):  # a best model being written still lands, if it can
        trainer.finish_writes()
    reason = f"{type(exc).__name__}: {exc}"
    recorder.save_status(state="failed", stop_reason=reason)
    copy_attempt_files(recorder.phase_dir, trainer.run_dir, attempt, f"failed: {reason}")


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
