"""The comparison report: sections, self-containment, decision.json, previous versions kept,
several experiments side by side, and one run over real executed notebooks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from test_decision import fake_scraps

from voicebook.core.paths import NOTEBOOKS_DIR
from voicebook.core.scraps import read_scraps
from voicebook.decision import report
from voicebook.decision.matrix import COMPARISON_COLUMNS
from voicebook.evaluation.listening import results as lr

PLOTLY_BUNDLE = "* plotly.js v"  # the banner of plotly's embedded JavaScript


def sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_report_has_every_section_decision_first_and_is_self_contained():
    scraps = fake_scraps()
    scraps["00_data_prep"]["dataset_card"] = DATASET_CARD
    result = report.analyse_scraps("lr2e-6", scraps)
    other = report.analyse_scraps("lr1e-6", fake_scraps(phase2=False))
    page = report.render_report(result, [other])
    assert sections(page) == [
        "Ship: phase 2",
        "Comparison of candidates",
        "How sure",  # its evidence here recorded no takes: the section says to re-run 03
        "Evaluation depth",
        "What listeners said",
        "Where the numbers come from",
        "Training curves",
        "Experiments side by side",
        "Dataset",
        "Health events",
        "What is missing",
        "Thresholds used",
    ]
    assert not re.search(r"<script[^>]*\ssrc=", page)  # nothing to fetch to view it
    assert not re.search(r"<link[^>]*\shref=", page)
    assert page.count(PLOTLY_BUNDLE) == 1  # JS embedded once for the two figures
    assert page.count('class="plotly-graph-div"') == 3  # curves twice, minutes per band
    assert "Recommendation: ship phase 2 (/x/phase2/run/best_model_700.pth); tier: target." in page
    assert "<td>quiz</td>" in page and "<td>2.1</td>" in page  # dataset per source
    assert "lr ok" in page  # health events
    assert "<li>Nothing.</li>" in page  # nothing missing in this experiment


def depth_scraps() -> dict:
    """fake_scraps with the evaluation's depth checks recorded (see docs/stages.md)."""
    scraps = fake_scraps()
    evaluation = scraps["03_evaluation"]
    evaluation["eval_table"] = evaluation["eval_table"].assign(
        cap_hits=[4, 1, 0], short_cap_hit=[True, False, False]
    )
    rows = [("base", "interview", 12, 4.1, 0.02), ("base", "quiz", 8, 3.85, 0.021),
            ("base", "all", 20, 4.0, 0.0204), ("phase1", "interview", 12, 2.5, 0.02),
            ("phase1", "quiz", 8, 3.25, 0.022), ("phase1", "all", 20, 2.8, 0.0208)]  # fmt: skip
    evaluation["eval_per_source"] = pd.DataFrame(
        rows, columns=["candidate", "source", "n_clips", "mel_ce", "text_ce"]
    )
    evaluation["eval_settings"] = {
        "temperature": 0.65, "repetition_penalty": 10.0, "top_p": 0.85, "top_k": 50,
        "temperature_sweep": [0.55, 0.75], "reference_mode": "auto",
        "reference_clips": ["wavs/quiz_003.wav"], "audio_tokens_per_char": 2.5,
        "short_test_sentence": "Igen, pontosan.", "seed": 1,
    }  # fmt: skip
    evaluation["temperature_sweep"] = pd.DataFrame(
        [["base", 0.55, 4, 3, 0.71, 0.4, None], ["base", 0.75, 4, 4, 0.69, 0.5, None]],
        columns=["candidate", "temperature", "n_sentences", "cap_hits", "speaker_similarity",
                 "rtf", "cer"],
    )  # fmt: skip
    evaluation["dvae_reconstruction"] = {
        "quiz": {"clips": 8, "mse": 0.31, "mae": 0.42, "peak": 3.5},
        "all": {"clips": 20, "mse": 0.29, "mae": 0.4, "peak": 3.5},
    }
    evaluation["codebook"] = {"quiz": {"codes_used": 611, "perplexity": 402.5}}
    return scraps


