"""The stage contract: producers and consumers agree, parameter defaults live in one place, and
the report shows the latest run of every stage however the notebooks were run."""

import ast
import json
import os
import subprocess
import sys

import pandas as pd
import papermill
import pytest
from test_evaluation import DEMO_TOKEN_CAP

from voicebook import dataprep, training
from voicebook.core import config, scraps, stages
from voicebook.core.paths import NOTEBOOKS_DIR, REPO_ROOT
from voicebook.decision import matrix as decision
from voicebook.evaluation import scoring as evaluation
from voicebook.evaluation.listening import results as lr
from voicebook.evaluation.listening import session as ls
from voicebook.runner import STAGES
from voicebook.voice_search import search as voice_search

CONFIGS = {
    "00_data_prep": dataprep.DataPrepConfig,
    "01_phase1": training.Phase1Config,
    "02_phase2": training.Phase2Config,
    "02b_voice_search": voice_search.SearchConfig,
    "03_evaluation": evaluation.EvalConfig,
}


def _notebook_defaults(stem: str) -> dict:
    found = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{stem}.ipynb"))
    return {name: ast.literal_eval(p["default"]) for name, p in found.items()}


@pytest.mark.parametrize("stem", list(CONFIGS))
def test_parameters_cell_and_config_agree_on_names_and_values(stem):
    cells, fields = _notebook_defaults(stem), config.defaults(CONFIGS[stem])
    notebook_only = set(cells) - set(fields) - set(config.LOCATION_PARAMS)
    assert not notebook_only, f"{stem} declares parameters its config lacks: {notebook_only}"
    unreachable = set(fields) - set(cells)  # a field no `-p` can set is a dead setting
    assert not unreachable, f"{stem}'s config has fields its parameters cell lacks: {unreachable}"
    differ = {k: (v, fields[k]) for k, v in cells.items() if k in fields and fields[k] != v}
    assert not differ, f"{stem}: notebook value vs config default differ: {differ}"


def test_save_every_is_one_value_everywhere():
    assert _notebook_defaults("01_phase1")["save_every"] == training.PhaseConfig().save_every == 45


def test_the_runner_and_the_decision_take_their_stages_from_the_contract():
    assert STAGES == tuple(s.stem for s in stages.STAGES)
    assert decision.EVALUATION == stages.EVALUATION.stem
    assert list(decision.TRAINING_STAGES) == [s.stem for s in stages.TRAINING]
    # every scrap the decision reads from the evaluation is one the evaluation publishes
    assert {"eval_table", "listening_summary"} <= set(stages.EVALUATION.scraps)
    assert {"best_mel_ce", "best_text_ce", "health", "curves"} <= set(stages.PHASE1.scraps)


def test_phase_results_publish_exactly_their_contract():
    for stage, contract in (("phase1", stages.PHASE1), ("phase2", stages.PHASE2)):
        result = training.PhaseResult(stage, {}, {}, pd.DataFrame(), [], REPO_ROOT)
        assert set(result.scraps()) == set(contract.scraps)


def test_the_evaluation_publishes_exactly_its_contract():
    result = evaluation.EvalResult(pd.DataFrame(), pd.DataFrame(), [])
    listening = lr.ListeningResults(*(pd.DataFrame(columns=ls.COLUMNS) for _ in range(5)))
    later = {"codebook", *listening.scraps()}  # their own cells
    assert set(result.scraps()) | later == set(stages.EVALUATION.scraps)
    assert not set(result.scraps()) & later


def test_every_consumer_reads_only_scraps_that_the_contract_names():
    """Consumers get ``StageScraps`` (``read_experiment``, ``analyse_scraps``): a read of a name
    outside the contract raises, so running every consumer over every stage checks its reads."""
    from test_decision import fake_scraps

    from voicebook.decision import report
    from voicebook.evaluation import depth as eval_depth

    misspelt = stages.checked({"03_evaluation": {"eval_table": 1}})["03_evaluation"]
    with pytest.raises(KeyError, match="publishes no scrap 'eval_tabel'"):
        misspelt.get("eval_tabel")
    empty = {s.stem: {} for s in stages.STAGES}
    for found in (fake_scraps(), empty, {}):
        result = report.analyse_scraps("x", found)
        assert isinstance(result.scraps, stages.ExperimentScraps)
        report.render_report(result)  # the decision, the depth tables, versus, the card
        evaluation = result.scraps.get(stages.EVALUATION.stem, {})
        eval_depth.depth_tables(evaluation), eval_depth.depth_notes(evaluation)


