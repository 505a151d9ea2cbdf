"""The notebooks keep the conventions the runner and papermill rely on."""

import ast
import json

import papermill
import pytest

from voicebook.core.paths import NOTEBOOKS_DIR
from voicebook.runner import STAGES

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
TOOLS = {"05_sweep_report": {"sweep", "outputs_dir"}}  # notebooks that are not stages


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_every_stage_has_its_notebook():
    assert [p.stem for p in NOTEBOOKS if p.stem not in TOOLS] == list(STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter_of_the_parameters_cell(path):
    tagged = [c for c in _cells(path) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assigned = {
        node.targets[0].id
        for node in ast.parse("".join(tagged[0]["source"])).body
        if isinstance(node, ast.Assign)
    }
    # papermill silently drops a line it cannot parse (e.g. '=' in a comment): the runner
    # would then reject that parameter as unknown.
    assert set(papermill.inspect_notebook(str(path))) == assigned
    assert TOOLS.get(path.stem, {"experiment", "outputs_dir"}) <= assigned


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_thin_use_the_voicebook_kernel_and_carry_no_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "voicebook"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None
            if "parameters" not in cell["metadata"].get("tags", []):  # declarations, not logic
                assert len("".join(cell["source"]).strip().splitlines()) <= 15
