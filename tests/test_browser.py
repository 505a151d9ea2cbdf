"""The blind listening test in a real browser: JupyterLab + headless Chromium, rated by clicks.

Runs the evaluation notebook on a cheap experiment (demo clips, the tiny base and a perturbed
"phase 1"), rates 3 samples and 2 A/B pairs as a person would, changes the rater's name,
restarts the kernel, runs the panel cell alone and resumes; ``ratings.csv`` is read after every
click. Set ``VOICEBOOK_SCREENSHOTS=<folder>`` to keep screenshots of the panel.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from jupyter_browser import (
    Notebook,
    browser_available,
    chromium,
    copy_notebook,
    jupyter_lab,
    prepare_experiment,
)
from test_evaluation import DEMO_TOKEN_CAP

from voicebook.coqui.limits import AUDIO_TOKENS_PER_CHAR
from voicebook.evaluation.listening import session as ls

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]
NOTEBOOK = "03_evaluation.ipynb"
# Any of these on screen before the rater has finished would unblind the test.
REVEALING = re.compile(r"\b(base|phase ?1|phase ?2|reference)\b", re.IGNORECASE)
TIMEOUT_MS = 30_000


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def ratings_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def screenshot(target, name: str, **options) -> None:
    """Save a screenshot of ``target`` (a locator or page) when VOICEBOOK_SCREENSHOTS is set."""
    folder = os.environ.get("VOICEBOOK_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name), **options)


class Panel:
    """The listening panel on the page, read and clicked through what a person sees."""

    def __init__(self, page, output_area):
        self.page, self.root = page, output_area
        self.root.get_by_role("textbox").wait_for(timeout=TIMEOUT_MS)  # the rater's name

    def text(self) -> str:
        return self.root.inner_text()

    def expect_text(self, text: str) -> None:
        expect(self.root).to_contain_text(text, timeout=TIMEOUT_MS)

    def expect_saved(self, what: str) -> None:
        """The confirmation line (role "status", announced to screen readers) names the save."""
        confirmation = self.root.get_by_role("status")
        expect(confirmation).to_contain_text("Saved at", timeout=TIMEOUT_MS)
        expect(confirmation).to_contain_text(what, timeout=TIMEOUT_MS)

    def assert_blind(self) -> None:
        shown = self.text() + " ".join(
            self.root.locator("[title]").evaluate_all("els => els.map(e => e.title)")
        )
        assert not REVEALING.search(shown), f"the panel names a candidate: {shown!r}"

    def set_name(self, name: str) -> None:
        field = self.root.get_by_role("textbox")
        field.fill(name)
        field.press("Enter")  # no Start button: the name acts at once
        self.expect_text(f"Rating as {name}")

    def scale(self, scale: str):
        return self.root.locator(".widget-toggle-buttons").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(f"^{scale}$"))
        )

    def rate_sample(self, values: dict[str, int]) -> None:
        save = self.root.get_by_role("button", name="Save and next")
        for scale in ls.SCALES:  # a fresh sample: every scale unrated, Save waits for all
            assert self.scale(scale).locator(".mod-active").count() == 0, f"{scale} pre-set"
        assert save.is_disabled()
        for scale, value in values.items():
            self.scale(scale).get_by_role("button", name=str(value), exact=True).click()
        expect(save).to_be_enabled(timeout=TIMEOUT_MS)
        save.click()

    def players_are_named_and_long_enough(self) -> None:
        players = self.root.locator("audio")
        players.first.wait_for(timeout=TIMEOUT_MS)
        titles = players.evaluate_all("els => els.map(e => e.title)")
        assert titles and all(re.fullmatch(r"Sample [A-Z]", t) for t in titles), titles
        durations = players.evaluate_all(
            """els => Promise.all(els.map(e => e.readyState >= 1 ? e.duration :
                 new Promise(r => e.addEventListener('loadedmetadata', () => r(e.duration)))))"""
        )
        assert all(d >= 1 for d in durations), f"a player would show 0:00 / 0:00: {durations}"
        labels = self.root.locator(".widget-label").evaluate_all("els => els.map(e => e.title)")
        assert "null" not in labels, labels


def test_listening_in_a_real_browser_is_blind_saves_every_click_and_survives_a_restart(
    tmp_path,
):
    outputs, root = tmp_path / "outputs", tmp_path / "lab"
    exp = prepare_experiment(outputs / "demo")
    _cheap_takes(copy_notebook(NOTEBOOK, root))
    ratings = exp / "ratings.csv"
    with jupyter_lab(root, {"VOICEBOOK_OUTPUTS": str(outputs)}) as url, chromium() as page:
        try:
            rate_in_the_browser(page, url.format(path=NOTEBOOK), ratings)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "failure.txt").write_text(page.locator("body").inner_text())
            print(f"The page at the failure: {tmp_path / 'failure.png'}, failure.txt")
            raise


def _cheap_takes(notebook: Path) -> None:
    """One take of one test sentence (with the short one and the hidden reference: three
    sentences) at the demo's token cap, no stress set, no Distill-MOS: this test is about the
    panel, and the measures' defaults made 03's Run All outlast its wait on two cores (their own
    tests cover them)."""
    text = notebook.read_text()
    one = 'test_sentences = [\\"Szerintem ma este mindenki nyerhet egy kicsit.\\"]'
    for default, cheap in (("takes = 3", "takes = 1"), ("stress_set = True", "stress_set = False"),
                           ("mos = True", "mos = False"), ("test_sentences = []", one),
                           (f"audio_tokens_per_char = {AUDIO_TOKENS_PER_CHAR}",
                            f"audio_tokens_per_char = {DEMO_TOKEN_CAP}")):  # fmt: skip
        assert default in text, default
        text = text.replace(default, cheap, 1)
    notebook.write_text(text)


def rate_in_the_browser(page, url: str, ratings: Path) -> None:
    nb = Notebook(page, url)
    nb.run_all(timeout=300)
    if os.environ.get("VOICEBOOK_SCREENSHOTS"):  # 03's outputs at 1280 px, for docs/
        for name, source in (("progress", "ProgressLine("), ("eval_table", "WideTable(result"),
                             ("metrics", "metrics_figure(")):  # fmt: skip
            screenshot(nb.output_area(nb.code_cell_index(source)), f"notebook03_{name}.png")
        screenshot(page, "notebook03_viewport_after_run_all.png")
    panel_cell = nb.code_cell_index("_panel(")
    assert "Error" not in nb.output_text(panel_cell)
    panel = Panel(page, nb.output_area(panel_cell))
    panel.assert_blind()

    panel.set_name("ann")
    panel.players_are_named_and_long_enough()
    total = int(re.search(r"0 of (\d+) rated", panel.text()).group(1))
    given = [
        {"smoothness": 3, "naturalness": 4, "emotion": 5, "overall": 6},
        {"smoothness": 9, "naturalness": 1, "emotion": 10, "overall": 2},
        {"smoothness": 7, "naturalness": 7, "emotion": 7, "overall": 8},
    ]
    for i, values in enumerate(given, start=1):
        panel.rate_sample(values)
        panel.expect_text(f"{i} of {total} rated")
        panel.expect_saved(f"overall {values['overall']}.")
        rows = ratings_rows(ratings)
        assert len(rows) == i and rows[-1]["rater"] == "ann"
        assert {s: int(rows[-1][s]) for s in ls.SCALES} == values
        panel.assert_blind()
        if i == 1:
            screenshot(panel.root, "listening_after.png")

    panel.root.get_by_role("button", name="A/B preference").click()
    expect(panel.root.get_by_role("button", name="A is better")).to_be_visible(
        timeout=TIMEOUT_MS
    )  # the mode acts at once
    panel.expect_text("0 of")
    for i, (button, code) in enumerate((("A is better", "A"), ("No preference", "tie")), 1):
        panel.players_are_named_and_long_enough()
        panel.root.get_by_role("button", name=button).click()
        panel.expect_text(f"{i} of")
        panel.expect_saved("A is better." if code == "A" else "no preference.")
        rows = [r for r in ratings_rows(ratings) if r["mode"] == "ab"]
        assert len(rows) == i and rows[-1]["rater"] == "ann"
        assert rows[-1]["blind_code"] == code
        assert (rows[-1]["preferred"] == "tie") == (code == "tie")
        panel.assert_blind()

    anns_pair = panel.root.get_by_role("button", name="B is better").element_handle()
    panel.set_name("bob")  # a new name acts at once: the pair on screen now is bob's
    anns_pair.wait_for_element_state("hidden", timeout=TIMEOUT_MS)
    panel.expect_text("0 of")
    panel.root.get_by_role("button", name="B is better").click()
    panel.expect_text("1 of")
    panel.expect_saved("B is better.")
    assert [r["rater"] for r in ratings_rows(ratings)] == ["ann"] * 5 + ["bob"]

    nb.restart_kernel()
    dead_panel_is_disabled_and_keeps_keys(page, nb, panel)

    nb.run_cell(panel_cell)  # alone, after the restart: refuses, opens no other experiment
    assert "Run the first code cell (parameters) first" in nb.output_text(panel_cell)
    nb.run_cell(nb.code_cell_index('experiment = "'))  # as the banner says: parameters, then it
    nb.run_cell(panel_cell)
    assert "Error" not in nb.output_text(panel_cell)
    panel = Panel(page, nb.output_area(panel_cell))
    panel.set_name("ann")
    panel.expect_text(f"3 of {total} rated")  # resumed where ann stopped
    panel.rate_sample({"smoothness": 1, "naturalness": 10, "emotion": 1, "overall": 10})
    panel.expect_text(f"4 of {total} rated")
    panel.expect_saved("overall 10.")
    rows = ratings_rows(ratings)
    assert len(rows) == 7 and (rows[-1]["rater"], rows[-1]["overall"]) == ("ann", "10")
    assert len({(r["sentence"], r["candidate"]) for r in rows if r["mode"] == "scores"}) == 4
    panel.assert_blind()
    a_slip_corrected_with_previous(nb, panel, ratings)


def the_report_says_what_listeners_said(page, exp: Path, rater: str, sentence: str) -> None:
    """The decision report of this experiment: the dropped sentence named, A/B counts, the
    reference check, and n for every candidate (the summary cell published them)."""
    from voicebook.decision import report

    path = report.write_report(exp, report.analyse_experiment(exp))
    text = report_section(page, path, "What listeners said")
    assert rater in text and sentence in text and "below a synthesis" in text
    assert re.search(r"base\s+phase1\s+\d+", text), "no A/B counts per pair"
    assert re.search(rf"{rater}\s+1\s+2\s+6\s+1\s+1\s+no", text), "no reference check"
    for candidate in ("base", "phase1"):
        assert re.search(rf"^{candidate}\t.*\t\d+\t", text, re.MULTILINE), candidate


def report_section(page, path: Path, heading: str) -> str:
    """The text under ``heading`` of the page at ``path`` (up to the next heading), opened in a
    new page at 1280 px; its screenshot goes to report_<heading>.png."""
    tab = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        tab.goto(path.as_uri())
        section = tab.locator("h2", has_text=re.compile(f"^{heading}$"))
        text = section.evaluate(
            """h => { let text = '', el = h.nextElementSibling;
                      while (el && el.tagName !== 'H2') { text += el.innerText + '\\n';
                                                          el = el.nextElementSibling; }
                      return text; }"""
        )
        box = section.bounding_box()
        end = section.locator("xpath=following-sibling::h2[1]").bounding_box()
        clip = {"x": 0, "y": box["y"] - 8, "width": 1280, "height": end["y"] - box["y"]}
        if os.environ.get("VOICEBOOK_SCREENSHOTS"):
            name = "report_" + heading.lower().replace(" ", "_") + ".png"
            screenshot(tab, name, full_page=True, clip=clip)
        return text
    finally:
        tab.close()


def dead_panel_is_disabled_and_keeps_keys(page, nb: Notebook, panel: Panel) -> None:
    """After a restart the old panel says what to do; a click on its name field lands on that
    banner (the field is disabled), and an "x" typed then cuts no cell (JupyterLab's shortcut)."""
    banner = panel.root.get_by_role("alert")
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(banner).to_contain_text("run the first code cell (parameters), then this cell")
    field = panel.root.get_by_role("textbox")
    before, cells = field.input_value(), page.locator(".jp-Notebook .jp-Cell").count()
    box = field.bounding_box()
    on_top = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('.vb-shield') !== null",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert on_top, "the dead panel's name field can still be clicked"
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.keyboard.type("x")
    page.wait_for_timeout(500)
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells, "an x cut a cell"
    assert field.input_value() == before
    screenshot(panel.root, "listening_kernel_gone.png")


def slipping_rater(exp: Path) -> tuple[str, ls.Trial, str]:
    """A rater name whose first sentence hides the real recording, that trial and the
    recording's blind code: the test knows what the blind rater cannot."""
    samples = ls.load_samples(exp / "eval")
    for name in ("cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea"):
        trial = ls.ListeningSession(exp / "none.csv", name, samples, seed=exp.name).trials[0]
        codes = [c for c, s in trial.blind.items() if s.candidate == ls.REFERENCE]
        if codes:
            return name, trial, codes[0]
    raise AssertionError("no rater name starts with the hidden reference")


def a_slip_corrected_with_previous(nb: Notebook, panel: Panel, ratings: Path) -> None:
    """A second rater scores the real recording below the syntheses on one sentence: the
    summary leaves out that sentence of theirs only. Back with Previous, the rating changed:
    both rows stay on disk, and nothing is left out any more."""
    from voicebook.evaluation.listening import results as lr

    rater, trial, ref_code = slipping_rater(ratings.parent)
    panel.set_name(rater)
    for code in trial.blind:  # the first three samples are this sentence's A, B, C
        panel.expect_text(f"Sample {code}")
        overall = 2 if code == ref_code else 6
        panel.rate_sample({"smoothness": 5, "naturalness": 5, "emotion": 5, "overall": overall})
        panel.expect_saved(f"sample {code}, overall {overall}.")
    panel.expect_text("Sample A")  # the next sentence's first sample
    panel.rate_sample({"smoothness": 4, "naturalness": 4, "emotion": 4, "overall": 4})
    panel.expect_saved("sample A, overall 4.")
    summary_cell = nb.code_cell_index("experiment_results(")
    nb.run_cell(summary_cell)
    shown = nb.output_text(summary_cell)
    assert "Left out: 1" in shown and trial.text in shown, shown
    left_out = lr.listening_results(ratings).left_out
    assert left_out[["rater", "sentence"]].values.tolist() == [[rater, trial.text]]
    kept = lr.screen(ls.read_ratings(ratings))[0]
    assert (kept["rater"] == "ann").sum() == 6  # ann's ratings all count
    theirs = kept[kept["rater"] == rater]  # the slipping rater keeps the other sentence
    assert theirs[["sentence", "overall"]].values.tolist() == [[theirs["sentence"].iloc[0], 4]]
    assert theirs["sentence"].iloc[0] != trial.text
    the_report_says_what_listeners_said(nb.page, ratings.parent, rater, trial.text)

    back = panel.root.get_by_role("button", name="◀ Previous")
    codes = list(trial.blind)
    for code in ["A", *reversed(codes[codes.index(ref_code) :])]:  # one sample back at a time
        back.click()
        panel.expect_text(f"Sample {code}")
    panel.expect_text("You rated this at")
    panel.scale("overall").get_by_role("button", name="9", exact=True).click()
    panel.root.get_by_role("button", name="Save and next").click()
    panel.expect_saved(f"sample {ref_code}, overall 9.")
    mine = [r for r in ratings_rows(ratings) if r["rater"] == rater and r["blind_code"] == ref_code]
    assert [r["overall"] for r in mine] == ["2", "9"]  # appended, the slip kept on disk
    nb.run_cell(summary_cell)
    shown = nb.output_text(summary_cell)
    assert "Left out" not in shown and "scored it at least as high" in shown, shown
    assert lr.listening_results(ratings).left_out.empty


def test_the_report_shows_every_column_and_the_dataset_summary_at_1280_px(tmp_path):
    from test_decision import fake_scraps
    from test_report import DATASET_CARD

    from voicebook.decision import report

    scraps = fake_scraps()
    scraps["00_data_prep"]["dataset_card"] = DATASET_CARD
    page_file = tmp_path / "report.html"
    page_file.write_text(report.render_report(report.analyse_scraps("demo", scraps)))
    with chromium(1280, 900) as page:
        page.goto(page_file.as_uri())
        tables = page.locator("table").evaluate_all(
            """ts => ts.map(t => ({right: t.getBoundingClientRect().right,
                                  hidden: t.scrollWidth - t.clientWidth,
                                  columns: t.rows[0].cells.length}))"""
        )
        assert max(t["columns"] for t in tables) >= 14  # the comparison of candidates
        for t in tables:  # no column off the page or behind a sideways scroll
            assert t["right"] <= 1280 and t["hidden"] <= 0, t
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        comparison = page.locator("table").first.inner_text()
        for column in ("band", "tier", "status", "notes"):
            assert column in comparison
        card = report_section(page, page_file, "Dataset")
        assert "not good: train_minutes 5.6 (needs >= 30)" in card
        assert "Minutes per source and duration band" in card  # the plot, drawn by plotly.js
        assert not re.search(r"[{}\[\]]", card) and "card_version" not in card
