"""What a sweep is (axes and listed trials as Tune's ``param_space``, fixed parameters, stages),
readable trial names, ``sweep.json``, and one driver per sweep."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from voicebook.core.fileio import exclusive, write_text_atomic
from voicebook.core.paths import outputs_root
from voicebook.core.runs import read_record

SPEC_NAME, LOCK_NAME = "sweep.json", "sweep.lock"
SHARED = "data_prep"  # the sweep's shared experiment: 00_data_prep runs there, once
LISTED = "trial"  # the param_space key of --trials' list: a grid over whole parameter sets
MAX_NAME = 100  # longer trial names end in a hash instead (file systems allow 255 bytes)
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SweepError(RuntimeError):
    """A problem with what was asked of the sweep (name, grid, a changed sweep)."""


@dataclass
class SweepSpec:
    name: str
    axes: dict[str, list[Any]] = field(default_factory=dict)  # -p KEY V1 V2 ...: a grid axis
    listed: list[dict[str, Any]] = field(default_factory=list)  # --trials: whole parameter sets
    fixed: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None
    outputs_dir: str | None = None
    notebooks_dir: str | None = None  # None: the stage notebooks of the code Ray ships

    def __post_init__(self) -> None:
        if not _NAME_OK.match(self.name or "") or self.name == SHARED:
            raise SweepError(
                f"Sweep name {self.name!r} is not usable as a folder name: start with a letter "
                f"or digit; use letters, digits, '.', '+', '-' or '_' (and not {SHARED!r})."
            )

    @property
    def folder(self) -> Path:
        return outputs_root(self.outputs_dir) / self.name

    def param_space(self) -> dict[str, Any]:
        """Tune expands the grid: each axis, and the listed sets as one more axis."""
        from ray import tune

        space: dict[str, Any] = {k: tune.grid_search(v) for k, v in self.axes.items()}
        return {**space, LISTED: tune.grid_search(self.listed)} if self.listed else space


TUNE_DIR = "tune"  # Tune's experiment (its state, each trial's results) in the sweep folder


def tune_path(folder: Path | str, storage: str | None = None) -> str:
    """Where Tune keeps the sweep's experiment: ``storage`` (a URI on a cluster) or the sweep
    folder, absolute (Tune cannot restore or read results from a relative path)."""
    return f"{(storage or str(Path(folder).resolve())).rstrip('/')}/{TUNE_DIR}"


def values_of(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameter values from its Tune config: the listed set, then the axes."""
    return {**config.get(LISTED, {}), **{k: v for k, v in config.items() if k != LISTED}}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def trial_name(sweep: str, values: dict[str, Any]) -> str:
    """``lr_grid`` + ``{"phase1.lr": 1e-6}`` → ``lr_grid__phase1.lr-1e-06``: readable and safe as
    a folder name. A name the cleaning changed (``a/b`` → ``a_b``, which a real ``a_b`` could
    clash with) or too long ends in a hash of the values, so names stay distinct."""
    clean = {x: re.sub(r"[^A-Za-z0-9.+-]+", "_", _text(x)).strip("_") or "empty"
             for pair in values.items() for x in map(_text, pair)}  # fmt: skip
    name = "__".join([sweep, *(f"{clean[_text(k)]}-{clean[_text(v)]}" for k, v in values.items())])
    name = name if values else f"{sweep}__default"
    if len(name) > MAX_NAME or any(k != v for k, v in clean.items()):
        digest = json.dumps(values, sort_keys=True, default=str).encode()
        name = f"{name[: MAX_NAME - 9]}-{hashlib.sha1(digest).hexdigest()[:8]}"
    return name


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def sweep_record(folder: Path) -> dict[str, Any]:
    """``sweep.json`` of the sweep in ``folder`` ({} before its first run)."""
    return read_record(Path(folder) / SPEC_NAME, fix="fix or remove it")


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    text = json.dumps({**record, "updated_at": now()}, indent=2, default=str, ensure_ascii=False)
    return write_text_atomic(Path(folder) / SPEC_NAME, text)


def same_sweep(before: dict | None, spec: SweepSpec, stages: list[str]) -> dict[str, Any]:
    """``sweep.json``'s content; a sweep's finished trials are only comparable with new ones run
    the same way, so other axes, trials, fixed parameters or stages are refused."""
    keys = {"stages": stages, "axes": spec.axes, "listed": spec.listed, "fixed": spec.fixed}
    asked = json.loads(json.dumps({"sweep": spec.name, **keys}, default=str))
    was = {k: (before or {}).get(k) for k in keys}
    if before and was != {k: asked[k] for k in keys}:
        raise SweepError(
            f"Sweep at {spec.folder} ran with {was}; this run asks for "
            f"{ {k: asked[k] for k in keys} }. Give it another --name, or move that folder away."
        )
    return {**(before or {"created_at": now()}), **asked}


def locked(folder: Path):
    """One driver per sweep (a lock file that holds on NFS too)."""
    return exclusive(Path(folder), LOCK_NAME, "`voicebook sweep`")
