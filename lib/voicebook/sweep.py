"""Sweeps: many experiments from one command, run as Ray tasks, compared in one report.

``voicebook sweep --name lr_grid -p phase1.lr 1e-6 2e-6 -p phase2.lr 5e-7 1e-6`` expands the
grid into trials (here 4), one experiment per trial, each running the stage notebooks with
papermill exactly as ``voicebook run`` does (:func:`voicebook.runner.run`). Everything of a
sweep lives in one folder::

    outputs/<sweep>/
      sweep.json          the summary: every trial's values, status, time and error (atomic)
      sweep_report.html   every trial side by side, and the trial the evidence favours
      data_prep/          the shared experiment whose 00_data_prep builds the dataset once
      <trial>/            one experiment per trial (``voicebook run --experiment <trial>
                          --outputs-dir outputs/<sweep>`` re-runs a stage of it)

A trial that does not change a data-prep parameter does not run data prep: its ``dataset`` is
a link to ``data_prep/dataset`` (evaluation and training find it there). A failed trial does
not stop the others; its error goes to the summary and its outputs stay. Running the same
sweep again skips the trials that finished and runs only the failed or missing ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import html
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from voicebook import decision as dm
from voicebook import runner
from voicebook.paths import NOTEBOOKS_DIR, outputs_root
from voicebook.scraps import record_path

SUMMARY_NAME, REPORT_NAME, LOCK_NAME = "sweep.json", "sweep_report.html", "sweep.lock"
SHARED = "data_prep"  # the sweep's shared experiment: 00_data_prep runs there, once
DATA_PREP = runner.STAGES[0]
MAX_NAME = 100  # longer trial names end in a hash instead (file systems allow 255 bytes)
CPUS_PER_TRIAL = 1  # two trials at once on a 2-core laptop; raise it on big nodes
OBJECT_STORE_BYTES = 200 * 2**20  # trials pass small dicts: Ray's default (30% of RAM) is waste
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SweepError(RuntimeError):
    """A problem with what was asked of the sweep (name, grid, a changed sweep)."""


@dataclass
class Trial:
    """One experiment of the sweep: its swept values and what became of it."""

    name: str
    values: dict[str, Any]
    status: str = "pending"  # "pending", "done" or "failed"
    error: str = ""
    seconds: float | None = None
    finished_at: str = ""
    own_data_prep: bool = False  # it changes a data-prep parameter, so it builds its own


# --- the grid ----------------------------------------------------------------------------


def expand_grid(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the last axis varying fastest.

    ``[("phase1.lr", [1e-6, 2e-6]), ("phase2.lr", [5e-7])]`` → two parameter sets.
    No axes → one empty set (a sweep of one trial with the fixed parameters).
    """
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise SweepError(f"A parameter is swept twice: {keys}. Give each -p KEY once.")
    for key, values in axes:
        if not values:
            raise SweepError(f"Parameter {key!r} has no values: give -p {key} V1 [V2 ...].")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def load_trials(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parameter sets from a YAML file: a list of mappings, one per trial."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise SweepError(f"Trials file {file} does not exist.")
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data) or not data:
        raise SweepError(
            f"Trials file {file} must be a YAML list of mappings, e.g.\n"
            "- {phase1.lr: 1e-6}\n- {phase1.lr: 2e-6, phase2.lr: 5e-7}"
        )
    return data