def test_report_shows_the_evaluation_depth_with_its_numbers():
    page = report.render_report(report.analyse_scraps("deep", depth_scraps()))
    depth = page[page.index("<h2>Evaluation depth</h2>") : page.index("<h2>What listeners said")]
    assert re.findall(r"<h3>(.*?)</h3>", depth) == [
        "Mel CE and Text CE per source",
        "Generation that ran into the token cap",
        "Temperature sweep",
        "The DVAE tokenizer per source",
    ]
    headers = re.findall(r"<th>(.*?)</th>", depth.replace("<wbr>", ""))
    assert headers[:4] == ["candidate", "mel_ce[all]", "mel_ce[interview]", "mel_ce[quiz]"]
    assert "<td>3.25</td>" in depth and "<td>611</td>" in depth and "<td>0.31</td>" in depth
    assert "phase1: Mel CE fell overall (4 → 2.8) but rose on quiz (3.85 → 3.25)" not in depth
    assert "Test sentences sampled at temperature 0.65 (repetition_penalty 10.0" in depth
    assert "(auto): wavs/quiz_003.wav" in depth and "temperature sweep: 0.55, 0.75." in depth
    forgetting = depth_scraps()
    forgetting["03_evaluation"]["eval_per_source"].loc[4, "mel_ce"] = 3.95  # phase1 on quiz
    page = report.render_report(report.analyse_scraps("deep", forgetting))
    assert "but rose on quiz (3.85 → 3.95): it may be forgetting" in page
    older = fake_scraps()  # an evaluation recorded before these checks existed
    page = report.render_report(report.analyse_scraps("old", older))
    assert "<h2>Evaluation depth</h2>\n<p>Not measured: re-run 03_evaluation.</p>" in page


def test_report_without_any_stage_says_what_is_missing_and_embeds_no_js():
    page = report.render_report(report.analyse_scraps("fresh", {}))
    assert PLOTLY_BUNDLE not in page
    assert "No training curves yet" in page and "No dataset card: run 00_data_prep." in page
    assert "No phase 1 yet (01_phase1 has not run)." in page
    # nothing measured: the base is named, never shipped, in an amber box (issue 36)
    assert "Ship:" not in page and "Nothing is ready to ship" in page
    assert '<div class="box warn"><h2>Nothing is ready' in page
    assert "it has no measured Mel CE: nothing unmeasured ships" in page


def test_report_ignores_the_decision_notebook_itself():
    scraps = fake_scraps() | {"04_decision_matrix": {"recommendation": {"winner": "x"}}}
    result = report.analyse_scraps("e", scraps)
    assert list(result.scraps) == ["00_data_prep", "01_phase1", "02_phase2", "03_evaluation"]


def test_curves_share_axes_one_colour_per_phase_steps_as_recorded():
    fig = report.phases_figure(report.stage_curves(fake_scraps()))
    names = [(t.name, t.yaxis) for t in fig.data]
    assert len(names) == 8  # 2 phases x (eval, train) x (Mel CE, Text CE)
    eval2 = next(t for t in fig.data if t.name == "phase2 eval" and t.yaxis == "y")
    assert list(eval2.x) == [400, 500, 600] and list(eval2.y) == [2.8, 2.6, 2.7]
    colours = {t.name.split()[0]: set() for t in fig.data}
    for t in fig.data:
        colours[t.name.split()[0]].add(t.line.color)
    assert len(colours["phase1"]) == len(colours["phase2"]) == 1
    assert colours["phase1"] != colours["phase2"]
    assert fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"
    assert sorted(s.y0 for s in fig.layout.shapes) == [0.03, 0.04, 2.5, 3.0, 3.5]


