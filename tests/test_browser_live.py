"""A phase re-run in JupyterLab with new parameters, in a real browser (issue 36): its progress
bar counts its own steps from 0, and its live chart draws its points in the page (headless
Chromium, Debian's; the harness is ``tests/jupyter_browser.py``). Set
``VOICEBOOK_SCREENSHOTS=<folder>`` to keep a screenshot of the training cell."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from jupyter_browser import Notebook, browser_available, chromium, copy_notebook, jupyter_lab

from voicebook.dataprep.demo import write_demo_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]
# keep_best 1: one kept model, so no selection pass (its own tests: test_training_runs)
FIRST = {"experiment": '"live"', "lr": "1e-3", "max_steps": "6", "eval_every": "3",
         "batch_size": "2", "epochs": "10", "keep_best": "1"}  # fmt: skip
SECOND = {**FIRST, "lr": "5e-4", "max_steps": "4", "eval_every": "2"}


def edited(source: str, values: dict[str, str]) -> str:
    """A parameters cell's ``source`` with the lines of ``values`` set, as a person edits it."""
    for name, value in values.items():
        source = re.sub(rf"^{name} = [^#\n]*", f"{name} = {value}  ", source, flags=re.MULTILINE)
    return source


def parameters_cell(path: Path) -> dict:
    nb = json.loads(path.read_text())
    return next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))


def set_parameters(path: Path, values: dict[str, str]) -> None:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = edited("".join(cell["source"]), values)
    path.write_text(json.dumps(nb))


def chart_points(cell) -> list[int]:
    """Points per trace of the plotly chart drawn in ``cell``'s output, as the page holds them."""
    return cell.locator(".js-plotly-plot").first.evaluate(
        "gd => gd.data.map(t => (t.x || []).length)"
    )


def test_a_phase_rerun_with_new_parameters_counts_its_own_steps_and_draws_its_chart(tmp_path):
    root, outputs = tmp_path / "lab", tmp_path / "outputs"
    write_demo_dataset(outputs / "live" / "dataset", 12, 3)
    notebook = copy_notebook("01_phase1.ipynb", root)
    set_parameters(notebook, FIRST)
    env = {"VOICEBOOK_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1"}
    with jupyter_lab(root, env) as url, chromium(1280, 900) as page:
        nb = Notebook(page, url.format(path=notebook.name))
        nb.run_all(timeout=600)
        training = nb.cell(nb.code_cell_index("training.live_view"))
        assert sum(chart_points(training)) > 0
        # a person changes lr and max_steps in the parameters cell, then runs all again
        nb.cell(1).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(edited("".join(parameters_cell(notebook)["source"]), SECOND))
        nb.run_all(timeout=600)
        text = nb.output_text(nb.code_cell_index("training.live_view"))
        assert "Parameters differ from the earlier phase1 run" in text
        bar = re.search(r"Phase\s1:.*?(\d+)/(\d+|\?)", text, re.DOTALL)
        assert bar and bar.groups() == ("4", "4"), text[:500]
        points = chart_points(nb.cell(nb.code_cell_index("training.live_view")))
        assert points[0] == 4 and points[1] >= 2, points  # train steps, eval points (Mel CE)
        assert "CUDNN" not in text and "Model has" not in text
        folder = os.environ.get("VOICEBOOK_SCREENSHOTS")
        if folder:
            training.screenshot(path=str(Path(folder) / "phase1_rerun_live_after.png"))