SCRAP_NAMES = {name for stage in stages.STAGES for name in stage.scraps}
# Records whose own keys share a word with a scrap; their reads are not reads of scraps.
SHARED_WORDS = {
    "voicebook.coqui.lora_trainer": {"params"},  # torch's optimizer param groups
    "voicebook.coqui.trainer": {"params"},
    "voicebook.core.lineage": {"params", "stage"},  # a result record's params; an input's stage
    "voicebook.core.runs": {"stage"},
    "voicebook.core.scraps": {"params", "stage"},  # a result record's params; provenance rows
    "voicebook.evaluation.scoring": {"params"},  # a voice's search summary
    "voicebook.voice_search.search": {"params"},  # search.json
    "voicebook.sweep.trial": {"params"},  # a trial's job
    "voicebook.training.result": {  # status.json: the phase's own record, which its scraps copy
        "best_checkpoint", "best_mel_ce", "best_step", "best_text_ce", "final_step", "params"},
    "voicebook.training.run": {"best_checkpoint", "best_mel_ce", "best_step", "params"},
    "voicebook.training.view": {"params"},  # status.json: whether a re-run continues its run
}  # fmt: skip


def literal_scrap_reads(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every read by a literal scrap name, reached or not: ``x["name"]``,
    ``x.get("name")``, ``"name" in x``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if node.func.attr in ("get", "pop") and node.args else None
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            key = node.left
        else:
            continue
        if isinstance(key, ast.Constant) and key.value in SCRAP_NAMES:
            found.append((key.lineno, key.value))
    return found


def test_no_consumer_reads_a_scrap_by_a_literal_name():
    """Consumers read scraps through the contract's typed views (``result.scraps.evaluation
    .eval_table``, ``PhaseScraps.best_mel_ce``), so a scrap name is written only in
    ``core/stages.py``. Read from the source, so a branch no test reaches is checked too."""
    from test_architecture import MODULES

    assert literal_scrap_reads('s.get("eval_table"); t["health"]; "curves" in u') == [
        (1, "eval_table"), (1, "health"), (1, "curves")]  # fmt: skip
    assert literal_scrap_reads('t["health"] = 1; row.get("mel_ce")') == []
    wrong = []
    for module, path in MODULES.items():
        if module == "voicebook.core.stages":
            continue
        for line, name in literal_scrap_reads(path.read_text(encoding="utf-8")):
            if name not in SHARED_WORDS.get(module, ()):
                wrong.append(f"{module}:{line} reads {name!r}")
    for notebook in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            code = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            if not code.lstrip().startswith("%"):
                wrong += [
                    f"{notebook.name} cell {i} reads {n!r}" for _, n in literal_scrap_reads(code)
                ]
    assert wrong == []


def test_no_module_spells_a_stage_by_its_notebook_name():
    """The library names a stage through the contract (``stages.PHASE1.stem``), never as text:
    its docs generator is the one place that words them."""
    from test_architecture import MODULES

    stems = {s.stem for s in stages.STAGES}
    wrong = [
        f"{module}:{node.lineno} {node.value!r}"
        for module, path in MODULES.items()
        if module not in ("voicebook.core.stages", "voicebook.core.stages_doc")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in stems
    ]
    assert wrong == []


def test_the_typed_views_read_exactly_the_contract():
    for stage in stages.STAGES:
        view = stages.VIEWS[stage.stem]
        assert set(stage.scraps) <= stages.accessors(view), stage.stem
        assert isinstance(stages.checked({stage.stem: {}})[stage.stem], view)
    every = set().union(*(stages.accessors(v) for v in stages.VIEWS.values()))
    assert every == SCRAP_NAMES  # no accessor for a scrap that nobody publishes
    read = stages.checked({"02_phase2": {"best_mel_ce": 2.5}, "09_phase3": {"best_mel_ce": 2.0}})
    assert read.phase("02_phase2").best_mel_ce == 2.5 and read.phase("01_phase1").best_step is None
    assert isinstance(read["09_phase3"], stages.PhaseScraps)  # another training notebook
    assert read.evaluation.eval_table is None and read.evaluation.stem == "03_evaluation"
    assert stages.EvaluationScraps.of({"eval_notes": ["x"]}).eval_notes == ["x"]


def test_the_trainer_config_has_no_defaults_of_its_own():
    """A phase's defaults live once, in its config dataclass: ``gpt_trainer_config`` takes every
    value from the caller, and a phase passes each one."""
    import inspect

    from voicebook.coqui import config as coqui_config

    params = inspect.signature(coqui_config.gpt_trainer_config).parameters.values()
    assert [p.name for p in params if p.default is not inspect.Parameter.empty] == []
    keywords = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    phase = training.Phase2Config(lr=1e-5, epochs=3, language="en")
    settings = phase.trainer_settings("phase2-run1", 2)
    assert (
        set(settings)
        == keywords
        == set(coqui_config.NOT_TRAINING) | {"language", "batch_size", "seed"}
    )
    assert (settings["lr"], settings["epochs"], settings["language"]) == (1e-5, 3, "en")


def test_every_notebook_publishes_under_its_own_stage_only():
    for stem in STAGES:
        source = json.loads((NOTEBOOKS_DIR / f"{stem}.ipynb").read_text())["cells"]
        code = "".join("".join(c["source"]) for c in source if c["cell_type"] == "code")
        assert "publish(" in code and f'"{stem}"' in code, stem
        assert "glue(" not in code, f"{stem} glues directly instead of publishing"
        others = [s for s in STAGES if s != stem and f'"{s}"' in code]
        assert not others, f"{stem} publishes under {others}"


def test_docs_stages_md_is_generated_from_the_contract():
    from voicebook.core import stages_doc

    doc = (REPO_ROOT / "docs" / "stages.md").read_text()
    assert doc == stages_doc.render(), "docs/stages.md is stale: run `make docs`"
    for stage in stages.STAGES:  # every stage and scrap of the contract is on the page
        assert f"| `{stage.stem}` |" in doc and all(f"`{s}`" in doc for s in stage.scraps)


def test_the_doc_generator_refuses_a_scrap_without_words(monkeypatch):
    from voicebook.core import stages_doc

    monkeypatch.setitem(stages_doc.SCRAPS, "02b_voice_search", {"voice_search": "(dict)"})
    with pytest.raises(KeyError, match=r"without words \['voice_search_curves'\]"):
        stages_doc.render()


def test_publish_refuses_a_scrap_outside_the_contract(tmp_path):
    with pytest.raises(KeyError, match="does not name"):
        scraps.publish(tmp_path, "01_phase1", {"best_mel_cee": 1.0})
    assert not (tmp_path / "results").exists()


def test_a_new_run_replaces_the_record_and_keeps_the_old_one(tmp_path):
    from voicebook.core import runs

    first = runs.start_run("02_phase2", {})
    scraps.publish(tmp_path, "02_phase2", {"stage": "phase2", "best_mel_ce": 5.0,
                                           "params": {"lr": 2e-4}})  # fmt: skip
    scraps.publish(tmp_path, "02_phase2", {"best_step": 3})  # same run: adds to its record
    assert scraps.read_experiment(tmp_path)["02_phase2"] == {
        "stage": "phase2",
        "best_mel_ce": 5.0,
        "params": {"lr": 2e-4},
        "best_step": 3,
    }
    runs.start_run("02_phase2", {})  # the notebook run again (any kernel): a new run
    scraps.publish(tmp_path, "02_phase2", {"stage": "phase2", "best_mel_ce": 4.0,
                                           "params": {"lr": 1e-6}})  # fmt: skip
    assert scraps.read_experiment(tmp_path)["02_phase2"]["params"] == {"lr": 1e-6}
    history = list((tmp_path / "results" / "history").glob("02_phase2.*.json"))
    assert len(history) == 1 and json.loads(history[0].read_text())["scraps"]["best_mel_ce"] == 5.0
    assert json.loads(history[0].read_text())["run_id"] == first.id
    rows = scraps.provenance(tmp_path)
    assert rows[0]["stage"] == "02_phase2" and rows[0]["parameters"] == "lr=1e-06"
    runs.forget("02_phase2")


def test_least_bad_is_the_best_on_the_evidence_not_the_fallback():
    cands = [
        decision.CandidateEvidence("base", "base", mel_ce=7.08, text_ce=0.065),
        decision.CandidateEvidence("phase1", "phase 1", mel_ce=5.34, text_ce=0.044),
        decision.CandidateEvidence("phase2", "phase 2", mel_ce=5.16, text_ce=0.042),
    ]
    cands[0].speaker_similarity, cands[2].speaker_similarity = 0.39, 0.45
    d = decision.decide(cands)
    assert not d.ready and d.winner == "phase2"
    assert "Least bad on the measured evidence: phase 2" in " ".join(d.reasons)
    assert [v.status for v in d.verdicts if v.candidate == "phase2"] == ["least bad"]


# --- the flows of the issue: plain papermill anywhere, and papermill after voicebook run --------

# keep_best 1: one kept model, so no selection pass (its own tests: test_training_runs)
CHEAP = ["-p", "max_steps", "2", "-p", "epochs", "1", "-p", "eval_every", "2",
         "-p", "keep_best", "1"]  # fmt: skip
CHEAP_EVAL = ["-p", "max_eval_batches", "1", "-p", "n_reference_clips", "1",
              "-p", "codebook_clips_per_source", "2", "-p", "hidden_reference_sentences", "0",
              "-p", "takes", "1", "-y", 'stress_sentences: ["Na és?"]',
              "-y", 'test_sentences: ["Jó napot."]', "-p", "audio_tokens_per_char",
              str(DEMO_TOKEN_CAP)]  # fmt: skip


def _papermill(stem: str, out, *args: str) -> None:
    cmd = [sys.executable, "-m", "papermill", f"{stem}.ipynb", str(out), "-k", "voicebook"]
    subprocess.run([*cmd, *args], cwd=NOTEBOOKS_DIR, check=True, capture_output=True)


def _decision(outputs, experiment):
    path = outputs / experiment / "decision.json"
    return json.loads(path.read_text()), (outputs / experiment / "report.html").read_text()


def _cell_alone(stem: str, marker: str, out, *args: str) -> None:
    """Run the parameters cell and the one cell holding ``marker`` of ``stem`` in a fresh
    kernel: what a person does after a restart."""
    import nbformat

    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code" and (
        "parameters" in c.metadata.get("tags", []) or marker in c.source)]  # fmt: skip
    assert len(nb.cells) == 2
    nbformat.write(nb, out)
    cmd = [sys.executable, "-m", "papermill", str(out), str(out), "-k", "voicebook"]
    subprocess.run([*cmd, *args], cwd=NOTEBOOKS_DIR, check=True, capture_output=True)


