"""Unknown notebook parameters fail, however the notebook runs.

papermill puts the ``-p`` / ``-f`` values in a cell of its own ("injected-parameters", whose
source starts with ``# Parameters``) right after the notebook's parameters cell, and runs it
whatever names it holds: a misspelt ``-p lrr 1e-6`` would define a variable that nothing reads,
and the stage would run at the default ``lr``. A kernel cannot see its notebook, but it keeps the
source of every cell it ran (IPython's ``In``), so the first cell after the parameters checks
the names papermill injected against the names the stage's parameters cell declares
(``check_parameters``). Runs that inject nothing (JupyterLab, nbmake) have nothing to check.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voicebook.core.paths import NOTEBOOKS_DIR

INJECTED_MARK = "# Parameters"  # papermill's translator starts its injected cell with this


class UnknownParameterError(NameError):
    """A papermill parameter that the notebook's parameters cell does not declare."""


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at top level (``x = ...``, ``x: int = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def injected_names(history: Sequence[str]) -> tuple[list[str], int] | None:
    """The names in papermill's injected cell among the cells run so far, and its position in
    ``history`` (the latest such cell), or None when papermill injected nothing."""
    for i in range(len(history) - 1, -1, -1):
        if str(history[i]).lstrip().startswith(INJECTED_MARK):
            return assigned_names(str(history[i])), i
    return None


def declared_parameters(stem: str, notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[str]:
    """The names the parameters cell of ``<notebooks_dir>/<stem>.ipynb`` declares (papermill
    reads them); none when there is no such notebook."""
    import papermill

    path = Path(notebooks_dir) / f"{stem}.ipynb"
    return list(papermill.inspect_notebook(str(path))) if path.is_file() else []


def unknown_message(unknown: list[str], declared: list[str], where: str) -> str:
    lines = [f"{where} declares no parameter named " + ", ".join(repr(u) for u in unknown) + "."]
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no close name."
        lines.append(f"  {name!r}: {hint}")
    lines.append(f"Declared: {', '.join(declared)}. Fix the -p / -f name and run it again.")
    return "\n".join(lines)


def check_parameters(namespace: Mapping[str, Any], stem: str = "") -> list[str]:
    """Raise ``UnknownParameterError`` when papermill injected a name that the parameters cell
    does not declare, naming it and the closest declared names. Returns the injected names.

    ``namespace`` is the notebook's ``globals()``. The declared names are those of the stage's
    notebook in ``notebooks/`` (``stem``) and of the cell that ran just before the injected one
    (the parameters cell, in papermill's order), so a notebook copied elsewhere is checked too.
    """
    found = injected_names(namespace.get("In") or namespace.get("_ih") or [])
    if found is None:
        return []
    injected, position = found
    history = namespace.get("In") or namespace.get("_ih") or []
    before = assigned_names(str(history[position - 1])) if position > 0 else []
    declared = list(dict.fromkeys([*(declared_parameters(stem) if stem else []), *before]))
    unknown = [n for n in injected if n not in declared]
    if unknown and declared:  # nothing declared found: no basis to refuse anything
        where = f"{stem}'s parameters cell" if stem else "The parameters cell"
        raise UnknownParameterError(unknown_message(unknown, declared, where))
    return injected
