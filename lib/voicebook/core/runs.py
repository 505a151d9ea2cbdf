"""A stage run: its identity, the parameters it ran with, what it read and what it wrote.

A run starts in the first code cell of a stage notebook (``start_run(stem, globals())``, right
after the parameters cell and papermill's injected cell) and lasts until its last publish, in
whatever way the notebook runs: ``voicebook run``, plain papermill, Run All in JupyterLab. A
whole-notebook run, in a fresh kernel or the same one, runs that cell again and so is a new run.
A cell run on its own (say 03's listening results after a kernel restart) finds no run started
in its kernel, or one that has not published the stage's first scrap (03's setup cell ran, then
its codebook cell): what it publishes is added to the stage's latest run (``voicebook.core.scraps``).

While a run is current, the library notes what the stage read (``read_input``: the dataset, the
checkpoint a phase starts from, each candidate the evaluation scores) by path, content digest
and the run of the stage that produced it, and what it wrote (``wrote``). ``voicebook.core.scraps``
stores both in the stage's record; ``voicebook.core.lineage`` compares them with the latest runs to
tell which numbers rest on runs that have since been replaced.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from voicebook.core.parameters import check_parameters, declared_parameters

RESULTS_DIR = "results"
# A file's digest reads it whole up to this size, else its size and three samples of this size
# (start, middle, end): a 1.8 GB checkpoint is recognised in milliseconds, and training changes
# bytes everywhere in it.
SAMPLE_BYTES = 4 << 20


@dataclass
class Run:
    stage: str  # the notebook stem, e.g. "01_phase1"
    id: str
    started: str
    params: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""  # the experiment folder the run writes into
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        """The run's part of its stage record."""
        out = asdict(self)
        out["run_id"] = out.pop("id")
        out.pop("experiment")
        return out


_CURRENT: dict[str, Run] = {}  # stem -> the run this kernel (process) started


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def stem_of(stage: str) -> str:
    """The notebook stem of ``stage``, given as a stem or a short name ("phase1")."""
    from voicebook.core.stages import STAGES

    for s in STAGES:
        if stage in (s.stem, s.short):
            return s.stem
    return stage


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def start_run(stem: str, namespace: dict[str, Any]) -> Run:
    """Begin a run of ``stem`` in this kernel: refuse unknown papermill parameters
    (``voicebook.core.parameters``), then note the id, the start and the parameters' values."""
    from voicebook.core.paths import experiment_dir

    check_parameters(namespace, stem)
    declared = declared_parameters(stem)
    params = _plain({n: namespace[n] for n in declared if n in namespace})
    where = ""
    if namespace.get("experiment"):
        where = str(experiment_dir(namespace["experiment"], namespace.get("outputs_dir") or None))
    run = Run(stem, new_id(), now(), params, where)
    _CURRENT[stem] = run
    return run


def current(stage: str) -> Run | None:
    """The run of ``stage`` this kernel started, or None (a cell run on its own, a test)."""
    return _CURRENT.get(stem_of(stage))


def forget(stage: str) -> None:
    _CURRENT.pop(stem_of(stage), None)


# --- records ------------------------------------------------------------------------------


def record_path(experiment_path: str | Path, stage: str) -> Path:
    return Path(experiment_path) / RESULTS_DIR / f"{stem_of(stage)}.json"


RERUN = "re-run that stage, or move the file away to fall back to its executed notebook"


def read_record(path: Path, fix: str = RERUN) -> dict[str, Any]:
    """The JSON record at ``path`` ({} when there is none); one that is not valid JSON is an
    error naming the file and ``fix``."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"The record {path} is not valid JSON ({exc}): {fix}.") from exc


def latest_run(experiment_path: str | Path, stage: str) -> dict[str, Any]:
    """``{run_id, started, params, outputs}`` of the latest recorded run of ``stage``."""
    record = read_record(record_path(experiment_path, stage))
    return {k: record[k] for k in ("run_id", "started", "params", "outputs") if k in record}


def made_by(run: dict[str, Any], path: str | Path) -> bool:
    """Whether ``path`` is one of ``run``'s outputs, inside one (an export folder) or beside one
    (another checkpoint of the same run folder), links followed (a sweep trial's ``dataset`` is a
    link to the shared data prep's). A run that recorded no outputs: assumed."""
    outputs = [
        Path(o["path"]).resolve() for o in (run.get("outputs") or {}).values() if o.get("path")
    ]
    path = Path(path).resolve()
    return not outputs or any(
        path == o or path.is_relative_to(o) or path.parent == o.parent for o in outputs
    )


def producing_experiment(experiment: str | Path, producer: str, path: str | Path) -> Path:
    """The experiment folder whose runs of ``producer`` made ``path``: the one ``path`` really
    lives in when that is another (a sweep trial's ``dataset`` links to the sweep's shared data
    prep, whose run lineage then follows), else this one."""
    own, real = Path(experiment), Path(path).resolve()
    if not real.is_relative_to(own.resolve()):
        for folder in list(real.parents)[:3]:
            if record_path(folder, producer).is_file() and made_by(
                latest_run(folder, producer), real
            ):
                return folder
    return own


# --- what a run read and wrote --------------------------------------------------------------


def sampled_digest(path: Path) -> str:
    """sha256 of a file's size and three samples of its bytes: cheap enough for every input of
    every run, and it changes when a file is rewritten (``fileio.file_digest`` reads it all)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= 3 * SAMPLE_BYTES:
            h.update(f.read())
        else:
            for offset in (0, size // 2, size - SAMPLE_BYTES):
                f.seek(offset)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def content_digest(path: str | Path) -> str | None:
    """A digest of a file's or a folder's content (names and bytes; links followed; hidden
    files left out), or None when the path does not exist."""
    path = Path(path)
    if path.is_file():
        return sampled_digest(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = item.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{sampled_digest(item)}\0".encode())
    return h.hexdigest()


def read_input(
    stage: str, name: str, path: str | Path | None, producer: str | None = None
) -> dict[str, Any] | None:
    """Note that the current run of ``stage`` read ``path`` (made by the latest run of
    ``producer``, when a stage made it). Without a current run, nothing is noted."""
    run = current(stage)
    if run is None or path is None:
        return None
    entry: dict[str, Any] = {"path": str(path), "digest": content_digest(path)}
    if producer and run.experiment:
        where = producing_experiment(run.experiment, producer, path)
        latest = latest_run(where, producer)
        entry["stage"] = stem_of(producer)
        if where.resolve() != Path(run.experiment).resolve():
            entry["experiment"] = str(where)  # lineage follows the run there (a sweep's data prep)
        if made_by(latest, path):
            entry |= {k: latest[k] for k in ("run_id", "started") if k in latest}
        else:  # made by an earlier run (a search reused after its phase re-ran): stale already
            entry["not_latest"] = latest.get("started", "")
    run.inputs[name] = entry
    return entry


def wrote(stage: str, name: str, path: str | Path | None) -> None:
    """Note that the current run of ``stage`` wrote ``path`` (a checkpoint, the dataset)."""
    run = current(stage)
    if run is not None and path is not None:
        run.outputs[name] = {"path": str(path), "digest": content_digest(path)}