def test_a_phase_counting_from_zero_continues_its_parents_steps():
    scraps = fake_scraps()
    phase2 = scraps["02_phase2"]
    phase2["curves"] = phase2["curves"].assign(step=phase2["curves"]["step"] - 400)
    phase2["parent_checkpoint"] = "/x/phase1/run/best_model_300.pth"
    curves = report.stage_curves(scraps)
    assert list(curves) == ["phase1", "phase2 (from step 300)"]
    assert curves["phase2 (from step 300)"]["step"].min() == 300


def test_comparison_of_experiments_has_experiment_column():
    results = [
        report.analyse_scraps("lr2e-6", fake_scraps()),
        report.analyse_scraps("lr1e-6", fake_scraps(phase2=False)),
    ]
    table = report.comparison_of(results)
    assert list(table.columns) == ["experiment", *COMPARISON_COLUMNS]
    assert list(zip(table["experiment"], table["candidate"], table["status"])) == [
        ("lr2e-6", "base", "not chosen"),
        ("lr2e-6", "phase1", "not chosen"),
        ("lr2e-6", "phase2", "ship"),
        ("lr1e-6", "base", "not chosen"),
        ("lr1e-6", "phase1", "ship"),
    ]
    assert report.comparison_of([]).columns[0] == "experiment"


def test_write_report_writes_decision_json_and_keeps_previous(tmp_path):
    first = report.analyse_scraps("exp", fake_scraps(phase2=False))
    path = report.write_report(tmp_path, first)
    assert path == tmp_path / "report.html"
    record = json.loads((tmp_path / "decision.json").read_text())
    assert (record["experiment"], record["winner"], record["tier"]) == ("exp", "phase1", "minimum")
    assert record["reasons"] == first.decision.reasons
    assert [(c["candidate"], c["mel_ce"], c["listening_n"]) for c in record["candidates"]] == [
        ("base", 4.0, 6),
        ("phase1", 2.8, 6),
    ]
    assert record["missing"] == ["No phase 2 yet (02_phase2 has not run)."]
    first_page = path.read_text()

    report.write_report(tmp_path, report.analyse_scraps("exp", fake_scraps()))
    assert json.loads((tmp_path / "decision.json").read_text())["winner"] == "phase2"
    # the first ones moved to history/, not overwritten; a third write keeps both earlier ones
    (earlier_json,) = (tmp_path / "history").glob("decision.*.json")
    (earlier_page,) = (tmp_path / "history").glob("report.*.html")
    assert json.loads(earlier_json.read_text())["winner"] == "phase1"
    assert earlier_page.read_text() == first_page
    report.write_report(tmp_path, report.analyse_scraps("exp", fake_scraps()))
    assert len(list((tmp_path / "history").glob("report.*.html"))) == 2


def test_report_path_and_unknown_experiment(tmp_path):
    assert report.report_path("exp", tmp_path) == tmp_path / "exp" / "report.html"
    (tmp_path / "known").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No experiment 'typo'.*experiments there: known"):
        report.find_experiment("typo", tmp_path)


# --- real executed notebooks -----------------------------------------------------------------


def _glue_notebook(scraps: dict) -> object:
    """A notebook whose cells only glue ``scraps`` (DataFrames rebuilt from JSON)."""
    import nbformat

    lines = ["import json, pandas as pd", "from voicebook.core.scraps import glue"]
    for name, value in scraps.items():
        if isinstance(value, str):
            continue  # scraps.glue cannot record a bare string yet (scrapbook's json encoder)
        if isinstance(value, pd.DataFrame):
            split = json.dumps(value.to_dict(orient="split"))
            lines.append(f"glue({name!r}, pd.DataFrame(**json.loads({split!r})))")
        else:
            lines.append(f"glue({name!r}, json.loads({json.dumps(value)!r}))")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("\n".join(lines))])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def _kernel() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return "voicebook" if "voicebook" in KernelSpecManager().find_kernel_specs() else "python3"


