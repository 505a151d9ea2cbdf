"""The one place that talks to scrapbook: glue a stage's results, read them back.

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

_DF_MARK = "__voicebook_dataframe__"


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


def read_experiment(experiment_path: str | Path) -> dict[str, dict[str, Any]]:
    """Scraps of every executed stage notebook of an experiment, keyed by notebook stem.

    Reads ``<experiment>/notebooks/*.ipynb`` (where the runner writes them).
    """
    folder = Path(experiment_path) / "notebooks"
    return {p.stem: read_scraps(p) for p in sorted(folder.glob("*.ipynb"))}
