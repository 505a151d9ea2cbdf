"""The one place that talks to scrapbook: publish a stage's results, read them back.

A stage publishes its results with ``publish(experiment_path, stage, {name: value})``: each value
is glued into the running notebook (so ``sb.read_notebook("out.ipynb").scraps`` works for whoever
asks, wherever papermill wrote that notebook) and the same values are recorded, with when the
stage ran, in ``<experiment>/results/<stage>.json``. That record is what the report reads: it is
written by the kernel that ran the stage, so the latest run of each stage reaches the report
whichever way it ran (``voicebook run``, plain papermill with any output path, Run All in
JupyterLab). What a run is (``voicebook.core.runs``): a whole-notebook run is a new run, and the
record of the earlier one moves to ``results/history/`` (nothing lost); a cell run on its own
in a fresh kernel adds its scraps to the stage's latest run and says so (never wiping it). The
record also holds the run's id, start, parameters, and what it read and wrote.

scrapbook's pandas encoder needs pyarrow and its papermill dataframe helper is broken on
pandas 2+, so DataFrames travel as JSON (``orient="split"``) and are rebuilt on read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scrapbook as sb

from voicebook.core import runs
from voicebook.core.fileio import to_history, write_json_atomic
from voicebook.core.stages import checked

_DF_MARK = "__voicebook_dataframe__"
RESULTS_DIR = runs.RESULTS_DIR


def _jsonable(value: Any) -> Any:
    """Turn numpy / pandas / Path values into plain JSON values (NaN becomes None)."""
    if isinstance(value, pd.DataFrame):
        return {_DF_MARK: json.loads(value.to_json(orient="split", date_format="iso"))}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        if _DF_MARK in value:
            split = value[_DF_MARK]
            return pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """Record ``value`` in the running notebook under ``name`` (JSON-encoded; strings as text,
    since scrapbook's JSON encoder would try to parse them)."""
    value = _jsonable(value)
    sb.glue(name, value, encoder="text" if isinstance(value, str) else "json", display=display)


def read_scraps(notebook: str | Path) -> dict[str, Any]:
    """Every scrap glued in an executed notebook, with DataFrames rebuilt."""
    path = Path(notebook)
    if not path.exists():
        raise FileNotFoundError(f"No executed notebook at {path}: run that stage first.")
    return {k: _restore(v) for k, v in sb.read_notebook(str(path)).scraps.data_dict.items()}


record_path = runs.record_path
_read_record = runs.read_record


def publish(experiment_path: str | Path, stage: str, values: dict[str, Any]) -> Path:
    """Glue ``values`` into the running notebook and record them for the report (module doc).

    Every name must be in the stage's contract (``voicebook.core.stages``). Returns the record path.
    """
    from voicebook.core.stages import stage as contract

    unknown = sorted(set(values) - set(contract(stage).scraps))
    if unknown:
        raise KeyError(
            f"{stage} publishes {unknown}, which its contract in voicebook/stages.py does not "
            f"name ({', '.join(contract(stage).scraps)}): add them there first."
        )
    for name, value in values.items():
        glue(name, value)
    path = record_path(experiment_path, stage)
    record = _next_record(path, stage, sorted(values))
    record["updated"] = runs.now()
    record["scraps"].update(_jsonable(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, record, indent=1)  # a kill never leaves half a record


def _next_record(path: Path, stage: str, names: list[str]) -> dict[str, Any]:
    """The record this publish goes into: the current run's (a record of another run moves to
    history), or the stage's latest run, which it adds to, for a cell run on its own: in a kernel
    that started no run of the stage, or in a run that has not yet published the stage's first
    scrap (03's setup cell, then its codebook cell, after a restart)."""
    from voicebook.core.stages import stage as contract

    record = _read_record(path)
    run = runs.current(stage)
    opens = contract(stage).scraps[0]  # what only a whole run publishes (eval_table, ...)
    if record and (run is None or (record.get("run_id") != run.id and opens not in names)):
        record.setdefault("amended", []).append({"at": runs.now(), "scraps": names})
        print(
            f"Cell run on its own: {', '.join(names)} added to the {stage} run "
            f"{record.get('run_id')} of {record.get('started')} (its other results kept)."
        )
        return record
    if run is None:  # nothing to add to: a run of its own
        return {"stage": stage, "run_id": runs.new_id(), "started": runs.now(), "scraps": {}}
    if record.get("run_id") != run.id:
        _to_history(path, record)
        record = {"stage": stage, "scraps": {}}
    return record | _jsonable(run.header())


def _to_history(path: Path, record: dict[str, Any]) -> None:
    """The replaced run's record, as ``history/<stage>.<updated>.<run id>.json`` (lineage finds
    a run's record there by its id)."""
    if not record:
        return
    stamp = str(record.get("updated", "")).replace(":", "").replace("-", "")
    to_history(path, f"{path.stem}.{stamp}.{record.get('run_id', 'old')}.json")


def read_records(experiment_path: str | Path) -> dict[str, dict[str, Any]]:
    """``{stage: record}`` of every stage recorded in the experiment (scraps not yet restored)."""
    folder = Path(experiment_path) / RESULTS_DIR
    return {p.stem: _read_record(p) for p in sorted(folder.glob("*.json"))}


def read_experiment(experiment_path: str | Path) -> dict[str, dict[str, Any]]:
    """The latest results of every stage of an experiment, keyed by stage (notebook stem).

    A stage's record in ``results/`` is its latest run, however it ran. A stage with no record
    (run before records existed, or an executed notebook copied in) falls back to the executed
    notebook ``<experiment>/notebooks/<stage>.ipynb`` that the runner writes.
    """
    scraps = {
        stage: _restore(r.get("scraps", {})) for stage, r in read_records(experiment_path).items()
    }
    folder = Path(experiment_path) / "notebooks"
    for notebook in sorted(folder.glob("*.ipynb")):
        if notebook.stem not in scraps:
            scraps[notebook.stem] = read_scraps(notebook)
    return checked(dict(sorted(scraps.items())))


def _running_here(experiment_path: str | Path, stage: str) -> dict[str, Any] | None:
    """The run of ``stage`` on this experiment that this kernel is running now, when it has not
    published yet (04 writes its report before its record): that run, not the previous one,
    is where the report comes from."""
    run = runs.current(stage)
    if run is None or not run.experiment:
        return None
    if Path(run.experiment).resolve() != Path(experiment_path).resolve():
        return None
    return {**run.header(), "updated": "(running now)"}


def run_params(experiment_path: str | Path, stage: str) -> dict[str, Any]:
    """The parameters the latest recorded run of ``stage`` ran with ({} when none is recorded)."""
    record = read_records(experiment_path).get(stage) or {}
    return record.get("params") or {}


def provenance(experiment_path: str | Path) -> list[dict[str, Any]]:
    """Where each stage's numbers came from: one row per recorded stage, with when it ran and
    its key parameters (``voicebook.core.stages``), for the report."""
    from voicebook.core.stages import BY_STEM, STAGES, PhaseScraps

    records = read_records(experiment_path)
    for s in STAGES:  # a run in this kernel that has not published yet is the latest
        running = _running_here(experiment_path, s.stem)
        if running and running["run_id"] != records.get(s.stem, {}).get("run_id"):
            records[s.stem] = running
    rows = []
    for stage, record in records.items():
        published = PhaseScraps(stage, record.get("scraps", {}))  # the phases' reads; None else
        params = published.params or record.get("params") or {}
        keys = BY_STEM[stage].key_params if stage in BY_STEM else ()
        shown = {k: params[k] for k in keys if k in params and params[k] not in ("", None)}
        rows.append(
            {
                "stage": stage,
                "run": record.get("run_id", ""),
                "ran": record.get("started", ""),
                "recorded": record.get("updated", ""),
                "parameters": ", ".join(f"{k}={v}" for k, v in shown.items()),
                "parent": published.parent_checkpoint or "",
            }
        )
    return rows


def ran_at(provenance_rows: list[dict[str, Any]]) -> dict[str, str]:
    """``{stage: when its latest run started}`` from ``provenance``'s rows."""
    return {row["stage"]: row["ran"] for row in provenance_rows}