@pytest.mark.slow  # runs three notebooks (~15 s on two cores)
def test_notebook_reads_real_executed_stage_notebooks(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("VOICEBOOK_OUTPUTS", str(tmp_path))
    runs = tmp_path / "expA" / "notebooks"
    runs.mkdir(parents=True)
    (tmp_path / "expB").mkdir()
    scraps = fake_scraps(phase2=False)
    # the decision recommends only a checkpoint that exists: give phase 1's a real file
    ckpt = tmp_path / "x" / "phase1" / "run" / "best_model_400.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    scraps["01_phase1"]["best_checkpoint"] = str(ckpt)
    table = scraps["03_evaluation"]["eval_table"]
    table["checkpoint"] = table["checkpoint"].replace("/x/phase1/run/best_model_400.pth", str(ckpt))
    for stem in ("01_phase1", "03_evaluation"):
        nbformat.write(_glue_notebook(scraps[stem]), tmp_path / f"{stem}.ipynb")
        pm.execute_notebook(
            tmp_path / f"{stem}.ipynb",
            runs / f"{stem}.ipynb",
            kernel_name=_kernel(),
            progress_bar=False,
        )

    out = runs / "04_decision_matrix.ipynb"  # where the runner puts it
    pm.execute_notebook(
        NOTEBOOKS_DIR / "04_decision_matrix.ipynb",
        out,
        parameters={"experiment": "expA", "outputs_dir": str(tmp_path), "experiments": ["expB"]},
        kernel_name=_kernel(),
        cwd=str(NOTEBOOKS_DIR),
        progress_bar=False,
    )
    recommendation = read_scraps(out)["recommendation"]
    assert (recommendation["winner"], recommendation["tier"]) == ("phase1", "minimum")
    assert json.loads((tmp_path / "expA" / "decision.json").read_text())["winner"] == "phase1"
    page = Path(report.report_path("expA", tmp_path)).read_text()
    assert "Experiments side by side" in page and "<td>expB</td>" in page
    assert "No data-prep results" in page and "No phase 2 yet" in page

    ckpt.unlink()  # the file it recommended is gone: no recommendation, and it says why
    gone = report.analyse_experiment(tmp_path / "expA")
    assert gone.decision.winner == "" and any(
        "no longer exists" in r for r in gone.decision.reasons
    )

    again = report.analyse_experiment(tmp_path / "expA")  # the decision notebook is skipped
    assert list(again.scraps) == ["01_phase1", "03_evaluation"]
    curves = again.scraps["01_phase1"]["curves"]
    pd.testing.assert_frame_equal(curves, scraps["01_phase1"]["curves"])
    table = report.compare_experiments([tmp_path / "expA", tmp_path / "expB"])
    assert list(zip(table["experiment"], table["candidate"], table["mel_ce"].fillna(-1))) == [
        ("expA", "base", 4.0),
        ("expA", "phase1", 2.8),
        ("expB", "base", -1),
    ]


# A dataset card shaped like data prep's (nested dicts, records, records inside records).
DATASET_CARD = {
    "generator": "voicebook.dataprep",
    "card_version": 1,
    "language": "hu",
    "totals": {"clips": 101, "minutes": 5.88, "train_minutes": 5.6, "rejected": 2},
    "sources": [
        {"name": "quiz", "path": "/data/demo/quiz", "kind": "subtitles", "found": {"recordings": 3},
         "clips": 40, "minutes": 2.1, "rejected": 2, "input_lufs": {"min": -25.1, "max": -20.9}},
        {"name": "interview", "path": "/data/demo/interview", "kind": "metadata",
         "found": {"audio_files": 50}, "clips": 61, "minutes": 3.78, "rejected": 0,
         "input_lufs": {"min": -29.3, "max": -18.2}},
    ],
    "categories": {"bands_seconds": {"short": [0.0, 4.0], "long": [7.0, None]},
                   "table": [{"source": "quiz", "category": "short", "clips": 35, "minutes": 1.5}],
                   "bands": [{"source": "quiz", "band": "short", "clips": 35, "minutes": 1.5},
                             {"source": "quiz", "band": "long", "clips": 5, "minutes": 0.6},
                             {"source": "interview", "band": "short", "clips": 61,
                              "minutes": 3.78}]},
    "duration_histogram": {"bin_seconds": 0.5, "edges": [0.0, 0.5, 1.0], "counts": {}},
    "rejections": {"count": 2, "by_kind": {"too_short": 2}},
    "loudness": {"target_lufs": -23.0, "input_lufs": {"min": -29.3, "max": -18.2},
                 "peak_limited_clips": 0},
    "accounting": {"inputs": 103, "every_input_placed": True},
    "quality": {"rating": "thin", "tiers": [
        {"rating": "good", "rules": [
            {"metric": "train_minutes", "op": ">=", "value": 30, "actual": 5.6, "passed": False},
            {"metric": "eval_clips", "op": ">=", "value": 4, "actual": 6, "passed": True}]},
        {"rating": "thin", "rules": [
            {"metric": "train_clips", "op": ">=", "value": 1, "actual": 95, "passed": True}]},
    ]},
}  # fmt: skip


def test_the_dataset_section_shows_what_a_person_decides_with(tmp_path):
    """Totals, sources, minutes per source and band, rejections by reason, the rating with its
    reasons and the link to the full card; none of the card's bookkeeping; the same renderer
    as data prep's card.html."""
    from voicebook.dataprep.card import card_page

    scraps = fake_scraps()
    scraps["00_data_prep"]["dataset_card"] = DATASET_CARD
    result = report.analyse_scraps("demo", scraps, path=tmp_path)
    page = report.render_report(result)
    section = page[page.index("<h2>Dataset</h2>") : page.index("<h2>Health events</h2>")]
    assert re.findall(r"<h3>(.*?)</h3>", section) == [
        "Quality: thin", "Totals", "Sources", "Rejections by reason"
    ]  # fmt: skip
    assert "101 clips, 5.88 minutes from 2 source(s)" in section
    assert "<li>not good: train_minutes 5.6 (needs &gt;= 30)</li>" in section
    assert "<li>thin: train_clips 95 (needs &gt;= 1)</li>" in section
    assert "Minutes per source and duration band" in section and "plotly-graph-div" in section
    assert re.search(r"<td>too_<wbr>short</td>\s*<td>2</td>", section)
    for bookkeeping in ("generator", "card_version", "bands_seconds", "bin_seconds", "found"):
        assert bookkeeping not in section, bookkeeping
    assert "full dataset card" not in section  # no card.html beside the report: no dead link
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "card.html").write_text("card")
    page = report.render_report(report.analyse_scraps("demo", scraps, path=tmp_path))
    assert '<a href="dataset/card.html">The full dataset card</a>' in page
    summary = section[section.index("<p>101 clips") : section.index("<h3>Rejections")]
    full = card_page(DATASET_CARD)
    assert summary.replace("<h3>", "<h2>").replace("</h3>", "</h2>") in full
    assert page.count("<style>") == full.count("<style>") == 1  # the one stylesheet
    assert page.count("* plotly.js v") == full.count("* plotly.js v") == 1  # inlined once