def combine(
    listed: list[dict[str, Any]] | None, grid: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each listed parameter set crossed with each grid point (either may stand alone)."""
    return [{**a, **b} for a in (listed or [{}]) for b in grid]


def _token(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "empty"


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def check_name(name: str) -> str:
    if not _NAME_OK.match(name or "") or name == SHARED:
        raise SweepError(
            f"Sweep name {name!r} is not usable as a folder name: start with a letter or digit "
            f"and use letters, digits, '.', '+', '-' or '_' (and not {SHARED!r})."
        )
    return name


def trial_name(sweep: str, values: dict[str, Any]) -> str:
    """``lr_grid`` + ``{"phase1.lr": 1e-6}`` → ``lr_grid__phase1.lr-1e-06``: readable, safe
    as a folder name; too long a name keeps its start and ends in a hash of the values."""
    parts = [f"{_token(k)}-{_token(v)}" for k, v in values.items()] or ["default"]
    name = "__".join([sweep, *parts])
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{_digest(values)}"
    return name


def make_trials(sweep: str, parameter_sets: list[dict[str, Any]]) -> list[Trial]:
    """One trial per parameter set; names that clash after cleaning get a hash to tell apart."""
    names = [trial_name(sweep, v) for v in parameter_sets]
    trials = []
    for name, values in zip(names, parameter_sets):
        if names.count(name) > 1:
            if any(v == values for v in parameter_sets[: len(trials)]):
                raise SweepError(f"The same trial is listed twice: {values}.")
            name = f"{name[: MAX_NAME - 9]}-{_digest(values)}"
        trials.append(Trial(name, dict(values)))
    return trials


# --- the summary ---------------------------------------------------------------------------


def sweep_dir(name: str, outputs_dir: str | os.PathLike | None = None) -> Path:
    return outputs_root(outputs_dir) / check_name(name)


def read_summary(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path} is not valid JSON ({exc}): fix or remove it.") from exc


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    """Write ``sweep.json`` atomically (a reader never sees half a file)."""
    summary = {**summary, "updated_at": datetime.now().isoformat(timespec="seconds")}
    return _write_atomic(
        Path(folder) / SUMMARY_NAME, json.dumps(summary, indent=2, default=str, ensure_ascii=False)
    )


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def trials_of(summary: dict[str, Any] | None) -> dict[str, Trial]:
    return {t["name"]: Trial(**t) for t in (summary or {}).get("trials", [])}


def to_run(trials: list[Trial], earlier: dict[str, Trial], folder: Path) -> list[Trial]:
    """The trials this run must execute: not finished before, or their folder is gone."""
    return [
        t
        for t in trials
        if not (
            t.name in earlier and earlier[t.name].status == "done" and (folder / t.name).is_dir()
        )
    ]


def check_same_sweep(
    summary: dict[str, Any] | None, stages: list[str], fixed: dict[str, Any], path: Path
) -> None:
    """A sweep's finished trials are only comparable with new ones run the same way."""
    if not summary:
        return
    before = {"stages": summary.get("stages"), "fixed": summary.get("fixed")}
    now = json.loads(json.dumps({"stages": stages, "fixed": fixed}, default=str))
    if before != now:
        raise SweepError(
            f"Sweep at {path} ran with stages {before['stages']} and fixed parameters "
            f"{before['fixed']}; this run asks for stages {now['stages']} and {now['fixed']}. "
            "Give the sweep another --name, or move that folder's sweep.json away to start over."
        )


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One driver per sweep at a time: two would run the same trials into the same folders."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(
                f"Another `voicebook sweep` is running the sweep in {folder}: wait for it."
            ) from None
        yield


# --- data prep once --------------------------------------------------------------------------


def data_prep_params(params: dict[str, Any], declared: Callable[[str], set[str]]) -> dict:
    """The part of ``params`` that 00_data_prep receives (the rest goes to other stages)."""

    def for_data_prep(key: str, value: Any) -> bool:
        if "." in key or key in declared(DATA_PREP):
            return True
        if isinstance(value, dict):  # {stage: {...}}
            with contextlib.suppress(runner.RunnerError):
                return runner.stage_name(key) == DATA_PREP
        return False

    mine = {k: v for k, v in params.items() if for_data_prep(k, v)}
    return runner.split_params(mine, [DATA_PREP], declared)[DATA_PREP]


def shares_data_prep(
    values: dict[str, Any], fixed: dict[str, Any], declared: Callable[[str], set[str]]
) -> bool:
    """A trial shares the sweep's dataset unless its values change a data-prep parameter."""
    return data_prep_params(fixed, declared) == data_prep_params({**fixed, **values}, declared)