def _numbers(result) -> dict:
    return {c.name: (c.mel_ce, c.text_ce, c.speaker_similarity) for c in result.candidates}


@pytest.mark.slow
def test_plain_papermill_flow_reaches_the_report_and_a_rerun_replaces_it(tmp_path):
    """The papermill flow to the report; then the evidence as a user changes it: a cell run on
    its own keeps every number, replaced runs make what rests on them stale (issue 20)."""
    from voicebook.decision import report

    outputs, elsewhere = tmp_path / "outputs", tmp_path / "anywhere"
    elsewhere.mkdir()
    where = ["-p", "experiment", "card", "-p", "outputs_dir", str(outputs)]
    _papermill("00_data_prep", elsewhere / "a.ipynb", *where)
    _papermill("01_phase1", elsewhere / "b.ipynb", *where, *CHEAP)
    _papermill("02_phase2", elsewhere / "out.ipynb", *where, *CHEAP, "-p", "lr", "1e-6")
    _papermill("03_evaluation", elsewhere / "c.ipynb", *where, *CHEAP_EVAL)
    _papermill("04_decision_matrix", elsewhere / "d.ipynb", *where)
    first, page = _decision(outputs, "card")
    names = {c["candidate"] for c in first["candidates"]}
    assert {"base", "phase1", "phase2"} <= names and first["tier"] and first["winner"]
    assert all(c["source"] == "evaluation" for c in first["candidates"])
    assert {c["split"] for c in first["candidates"]} == {"test"} and not first["stale"]
    assert "Every number below is on the test split" in page
    first_rows = {c["candidate"]: c for c in first["candidates"]}
    first_minutes = (
        json.loads((outputs / "card" / "phase1" / "status.json").read_text())["train_seconds"] / 60
    )
    assert not any("has not run" in m for m in first["missing"])
    phase2 = next(r for r in first["provenance"] if r["stage"] == "02_phase2")
    assert "lr=1e-06" in phase2["parameters"] and "lr=1e-06" in page
    # the notebook written anywhere still answers whoever asks it
    import scrapbook as sb

    assert sb.read_notebook(str(elsewhere / "out.ipynb")).scraps["params"].data["lr"] == 1e-6

    exp = outputs / "card"  # every file each stage's contract names is there (the writers' side)
    for stage in stages.STAGES:
        lacking = [f for f in stage.files if not (exp / f).exists() and f != "ratings.csv"]
        assert stage is stages.VOICE_SEARCH or not lacking, (stage.stem, lacking)

    # 03's listening-results cell, alone in a fresh kernel: every evaluation number stays
    before = _numbers(report.analyse_experiment(exp))
    _cell_alone(
        "03_evaluation", "listening_results.experiment_results", elsewhere / "l.ipynb", *where
    )
    after = report.analyse_experiment(exp)
    assert _numbers(after) == before and not after.decision.stale
    record = json.loads((exp / "results" / "03_evaluation.json").read_text())
    assert record["amended"][0]["scraps"] == ["ab_pairs", "ab_summary", "hidden_reference",
                                              "listening_left_out", "listening_summary"]  # fmt: skip
    assert "eval_per_source" in record["scraps"] and not (exp / "results" / "history").exists()

    # phase 1 again with another lr: phase 2 and the evaluation rest on its replaced run
    _papermill("01_phase1", elsewhere / "b2.ipynb", *where, *CHEAP, "-p", "lr", "7e-4")
    _papermill("04_decision_matrix", elsewhere / "d2.ipynb", *where)
    second, page = _decision(outputs, "card")
    assert second["winner"] == "" and second["winner_checkpoint"] is None
    # export parity: phase 1's export is of another checkpoint than the one scored, so nothing
    # to compare; phase 2's export and takes are unchanged, so its verdict is reused, not re-run
    assert set(first["export_parity"]) == {"phase1", "phase2"}
    assert second["export_parity"] == {"phase2": first["export_parity"]["phase2"]}
    assert second["rerun"] == ["02_phase2", "03_evaluation"] == second["lineage"]["rerun"]
    assert "phase 1 re-ran at" in " ".join(second["stale"]) and "with lr=0.0007" in page
    stale = {c["candidate"]: c["stale"] for c in second["candidates"]}
    assert stale["phase1"] and stale["phase2"] and not stale["base"]
    assert "No recommendation: the evidence is stale" in page
    # one run per row (issue 36): the phase-1 row keeps the step of the checkpoint it scored,
    # and the LoRA-against-full table keeps the row, with that run's costs, marked stale
    scored = json.loads((exp / "results" / "03_evaluation.json").read_text())["inputs"]
    step = int(scored["candidate phase1"]["path"].rsplit("_", 1)[1].removesuffix(".pth"))
    rows = {c["candidate"]: c for c in second["candidates"]}
    assert rows["phase1"]["best_step"] == step == first_rows["phase1"]["best_step"]
    from voicebook.decision.finetune_compare import finetune_table

    lora_rows = finetune_table(report.analyse_experiment(exp).scraps.evaluation.eval_table,
                               {"phase1": "why"}).set_index("candidate")  # fmt: skip
    assert {"phase1", "phase2"} <= set(lora_rows.index) and lora_rows.loc["phase1", "stale"]
    assert lora_rows.loc["phase1", "minutes"] == pytest.approx(first_minutes)
    lora_part = page.split("Fine-tuning: LoRA against full")[1].split("<h2>")[0]
    assert "phase 1 re-ran at" in lora_part and "phase1" in lora_part
    assert (exp / "results" / "history").is_dir()

    # data prep again (another seed: other splits): everything downstream is stale
    _papermill("00_data_prep", elsewhere / "a2.ipynb", *where, "-p", "seed", "3")
    third = report.analyse_experiment(exp)
    assert third.decision.rerun == ["01_phase1", "02_phase2", "03_evaluation"]
    assert "data prep re-ran at" in third.lineage.stale["01_phase1"][0]