def test_report_and_decision_json_say_what_listeners_said(tmp_path):
    """Every candidate with its n (0 when nobody scored it), the minimum of 3 marked, A/B per
    pair with its sign test, the reference check and what was left out, in both places."""
    scraps = fake_scraps()
    evaluation = scraps["03_evaluation"]
    evaluation["listening_summary"] = pd.DataFrame(
        [["phase1", "overall", 6.0, None, None, 1, True],
         ["phase2", "overall", 7.0, 6.0, 8.0, 4, False]],
        columns=lr.SUMMARY_COLUMNS,
    )  # fmt: skip
    evaluation["ab_pairs"] = pd.DataFrame(
        [["phase1", "phase2", 10, 1, 9, 0, 0.0215]], columns=lr.PAIR_COLUMNS
    )
    evaluation["hidden_reference"] = pd.DataFrame(
        [["bob", 3, 7.7, 6.0, 1, 1 / 3, False]], columns=lr.REFERENCE_COLUMNS
    )
    evaluation["listening_left_out"] = pd.DataFrame(
        [["bob", "Első mondat.", 3, "scored the real recording below a synthesis"]],
        columns=lr.LEFT_OUT_COLUMNS,
    )
    result = report.analyse_scraps("ears", scraps)
    page = report.render_report(result)
    section = page[page.index("<h2>What listeners said</h2>") : page.index("<h2>Where the")]
    assert "below the minimum of 3: not used to decide" in section
    assert "<td>base</td>" in section and "no scores" in section  # n 0, not left out
    assert "<td>0.0215</td>" in section and "<td>bob</td>" in section
    assert "Első mondat." in section
    report.write_report(tmp_path, result)
    facts = json.loads((tmp_path / "decision.json").read_text())["listening"]
    assert facts["min_ratings"] == 3 and facts["max_slip_share"] == 0.15
    overall = {row["candidate"]: row["n"] for row in facts["overall"]}
    assert overall == {"base": 0, "phase1": 1, "phase2": 4}
    assert facts["ab_pairs"][0]["second_wins"] == 9
    assert facts["left_out"][0]["rater"] == "bob" and facts["reference_check"][0]["slips"] == 1