def link_shared_dataset(folder: Path, trial: str) -> None:
    """``<trial>/dataset`` → ``../data_prep/dataset`` (relative: the sweep folder can move),
    plus a copy of the executed data-prep notebook so the trial's report has its card.
    Anything the trial already has is left alone."""
    shared = folder / SHARED
    exp = folder / trial
    (exp / "notebooks").mkdir(parents=True, exist_ok=True)
    link = exp / "dataset"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(Path("..") / SHARED / "dataset", target_is_directory=True)
    notebook = shared / "notebooks" / f"{DATA_PREP}.ipynb"
    copy = exp / "notebooks" / f"{DATA_PREP}.ipynb"
    if notebook.is_file() and not copy.exists():
        shutil.copy2(notebook, copy)
    record, own = record_path(shared, DATA_PREP), record_path(exp, DATA_PREP)
    if record.is_file() and not own.exists():
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, own)


# --- running a trial -------------------------------------------------------------------------


def run_trial(
    experiment: str,
    stages: list[str],
    params: dict[str, Any],
    outputs_dir: str,
    notebooks_dir: str,
) -> dict[str, Any]:
    """Run one experiment's stages; never raises, so one failure cannot stop the sweep.

    Runs where Ray puts it (another process, another node): it returns a plain dict and writes
    the runner's lines to ``<experiment>/trial.log``.
    """
    lines: list[str] = []
    start = time.monotonic()
    status, error = "done", ""
    try:
        runner.run(experiment, stages, params, outputs_dir, Path(notebooks_dir), echo=lines.append)
    except Exception as exc:  # noqa: BLE001 - contained: the summary says why, the sweep goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        lines.append(error)
    log = Path(outputs_dir) / experiment / "trial.log"
    with contextlib.suppress(OSError):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"status": status, "error": error, "seconds": round(time.monotonic() - start, 1)}


@dataclass
class Job:
    experiment: str
    stages: list[str]
    params: dict[str, Any]


class LocalEngine:
    """Runs jobs one after another in this process (tests; a machine without Ray)."""

    def __init__(self, outputs_dir: Path, notebooks_dir: Path):
        self.args = (str(outputs_dir), str(notebooks_dir))
        self.description = "in this process, one trial at a time"

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        for job in jobs:
            yield job, run_trial(job.experiment, job.stages, job.params, *self.args)


class RayEngine:
    """Each job a Ray task asking for ``gpus_per_trial`` GPUs and ``cpus_per_trial`` CPUs.

    Ray starts locally (no server) unless ``address`` names a running cluster; there every node
    needs voicebook installed and ``outputs_dir`` on a shared file system.
    """

    def __init__(
        self,
        outputs_dir: Path,
        notebooks_dir: Path,
        address: str | None = None,
        gpus_per_trial: float | None = None,
        cpus_per_trial: float = CPUS_PER_TRIAL,
    ):
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if not address:
                options["object_store_memory"] = OBJECT_STORE_BYTES
            ray.init(address=address or None, **options)
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        if gpus_per_trial is None:
            gpus_per_trial = 1 if gpus >= 1 else 0
        if gpus_per_trial > gpus or cpus_per_trial > cpus:
            raise SweepError(
                f"A trial asks for {gpus_per_trial} GPU and {cpus_per_trial} CPU but the Ray "
                f"cluster has {gpus:g} GPU and {cpus:g} CPU: lower --gpus-per-trial or "
                "--cpus-per-trial."
            )
        self.ray, self.args = ray, (str(outputs_dir), str(notebooks_dir))
        self.task = ray.remote(run_trial).options(
            num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0
        )
        self.description = (
            f"Ray ({'cluster ' + address if address else 'local'}: {cpus:g} CPU, {gpus:g} GPU), "
            f"{gpus_per_trial:g} GPU and {cpus_per_trial:g} CPU per trial"
        )

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        pending = {self.task.remote(j.experiment, j.stages, j.params, *self.args): j for j in jobs}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                yield job, self.ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the worker died (out of memory, node lost)
                yield job, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


# --- the sweep -------------------------------------------------------------------------------


