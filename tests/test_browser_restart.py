"""The listening cells of 03 after a kernel restart, in JupyterLab with Chromium at 1280 px.

A cheap experiment named ``rt`` (short WAVs as its samples: no synthesis) is rated in the panel.
Then the kernel restarts and a person does what the page says:

- the dead panel takes a click anywhere on it, and "x" or "d d" typed then cut no cell;
- the panel cell alone refuses (this kernel does not know the experiment) and opens no other
  experiment: no ``outputs/demo`` appears;
- the results cell alone refuses the same way; the decision report still shows every rating
  on disk (it reads the ratings file, not the last summary the results cell published);
- the parameters cell, then the panel cell, as the banner says: the rater resumes on ``rt``.

``VOICEBOOK_SCREENSHOTS=<folder>`` keeps a screenshot of each step (docs/restart_*.png).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from jupyter_browser import Notebook, browser_available, chromium, copy_notebook, jupyter_lab

from voicebook.evaluation.listening import session as ls

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]
NOTEBOOK = "03_evaluation.ipynb"
TIMEOUT_MS = 30_000
STEPS = 3  # ratings given before the restart


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def screenshot(target, name: str) -> None:
    folder = os.environ.get("VOICEBOOK_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / f"restart_{name}.png"))


def rated_experiment(outputs: Path) -> Path:
    """``outputs/rt``: two candidates' samples of two sentences (short beeps) and their
    evaluation table, as 03 leaves them."""
    exp = outputs / "rt"
    (exp / "eval" / "samples").mkdir(parents=True)
    rows = []
    for i, candidate in enumerate(("base", "phase1")):
        for sid, text in (("s1", "Hol van Budapest?"), ("s2", "Ki volt az.")):
            wav = f"samples/{candidate}_{sid}.wav"
            frames = 6000 * (i + 1)  # 0.25 s and 0.5 s of "speech": lengths that would tell
            sf.write(exp / "eval" / wav, 0.1 * np.sin(np.linspace(0, 900, frames)), 24000)
            rows.append([candidate, sid, text, wav])
    pd.DataFrame(rows, columns=["candidate", "sentence_id", "text", "wav"]).to_csv(
        exp / "eval" / "samples.csv", index=False
    )
    return exp


def notebook_on(root: Path, experiment: str) -> None:
    """03 with ``experiment`` in its parameters cell, as a user sets it."""
    path = copy_notebook(NOTEBOOK, root)
    notebook = json.loads(path.read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    named = f'experiment = "{experiment}"'
    cell["source"] = re.sub(r'^experiment = "\w+"', named, source, count=1, flags=re.MULTILINE)
    path.write_text(json.dumps(notebook, indent=1))


def test_after_a_restart_the_listening_cells_never_use_another_experiment(tmp_path):
    outputs, root = tmp_path / "outputs", tmp_path / "lab"
    exp = rated_experiment(outputs)
    notebook_on(root, "rt")
    with jupyter_lab(root, {"VOICEBOOK_OUTPUTS": str(outputs)}) as url, chromium() as page:
        try:
            walk_the_restart(Notebook(page, url.format(path=NOTEBOOK)), exp)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"The page at the failure: {tmp_path / 'failure.png'}")
            raise
    assert not (outputs / "demo").exists(), "a cell opened the default experiment"


def walk_the_restart(nb: Notebook, exp: Path) -> None:
    params = nb.code_cell_index('experiment = "rt"')
    panel_cell = nb.code_cell_index("experiment_panel(")
    results_cell = nb.code_cell_index("experiment_results(")
    nb.run_cell(params)
    nb.run_cell(panel_cell)
    panel = nb.output_area(panel_cell).locator(".vb-listening")
    rate(nb, panel, "ann")
    nb.run_cell(results_cell)  # publishes the summary of the ratings so far
    assert f"{STEPS} ratings from 1 rater on disk" in nb.output_text(results_cell)

    nb.restart_kernel()
    dead_panel_swallows_clicks_and_keys(nb, panel)

    nb.run_cell(panel_cell)  # alone: this kernel does not know the experiment
    shown = nb.output_text(panel_cell)
    screenshot(nb.output_area(panel_cell), "panel_cell_alone")
    assert "Run the first code cell (parameters) first" in shown, shown
    assert not (exp.parent / "demo").exists()

    nb.run_cell(results_cell, timeout=180)  # alone too: refuses, publishes nothing
    shown = nb.output_text(results_cell)
    screenshot(nb.output_area(results_cell), "results_cell_alone")
    assert "Run the first code cell (parameters) first" in shown, shown
    assert not (exp.parent / "demo").exists()
    the_report_counts_every_rating_on_disk(exp)

    nb.run_cell(params)  # as the banner says: the parameters, then the panel
    nb.run_cell(panel_cell)
    panel = nb.output_area(panel_cell).locator(".vb-listening")
    expect(panel).to_contain_text(re.compile(r"Enter your name"), timeout=TIMEOUT_MS)
    field = panel.get_by_role("textbox")
    field.fill("ann")
    field.press("Enter")
    expect(panel).to_contain_text(f"Rating as ann. {STEPS} of 4 rated", timeout=TIMEOUT_MS)
    screenshot(nb.output_area(panel_cell), "resumed")


def rate(nb: Notebook, panel, rater: str) -> None:
    field = panel.get_by_role("textbox")
    field.fill(rater)
    field.press("Enter")
    lengths: dict[str, set[str]] = {}
    for i in range(STEPS):
        expect(panel).to_contain_text(f"{i} of 4 rated", timeout=TIMEOUT_MS)
        text = panel.inner_text()
        assert "?." not in text and ".." not in text, text  # "Budapestet?." and "volt.."
        sentence = re.search(r"Sentence: (.*?[.?])", text)[1]
        lengths.setdefault(sentence, set()).add(re.search(r"\d+\.\d s.*", text)[0])
        if i == 0:
            screenshot(panel, "panel_rating")
        for scale in ls.SCALES:
            row = panel.locator(".widget-toggle-buttons").filter(
                has=nb.page.locator(".widget-label", has_text=re.compile(f"^{scale}$"))
            )
            row.get_by_role("button", name=str(4 + i), exact=True).click()
        panel.get_by_role("button", name="Save and next").click()
    expect(panel).to_contain_text(f"{STEPS} of 4 rated", timeout=TIMEOUT_MS)
    assert all(len(shown) == 1 for shown in lengths.values()), lengths  # one per sentence


def dead_panel_swallows_clicks_and_keys(nb: Notebook, panel) -> None:
    """A click anywhere on the dead panel (its body, a greyed button) lands on its cover; "x"
    and "d d" typed then cut and delete no cell."""
    page = nb.page
    banner = panel.get_by_role("alert")
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(banner).to_contain_text("run the first code cell (parameters), then this cell")
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    save = panel.get_by_role("button", name="Save and next")
    save.scroll_into_view_if_needed()
    box, button = panel.bounding_box(), save.bounding_box()
    top, bottom = max(box["y"], 0) + 5, min(box["y"] + box["height"], 900) - 5  # on screen
    spots = [(box["x"] + 5, bottom), (box["x"] + box["width"] / 2, (top + bottom) / 2),
             (button["x"] + 5, button["y"] + 5)]  # fmt: skip
    for x, y in spots:
        on_cover = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('.vb-shield') !== null", [x, y]
        )
        assert on_cover, f"the dead panel at {x:.0f},{y:.0f} is not covered"
        page.mouse.click(x, y)
        for key in ("x", "d", "d"):
            page.keyboard.press(key)
        page.wait_for_timeout(300)
        assert page.locator(".jp-Notebook .jp-Cell").count() == cells, "a key cut a cell"
    screenshot(page, "dead_panel_after_click_x")  # the page: every cell still there


def the_report_counts_every_rating_on_disk(exp: Path) -> None:
    """04's report (the same two calls it makes) shows the ratings on disk, not the count the
    results cell published before the restart."""
    from voicebook.decision import report

    more = {"timestamp": "2026-12-06T12:00:00+00:00", "rater": "bob", "mode": "scores",
            "item": "s1", "sentence": "Hol van Budapest?", "candidate": "phase1",
            "smoothness": 5, "naturalness": 5, "emotion": 5, "overall": 9}  # fmt: skip
    ls.append_rating(exp / "ratings.csv", more)  # rated after the summary was published
    path = report.write_report(exp, report.analyse_experiment(exp))
    text = re.sub(r"<[^>]+>", "", path.read_text())
    overall = text[text.index("Overall score per candidate") : text.index("Every scale")]
    on_disk = ls.read_ratings(exp / "ratings.csv")
    for candidate in ("base", "phase1"):
        n = int((on_disk["candidate"] == candidate).sum())
        assert re.search(rf"{candidate}\s+[\d.]+\s+[\d.—]+\s+[\d.—]+\s+{n}\s", overall), overall