def test_a_wide_notebook_table_puts_key_columns_first_and_scrolls_visibly():
    from voicebook.core.html import WIDE_COLUMNS, WideTable

    df = pd.DataFrame([{f"c{i}": i + 0.123456 for i in range(12)} | {"label": "phase 1"}])
    shown = WideTable(df, first=["label", "c5", "absent"])._repr_html_()
    heads = re.findall(r"<th[^>]*>(.*?)</th>", shown)
    assert heads[:3] == ["label", "c5", "c0"] and len(heads) == 13
    assert shown.startswith("<div") and f"{len(heads)} columns: scroll sideways" in shown
    assert "overflow-x:scroll" in shown  # the bar is drawn even before the reader scrolls
    assert '<td style="position:sticky;left:0;background:#fff">phase\u00a01</td>' in shown
    assert "<td>5.123</td>" in shown  # 4 significant digits
    label = WideTable(pd.DataFrame({"label": ["base model (no fine-tune)"], "x": [-0.5]}))
    assert "<td>-0.5</td>" in label._repr_html_()  # a minus sign stays one
    assert "base\u00a0model\u00a0(no\u00a0fine\u2011tune)</td>" in label._repr_html_()
    narrow = WideTable(df.iloc[:, :WIDE_COLUMNS])._repr_html_()
    assert "scroll sideways" not in narrow


def test_the_progress_line_is_shown_at_the_top_and_atop_each_long_cell(monkeypatch):
    """One display id for every copy: each step updates them all and adds one where it runs."""
    from voicebook.core import live

    outputs: list[list[str]] = []  # one list per copy: the texts it showed

    def display(bundle, raw, display_id):
        outputs.append([bundle["text/plain"]])

    def update_display(bundle, raw, display_id):
        for shown in outputs:
            shown.append(bundle["text/plain"])

    monkeypatch.setattr("IPython.display.display", display)
    monkeypatch.setattr("IPython.display.update_display", update_display)
    monkeypatch.setattr(live.ProgressLine, "TICK_SECONDS", 3600.0)  # no tick in between
    line = live.ProgressLine("03 · Evaluation", ["objective metrics", "codebook"])
    line.now("objective metrics")
    line.now("codebook")
    line.done("Rate the samples.")
    assert len(outputs) == 3  # the top one and one atop each step's cell
    top, first, second = outputs
    assert top[0].startswith("03 · Evaluation: starting (0 min 0 s so far)")
    assert top[1] == first[0] and first[0].startswith("03 · Evaluation: step 1 of 2, objective")
    assert top[2] == first[1] == second[0] and "step 2 of 2, codebook" in second[0]
    final = {shown[-1] for shown in outputs}
    assert len(final) == 1
    assert re.fullmatch(r"03 · Evaluation: done in 0 min \d+ s\. Rate the samples\.", final.pop())