@pytest.mark.slow
def test_voicebook_run_then_plain_papermill_with_the_same_parameters_reuses_the_phase(tmp_path):
    """Two runners on one experiment (issue 36): the runner gives outputs_dir as a folder, a user
    runs papermill from notebooks/ with $VOICEBOOK_OUTPUTS and a YAML file that spells the lr as
    text. The finished phase 2 is reused: nothing archived, the searched voice stays exported.
    Then papermill re-runs phase 1 with another lr: the report reads that run, not the runner's
    older executed notebook (one experiment for both flows: one data prep and phase 1 fewer)."""
    outputs = tmp_path / "outputs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VOICEBOOK_OUTPUTS": str(outputs)}
    search = ["-p", "voice_search.init_from", "phase2", "-p", "generations", "1", "-p",
              "speaker_generations", "1", "-p", "population", "2", "-p", "minibatch", "2", "-p",
              "speaker_minibatch", "1", "-p", "voice_name", "twin"]  # fmt: skip
    run = [sys.executable, "-m", "voicebook.cli", "run", "--experiment", "v2", "--outputs-dir",
           str(outputs), "--stages", "data", "phase1", "phase2", "voice_search", "decision", *CHEAP,
           "-p", "phase2.lr", "1e-6", *search]  # fmt: skip
    subprocess.run(run, check=True, capture_output=True, env=env, cwd=REPO_ROOT)
    phase2 = outputs / "v2" / "phase2"
    status = json.loads((phase2 / "status.json").read_text())
    assert status["params"]["outputs_dir"] == str(outputs)  # the runner's spelling
    export = json.loads((phase2 / "export" / "export.json").read_text())
    assert export["searched_voices"] == ["twin"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "lr: 1e-6\nmax_steps: 2\nepochs: 1\neval_every: 2\nkeep_best: 1\n"
    )  # "1e-6": text
    cmd = [sys.executable, "-m", "papermill", "02_phase2.ipynb", str(tmp_path / "p2.ipynb"),
           "-k", "voicebook", "-p", "experiment", "v2", "-f", str(recipe)]  # fmt: skip
    done = subprocess.run(cmd, check=False, cwd=NOTEBOOKS_DIR, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    notebook = (tmp_path / "p2.ipynb").read_text()
    assert "already finished with these parameters" in notebook
    assert "Parameters differ" not in notebook and not (phase2 / "history").exists()
    again = json.loads((phase2 / "status.json").read_text())
    assert again["run_dir"] == status["run_dir"] and again["params"]["outputs_dir"] == str(outputs)
    export = json.loads((phase2 / "export" / "export.json").read_text())
    assert export["searched_voices"] == ["twin"]
    _papermill_rerun_after_voicebook_run_is_not_shadowed(outputs, "v2", tmp_path)


def _papermill_rerun_after_voicebook_run_is_not_shadowed(outputs, experiment, tmp_path):
    before, _ = _decision(outputs, experiment)
    assert any(r["stage"] == "01_phase1" for r in before["provenance"])
    where = ["-p", "experiment", experiment, "-p", "outputs_dir", str(outputs)]
    _papermill("01_phase1", tmp_path / "p1.ipynb", *where, *CHEAP, "-p", "lr", "7e-4")
    _papermill("04_decision_matrix", tmp_path / "d.ipynb", *where)
    after, page = _decision(outputs, experiment)
    phase1 = next(r for r in after["provenance"] if r["stage"] == "01_phase1")
    assert "lr=0.0007" in phase1["parameters"] and "lr=0.0007" in page
    # the runner's executed notebook of phase 1 is older and is not what the report read
    stale = scraps.read_scraps(outputs / experiment / "notebooks" / "01_phase1.ipynb")
    assert stale["params"]["lr"] != 7e-4


def test_a_training_stage_rerun_after_the_evaluation_is_named_in_missing():
    from voicebook.decision.report import stale_evaluation

    rows = [
        {"stage": "01_phase1", "ran": "2026-11-22T10:00:00"},
        {"stage": "02_phase2", "ran": "2026-11-22T12:00:00"},
        {"stage": "03_evaluation", "ran": "2026-11-22T11:00:00"},
    ]
    (sentence,) = stale_evaluation(rows)
    assert sentence.startswith("02_phase2 ran again") and "re-run 03_evaluation" in sentence
    assert stale_evaluation(rows[:2]) == []  # no evaluation yet: nothing is stale


def test_the_report_puts_voice_search_against_fine_tuning(tmp_path):
    from voicebook.decision import report

    table = pd.DataFrame(
        [
            {"candidate": "base", "label": "base", "mel_ce": 7.08, "voice_mel_ce": 7.078},
            {"candidate": "phase1", "label": "phase 1", "mel_ce": 5.3, "voice_mel_ce": 6.7},
            {"candidate": "base-voice", "label": "base + voice", "mel_ce": 7.08,
             "voice_mel_ce": 7.077},
        ]
    )  # fmt: skip
    found = {
        "03_evaluation": {"eval_table": table},
        "02b_voice_search": {"voice_search": {"method": "cmaes", "minutes": 0.4}},
    }
    page = report.render_report(report.analyse_scraps("x", found, path=tmp_path))
    assert "<h2>Voice search against fine-tuning</h2>" in page
    assert "voice search" in page and "fine-tuning" in page and "7.077" in page