@dataclass
class SweepSpec:
    name: str
    parameter_sets: list[dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None
    outputs_dir: str | os.PathLike | None = None
    notebooks_dir: Path = NOTEBOOKS_DIR


@dataclass
class Plan:
    """What a sweep will run: its stages (those present as notebooks) and its trials."""

    folder: Path
    stages: list[str]
    present: list[str]
    declared: Callable[[str], set[str]]
    trials: list[Trial]


def plan(spec: SweepSpec) -> Plan:
    """Trials with their routing checked: an unknown parameter stops the sweep before it runs."""
    folder = sweep_dir(spec.name, spec.outputs_dir)
    asked = {runner.stage_name(x) for x in spec.stages or runner.STAGES}
    stages = [s for s in runner.STAGES if s in asked]
    present = [s for s in stages if (spec.notebooks_dir / f"{s}.ipynb").is_file()]
    declared = _declared(spec.notebooks_dir)
    trials = make_trials(spec.name, spec.parameter_sets)
    for t in trials:
        runner.split_params({**spec.fixed, **t.values}, present, declared)
        t.own_data_prep = DATA_PREP in present and not shares_data_prep(
            t.values, spec.fixed, declared
        )
    return Plan(folder, stages, present, declared, trials)


def job_for(trial: Trial, spec: SweepSpec, p: Plan) -> Job:
    """The trial's stages and parameters (routed per stage); a trial sharing the sweep's data
    prep skips 00_data_prep and gets a link to the shared dataset."""
    stages = [s for s in p.stages if trial.own_data_prep or s != DATA_PREP]
    if not trial.own_data_prep and (p.folder / SHARED / "dataset").is_dir():
        link_shared_dataset(p.folder, trial.name)
    routed = runner.split_params({**spec.fixed, **trial.values}, p.present, p.declared)
    return Job(trial.name, stages, {s: routed[s] for s in p.present if s in stages and routed[s]})


def run_sweep(
    spec: SweepSpec,
    engine: Callable[[Path, Path], Any],
    echo: Callable[[str], None] = print,
    thresholds: dm.Thresholds | None = None,
) -> dict[str, Any]:
    """Run the trials that have not finished yet, then write the summary and the report.

    ``engine(outputs, notebooks)`` builds a :class:`RayEngine` or :class:`LocalEngine`.
    """
    p = plan(spec)
    with locked(p.folder):
        summary = read_summary(p.folder)
        fixed = json.loads(json.dumps(spec.fixed, default=str))
        check_same_sweep(summary, p.stages, fixed, p.folder)
        earlier = trials_of(summary)
        summary = summary or {"sweep": spec.name, "created_at": _now(), "stages": p.stages}
        summary.update(fixed=fixed, data_prep=summary.get("data_prep"))
        record = {**earlier, **{t.name: earlier.get(t.name, t) for t in p.trials}}
        summary["swept"] = list(dict.fromkeys(k for t in record.values() for k in t.values))
        todo = to_run(p.trials, earlier, p.folder)

        def save() -> None:
            summary["trials"] = [asdict(t) for t in record.values()]
            write_summary(p.folder, summary)

        skipped = len(p.trials) - len(todo)
        echo(f"Sweep {spec.name}: {len(p.trials)} trials, {skipped} finished earlier (skipped), "
             f"{len(todo)} to run -> {p.folder}")  # fmt: skip
        save()
        if todo:
            run = engine(p.folder, spec.notebooks_dir)
            echo(f"Engine: {run.description}")
            if not _shared_data_prep(spec, p, todo, run, summary, echo):
                for t in todo:
                    if not t.own_data_prep:
                        record[t.name] = _failed(t, "the shared data prep failed (see above)")
                todo = [t for t in todo if t.own_data_prep]
            for t in todo:
                record[t.name] = Trial(t.name, t.values, own_data_prep=t.own_data_prep)
            save()
            jobs = [job_for(t, spec, p) for t in todo]
            for n, (job, result) in enumerate(run.map(jobs), 1):
                t = record[job.experiment]
                t.status, t.error = result["status"], result.get("error", "")
                t.seconds, t.finished_at = result.get("seconds"), _now()
                save()
                echo(_progress_line(n, len(jobs), t))
        echo(f"Sweep report: {write_sweep_report(p.folder, thresholds)}")
        return summary


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _shared_data_prep(spec, p: Plan, todo, run, summary, echo) -> bool:
    """Run 00_data_prep once in ``<sweep>/data_prep`` for the trials that share it."""
    if DATA_PREP not in p.present or all(t.own_data_prep for t in todo):
        return True
    done = (summary.get("data_prep") or {}).get("status") == "done"
    if done and (p.folder / SHARED / "dataset").is_dir():
        return True
    echo(f"Data prep once, shared by the trials: {p.folder / SHARED}")
    job = Job(SHARED, [DATA_PREP], data_prep_params(spec.fixed, p.declared))
    _, result = next(iter(run.map([job])))
    summary["data_prep"] = {"experiment": SHARED, **result}
    error = f": {result['error']}" if result.get("error") else ""
    echo(f"data prep: {result['status']} in {result.get('seconds') or 0:.0f} s{error}")
    return result["status"] == "done"


def _failed(trial: Trial, error: str) -> Trial:
    return Trial(trial.name, trial.values, "failed", error, 0.0, "", trial.own_data_prep)


def _progress_line(n: int, total: int, t: Trial) -> str:
    took = f"{t.seconds:.0f} s" if t.seconds is not None else "?"
    line = f"[{n}/{total}] {t.name}: {t.status} in {took}"
    return line + (f": {t.error.splitlines()[0]}" if t.error else "")


def _declared(notebooks_dir: Path) -> Callable[[str], set[str]]:
    cache: dict[str, set[str]] = {}

    def declared(stage: str) -> set[str]:
        if stage not in cache:
            cache[stage] = runner.declared_parameters(Path(notebooks_dir) / f"{stage}.ipynb")
        return cache[stage]

    return declared


# --- the report ------------------------------------------------------------------------------

RESULT_COLUMNS = ["status", "ships", "ready", "tier", "mel_ce", "text_ce", "best_tuned_mel_ce"]


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def trial_row(trial: Trial, folder: Path, thresholds: dm.Thresholds | None) -> dict[str, Any]:
    """One line of the sweep table: the trial's values, status and the matrix's decision."""
    from voicebook.report import analyse_experiment

    row: dict[str, Any] = {"trial": trial.name, **trial.values, "status": trial.status}
    row.update(seconds=trial.seconds, error=trial.error)
    exp = folder / trial.name
    if trial.status != "done" or not exp.is_dir():
        return row
    try:
        result = analyse_experiment(exp, thresholds)
    except Exception as exc:  # noqa: BLE001 - an unreadable notebook: say so, keep the others
        row["error"] = f"report: {type(exc).__name__}: {exc}"
        return row
    d = result.decision
    by_name = {c.name: c for c in result.candidates}
    tuned = [_num(c.mel_ce) for c in result.candidates if c.name != dm.BASE]
    row.update(
        ships=d.winner_label,
        ready=d.ready,
        tier=d.tier,
        mel_ce=_num(by_name[d.winner].mel_ce),
        text_ce=_num(by_name[d.winner].text_ce),
        best_tuned_mel_ce=min((m for m in tuned if m is not None), default=None),
    )
    return row


def sweep_table(folder: Path, thresholds: dm.Thresholds | None = None) -> pd.DataFrame:
    """Every trial of the sweep side by side: swept parameters as columns, then results."""
    summary = read_summary(folder) or {}
    trials = trials_of(summary).values()
    swept = summary.get("swept", [])
    rows = [trial_row(t, folder, thresholds) for t in trials]
    columns = ["trial", *swept, *RESULT_COLUMNS, "seconds", "error"]
    return pd.DataFrame(rows, columns=columns)


_TIER_RANK = {t: i for i, t in enumerate(dm.TIERS)}


def favoured(table: pd.DataFrame) -> tuple[str | None, str]:
    """The finished trial the evidence favours, and why in one sentence.

    Each trial's decision picks what it would ship; trials are ranked by that: ready to ship
    first, then the better tier, then the lower eval Mel CE of what ships, then the lower Mel CE
    of its best fine-tuned candidate (when every trial would ship the same base model).
    """
    done = table[(table["status"] == "done") & table["ships"].notna()]
    if done.empty:
        return None, "No trial has finished with a decision yet."

    def key(row: pd.Series) -> tuple:
        mel, tuned = _num(row["mel_ce"]), _num(row["best_tuned_mel_ce"])
        return (
            not bool(row["ready"]),
            _TIER_RANK.get(row["tier"], len(dm.TIERS)),
            math.inf if mel is None else mel,
            math.inf if tuned is None else tuned,
        )

    best = min(done.to_dict("records"), key=lambda r: key(pd.Series(r)))
    mel, tuned = _num(best["mel_ce"]), _num(best["best_tuned_mel_ce"])
    state = f"{'ready' if best['ready'] else 'not ready'}, tier {best['tier'] or 'unknown'}"
    why = (
        f"{best['trial']} would ship {best['ships']} ({state}, eval Mel CE {_fmt(mel)}): "
        f"the best of {len(done)} finished trials by readiness, tier, then eval Mel CE"
    )
    if len(done) > 1 and (done["mel_ce"] == best["mel_ce"]).all():
        why += f", then its best fine-tuned model's eval Mel CE ({_fmt(tuned)})"
    return best["trial"], why + "."


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def sweep_figure(table: pd.DataFrame) -> go.Figure | None:
    """Eval Mel CE of each finished trial (what it ships, and its best fine-tuned model)."""
    done = table[table["status"] == "done"]
    if done.empty:
        return None
    fig = go.Figure()
    for column, name in (("mel_ce", "ships"), ("best_tuned_mel_ce", "best fine-tuned")):
        fig.add_bar(x=done["trial"], y=done[column], name=f"eval Mel CE ({name})")
    fig.update_layout(barmode="group", yaxis_title="eval Mel CE", height=380)
    return fig


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em;display:block;overflow-x:auto}
th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f3f3f3} .favoured{background:#eef6ee;padding:1em 1.5em;border-radius:6px}
"""
_LEGEND = (
    "ships = what the trial's decision matrix recommends; mel_ce / text_ce are its eval losses; "
    "best_tuned_mel_ce = the lowest eval Mel CE of the trial's fine-tuned candidates."
)


def _table_html(df: pd.DataFrame) -> str:
    def cell(x: Any) -> Any:
        if not isinstance(x, (list, dict)) and pd.isna(x):
            return "—"
        return f"{x:.4g}" if isinstance(x, float) else x

    return df.astype(object).map(cell).to_html(index=False, border=0)


def render_sweep_report(folder: Path, thresholds: dm.Thresholds | None = None) -> str:
    """The sweep's page: the favoured trial, every trial side by side, a Mel CE chart."""
    esc = html.escape
    summary = read_summary(folder) or {}
    table = sweep_table(folder, thresholds)
    winner, why = favoured(table)
    counts = ", ".join(f"{v} {k}" for k, v in table["status"].value_counts().items())
    figure = sweep_figure(table)
    shared = (summary.get("data_prep") or {}).get("status", "not run")
    generated = datetime.now().isoformat(timespec="seconds")
    how = (
        f"Stages: {', '.join(summary.get('stages', []))}; fixed parameters: "
        f"{json.dumps(summary.get('fixed', {}), ensure_ascii=False)}; shared data prep: {shared}. A trial's own "
        f"report: voicebook run --experiment TRIAL --stages decision --outputs-dir {folder}"
    )
    sections = [
        f"<h1>Sweep report — {esc(folder.name)}</h1>",
        f"<p>Generated {generated}; trials: {esc(counts or 'none')}.</p>",
        f'<div class="favoured"><h2>Favoured: {esc(winner or "none yet")}</h2>',
        f"<p>{esc(why)}</p></div>",
        "<h2>Every trial</h2>",
        _table_html(table),
        f"<p>{esc(_LEGEND)}</p>",
        figure.to_html(full_html=False) if figure else "<p>No finished trial yet.</p>",
        f"<h2>How it ran</h2><p>{esc(how)}</p>",
    ]
    head = f'<meta charset="utf-8"><title>voicebook sweep — {esc(folder.name)}</title>'
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head>{head}<style>{_STYLE}</style></head>'
        f"<body>\n{body}\n</body></html>\n"
    )