def test_the_progress_line_time_moves_through_a_long_step_and_stops_when_done(monkeypatch):
    """Issue 36: the line read "0 min 0 s so far" through a 4-minute step."""
    import time

    from voicebook.core import live

    shown: list[str] = []
    monkeypatch.setattr("IPython.display.display", lambda b, raw, display_id: None)
    monkeypatch.setattr(
        "IPython.display.update_display", lambda b, raw, display_id: shown.append(b["text/plain"])
    )
    monkeypatch.setattr(live.ProgressLine, "TICK_SECONDS", 0.05)
    line = live.ProgressLine("03 · Evaluation", ["objective metrics"])
    line.now("objective metrics")
    line.started -= 65  # the step has run for a minute
    deadline = time.monotonic() + 10
    while not any("1 min 5 s so far" in s for s in shown) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(s.endswith("step 1 of 1, objective metrics (1 min 5 s so far)") for s in shown)
    line.done()
    time.sleep(0.2)
    count = len(shown)
    time.sleep(0.3)
    assert len(shown) == count and shown[-1].startswith("03 · Evaluation: done in 1 min")


def test_the_evaluation_plot_titles_have_their_own_lines():
    from voicebook.evaluation.scoring import metrics_figure

    table = pd.DataFrame({"label": ["base"], "mel_ce": [3.0], "text_ce": [0.02],
                          "speaker_similarity": [0.8]})  # fmt: skip
    titles = [a.text for a in metrics_figure(table).layout.annotations]
    assert len(titles) == 3 and all("<br>(" in t for t in titles)


def test_report_and_decision_json_show_export_parity_and_each_phases_kept_checkpoints(tmp_path):
    scraps = fake_scraps()
    scraps["01_phase1"]["selection"] = {
        "select_by": "evidence",
        "why": "step 300 beats step 400: better on cer, worse on none.",
        "seconds": 12.5,
        "kept": [
            {"step": 400, "mel_ce": 2.9, "cer": 0.4, "checkpoint": "/x/a.pth", "picked": False},
            {"step": 300, "mel_ce": 3.0, "cer": 0.2, "checkpoint": "/x/b.pth", "picked": True},
        ],
    }
    differs = {"status": "differs", "max_difference": 0.25, "tolerance": 1e-4}
    parity = {"phase1": {"status": "identical", "max_difference": 0.0}, "phase2": differs}
    result = report.analyse_scraps("exp", scraps, export_parity=parity)
    page = report.render_report(result)
    assert "phase 1: export parity: identical" in page
    assert "phase 2: export parity: ALARM" in page and "largest sample difference 0.25" in page
    assert "<h2>Kept checkpoints and each phase's pick</h2>" in page
    assert "phase 1: 2 kept, picked by evidence" in page and "took 12.5 s" in page
    assert "step 300 beats step 400" in page
    # phase 2 has the best numbers, but its export does not speak like what was evaluated
    assert result.decision.winner == "phase1"
    report.write_report(tmp_path, result)
    record = json.loads((tmp_path / "decision.json").read_text())
    assert record["export_parity"]["phase1"]["status"] == "identical"
    assert record["export_parity"]["phase2"]["max_difference"] == 0.25
    rows = {c["candidate"]: c["export_parity"] for c in record["candidates"]}
    assert (
        rows["phase1"] == "identical" and rows["phase2"].startswith("ALARM") and rows["base"] == ""
    )
