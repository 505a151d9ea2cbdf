"""Running a sweep: Ray (a new local instance, or a cluster) with this checkout as the runtime
environment, the shared data prep as one CPU task, then a Ray Tune ``Tuner`` over the trials."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicebook import runner
from voicebook.core.paths import REPO_ROOT
from voicebook.sweep import spec as sp
from voicebook.sweep import trial as tr
from voicebook.sweep.report import write_sweep_report
from voicebook.sweep.spec import SweepError, SweepSpec

OBJECT_STORE_BYTES = 200 * 2**20  # trials pass small dicts: Ray's default (30% of RAM) is waste
MAX_STEPS = 10**7  # ASHA's max_t: above any run, so training ends by its own schedule
# What workers need of this checkout: code, stage notebooks, demo corpus, parameter files.
SHIPPED_EXCLUDES = [".git", ".venv", ".uv", "outputs", "tests", "docs", "benchmarks",
                    "**/__pycache__", "**/.ipynb_checkpoints", "*.egg-info"]  # fmt: skip


@dataclass
class Resources:
    address: str | None = None  # None: a new Ray instance on this machine
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_trial: float = 1  # two trials at once on a 2-core laptop; raise it on big nodes
    storage: str | None = None  # Tune's storage: the sweep folder, or a URI on a cluster
    scheduler: str = "asha"  # "asha" or "none"
    grace_steps: int = 200  # ASHA judges no trial before this many training steps
    reduction_factor: float = 2  # at each rung ASHA keeps the better 1/2


def connect(res: Resources) -> str:
    """Start or join Ray with this checkout as every worker's ``working_dir`` (``lib`` first
    on its path): nodes run the driver's code, not their own checkout or its path. Without an
    address Ray starts a new local instance: a stale session file is never joined."""
    import ray

    if not ray.is_initialized():
        env = {"working_dir": str(REPO_ROOT), "excludes": SHIPPED_EXCLUDES,
               "env_vars": {"PYTHONPATH": "lib"}}  # fmt: skip
        local = {} if res.address else {"object_store_memory": OBJECT_STORE_BYTES}
        ray.init(address=res.address or "local", runtime_env=env, include_dashboard=False,
                 log_to_driver=False, **local)  # fmt: skip
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    if res.gpus_per_trial is None:
        res.gpus_per_trial = 1 if gpus >= 1 else 0
    if res.gpus_per_trial > gpus or res.cpus_per_trial > cpus:
        raise SweepError(
            f"A trial asks for {res.gpus_per_trial:g} GPU and {res.cpus_per_trial:g} CPU but the "
            f"Ray cluster has {gpus:g} GPU and {cpus:g} CPU: lower --gpus-per-trial or "
            "--cpus-per-trial."
        )
    where = f"cluster {res.address}" if res.address else "local"
    return (f"Ray Tune ({where}: {cpus:g} CPU, {gpus:g} GPU), {res.gpus_per_trial:g} GPU and "
            f"{res.cpus_per_trial:g} CPU per trial, scheduler {res.scheduler}")  # fmt: skip


def shared_data_prep(spec: SweepSpec, job: dict, record: dict, res: Resources, echo) -> None:
    """00_data_prep once in ``<sweep>/data_prep``, as a Ray task asking for CPUs, no GPU."""
    import ray

    done = (record.get("data_prep") or {}).get("status") == "done"
    if done and (spec.folder / sp.SHARED / "dataset").is_dir():
        return
    echo(f"Data prep once, shared by the trials: {spec.folder / sp.SHARED}")
    params = {tr.DATA_PREP: tr.route(job, {})[tr.DATA_PREP]}
    task = ray.remote(tr.data_prep_task).options(num_cpus=res.cpus_per_trial, num_gpus=0)
    prep = {**job, "experiment": sp.SHARED, "stages": [tr.DATA_PREP], "params": params}
    record["data_prep"] = {**ray.get(task.remote(prep)), "finished_at": sp.now()}
    sp.write_record(spec.folder, record)
    echo(f"data prep: {record['data_prep']['status']} in {record['data_prep']['seconds']:.0f} s")
    if record["data_prep"]["status"] != "done":
        raise SweepError(f"The shared data prep failed: {record['data_prep']['error']}")


def run_sweep(spec: SweepSpec, res: Resources, echo: Callable[[str], None] = print):
    """Run the sweep on Tune, then write the report; return Tune's ``ResultGrid``. A re-run
    restores Tune's experiment: errored trials run again, finished and stopped ones are kept."""
    asked = {runner.stage_name(s) for s in spec.stages or runner.STAGES}
    stages = [s for s in runner.STAGES if s in asked]
    job = {"sweep": spec.name, "folder": str(spec.folder), "stages": stages,
           "fixed": spec.fixed, "notebooks_dir": spec.notebooks_dir}  # fmt: skip
    with sp.locked(spec.folder):
        record = sp.same_sweep(sp.sweep_record(spec.folder), spec, stages)
        combos = itertools.product(*spec.axes.values())
        sets = [{**t, **dict(zip(spec.axes, c))} for c in combos for t in spec.listed or [{}]]
        shares = [tr.plan_trial(job, values)[2] for values in sets]  # unknown parameters raise
        sp.write_record(spec.folder, record)
        echo(f"Sweep {spec.name}: {len(sets)} trials -> {spec.folder}")
        echo(f"Engine: {connect(res)}")
        prep = tr.notebooks_of(job) / f"{tr.DATA_PREP}.ipynb"
        if any(shares) and tr.DATA_PREP in stages and prep.is_file():
            shared_data_prep(spec, job, record, res, echo)
        results = tuner(spec, job, res, echo).fit()
        echo(f"Sweep report: {write_sweep_report(spec.folder, results)}")
        return results


def _label(sweep: str, trial: Any) -> str:
    return sp.trial_name(sweep, sp.values_of(trial.config))


def tuner(spec: SweepSpec, job: dict[str, Any], res: Resources, echo) -> Any:
    """Tune's ``Tuner``: the grid, resources per trial, ASHA on eval Mel CE by training step,
    storage in the sweep folder; or the sweep's earlier one, restored."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_resources(
        tune.with_parameters(tr.StageTrial, job=job),
        {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
    )
    path = sp.tune_path(spec.folder, res.storage)
    if tune.Tuner.can_restore(path):
        echo(f"Restoring {path}: errored trials run again, the others are kept")
        return tune.Tuner.restore(path, trainable, restart_errored=True)
    asha = ASHAScheduler(time_attr=tr.TIME_ATTR, metric=tr.METRIC, mode="min", max_t=MAX_STEPS,
                         grace_period=res.grace_steps, reduction_factor=res.reduction_factor)  # fmt: skip
    label = functools.partial(_label, spec.name)
    config = tune.TuneConfig(scheduler=None if res.scheduler == "none" else asha,
                             trial_name_creator=label, trial_dirname_creator=label)  # fmt: skip
    storage = res.storage or str(spec.folder)
    return tune.Tuner(trainable, param_space=spec.param_space(), tune_config=config,
                      run_config=tune.RunConfig(name=sp.TUNE_DIR, storage_path=storage, verbose=1))  # fmt: skip