def write_sweep_report(folder: Path, thresholds: dm.Thresholds | None = None) -> Path:
    """Write ``sweep_report.html`` atomically; the previous one is kept as ``*.prev.html``."""
    path = Path(folder) / REPORT_NAME
    page = render_sweep_report(Path(folder), thresholds)
    if path.exists():
        path.replace(path.with_suffix(".prev.html"))
    return _write_atomic(path, page)


def live_table(
    name: str,
    outputs_dir: str | os.PathLike | None = None,
    thresholds: dm.Thresholds | None = None,
    every_seconds: float = 10.0,
    max_minutes: float = 60.0,
) -> pd.DataFrame:
    """Show the sweep's table in a notebook, refreshed while trials are pending (for at most
    ``max_minutes``: a driver that died leaves trials pending for ever)."""
    from IPython.display import display

    folder = sweep_dir(name, outputs_dir)
    handle = display(pd.DataFrame(), display_id=True)
    deadline = time.monotonic() + max_minutes * 60
    while True:
        table = sweep_table(folder, thresholds)
        handle.update(table)
        if not (table["status"] == "pending").any() or time.monotonic() > deadline:
            return table
        time.sleep(every_seconds)


# --- the command -----------------------------------------------------------------------------


def parse_args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser(
        prog="voicebook sweep",
        description="Run a grid of experiments (one per trial) on Ray and compare them.",
    )
    parser.add_argument("--name", required=True, help="outputs/<name>/ holds the whole sweep")
    parser.add_argument(
        "-p",
        "--param",
        nargs="+",
        action="append",
        default=[],
        metavar="KEY VALUE",
        help="KEY V1 [V2 ...]: one value is fixed, several are a grid axis",
    )
    parser.add_argument("--trials", help="YAML list of parameter sets, one per trial")
    parser.add_argument("-f", "--params-file", action="append", default=[], help="fixed params")
    parser.add_argument("--stages", nargs="+", help=f"default all: {' '.join(runner.STAGES)}")
    parser.add_argument("--address", help="a running Ray cluster (default: Ray starts here)")
    parser.add_argument("--gpus-per-trial", type=float, help="default 1 with GPUs, else 0")
    parser.add_argument("--cpus-per-trial", type=float, default=CPUS_PER_TRIAL)
    parser.add_argument("--outputs-dir", help="default $VOICEBOOK_OUTPUTS or outputs/")
    return parser.parse_args(argv)


def spec_from_args(args) -> SweepSpec:
    fixed: dict[str, Any] = {}
    for file in args.params_file:
        fixed.update(runner.load_params_file(file))
    axes = []
    for key, *values in args.param:
        if not values:
            raise SweepError(f"-p {key} needs a value.")
        if len(values) == 1:
            fixed[key] = runner.parse_value(values[0])
        else:
            axes.append((key, [runner.parse_value(v) for v in values]))
    listed = load_trials(args.trials) if args.trials else None
    parameter_sets = combine(listed, expand_grid(axes))
    for values in parameter_sets:
        for key in values:
            fixed.pop(key, None)  # a swept value wins over the same fixed one
    return SweepSpec(args.name, parameter_sets, fixed, args.stages, args.outputs_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        spec = spec_from_args(args)

        def engine(outputs: Path, notebooks: Path) -> RayEngine:
            return RayEngine(
                outputs, notebooks, args.address, args.gpus_per_trial, args.cpus_per_trial
            )

        summary = run_sweep(spec, engine)
    except (SweepError, runner.RunnerError, FileNotFoundError, ValueError) as exc:
        print(f"voicebook: {exc}", file=sys.stderr)
        return 2
    failed = [t["name"] for t in summary["trials"] if t["status"] != "done"]
    if failed:
        print(
            f"{len(failed)} trial(s) failed: {', '.join(failed)}; run the same command again "
            "to retry only them.",
            file=sys.stderr,
        )
        return 1
    return 0
