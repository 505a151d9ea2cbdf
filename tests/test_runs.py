"""Runs, parameters and lineage: a misspelt papermill parameter stops the notebook, a cell run on
its own adds to its stage's latest run, a whole-notebook run is a new run, and numbers resting on
replaced runs are marked stale."""

import json
import subprocess
import sys

import pytest

from voicebook.core import parameters, runs, scraps
from voicebook.core.paths import NOTEBOOKS_DIR
from voicebook.core.stages import STAGES

PARAMS_CELL = 'experiment = "demo"\noutputs_dir = ""\nlr = 5e-4\nlr_floor = 1e-6\n'


def _kernel(*cells: str) -> dict:
    """A notebook namespace whose kernel ran ``cells`` (IPython keeps them in ``In``)."""
    return {"In": ["", *cells], "experiment": "demo", "lr": 5e-4}


def test_a_misspelt_papermill_parameter_names_itself_and_the_closest_declared():
    ns = _kernel(PARAMS_CELL, '# Parameters\nexperiment = "x"\nlrr = 1e-06\n', "run = ...")
    with pytest.raises(parameters.UnknownParameterError) as err:
        parameters.check_parameters(ns)
    assert "'lrr'" in str(err.value) and "did you mean 'lr'" in str(err.value)
    assert "'experiment'" not in str(err.value).split("Declared")[0]  # declared: not refused


def test_declared_injected_parameters_and_runs_without_injection_pass():
    ns = _kernel(PARAMS_CELL, '# Parameters\nlr = 1e-06\nexperiment = "x"\n', "run = ...")
    assert parameters.check_parameters(ns) == ["lr", "experiment"]
    assert parameters.check_parameters(_kernel(PARAMS_CELL, "run = ...")) == []  # JupyterLab
    assert parameters.check_parameters({}) == []  # not a kernel at all


def test_the_stage_notebook_declares_even_when_the_cell_before_is_not_the_parameters_cell():
    ns = _kernel("print(1)", "# Parameters\nresume_from = 3\n", "run = ...")
    assert parameters.check_parameters(ns, "02_phase2") == ["resume_from"]
    with pytest.raises(parameters.UnknownParameterError, match="'warp_drive': no close name"):
        parameters.check_parameters(_kernel("x = 1", "# Parameters\nwarp_drive = 'on'\n"),
                                    "01_phase1")  # fmt: skip
    assert parameters.check_parameters(  # declared since LoRA came
        _kernel("x = 1", "# Parameters\nfinetune = 'lora'\n"), "01_phase1"
    ) == ["finetune"]


def _code_cells(stem: str) -> list[dict]:
    cells = json.loads((NOTEBOOKS_DIR / f"{stem}.ipynb").read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("stem", [s.stem for s in STAGES] + ["05_sweep_report"])
def test_every_notebook_checks_its_parameters_in_the_first_cell_after_them(stem):
    first, after = _code_cells(stem)[:2]
    assert "parameters" in first["metadata"].get("tags", [])
    call = (
        f'start_run("{stem}", globals())'
        if stem != "05_sweep_report"
        else (f'check_parameters(globals(), "{stem}")')
    )
    assert call in "".join(after["source"]), stem


@pytest.mark.slow
def test_papermill_with_a_misspelt_parameter_fails_naming_it(tmp_path):
    cmd = [sys.executable, "-m", "papermill", "01_phase1.ipynb", str(tmp_path / "o.ipynb"),
           "-k", "voicebook", "-p", "lrr", "1e-6", "-p", "outputs_dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, check=False, cwd=NOTEBOOKS_DIR, capture_output=True, text=True)
    assert done.returncode != 0
    assert "declares no parameter named 'lrr'" in done.stderr and "did you mean 'lr'" in done.stderr
    assert not (tmp_path / "demo" / "phase1").exists()  # stopped before training


def test_a_cell_run_on_its_own_adds_to_the_latest_run_and_says_so(tmp_path, capsys):
    run = runs.start_run("03_evaluation", {})
    scraps.publish(tmp_path, "03_evaluation", {"eval_table": "t", "eval_notes": ["a"]})
    runs.forget("03_evaluation")  # a fresh kernel: no run started in it
    scraps.publish(tmp_path, "03_evaluation", {"listening_summary": "s", "eval_notes": ["b"]})
    record = json.loads(runs.record_path(tmp_path, "03_evaluation").read_text())
    assert record["run_id"] == run.id and record["started"] == run.started
    assert set(record["scraps"]) == {"eval_table", "eval_notes", "listening_summary"}
    assert record["scraps"]["eval_notes"] == ["b"]  # updated, the rest kept
    assert record["amended"][0]["scraps"] == ["eval_notes", "listening_summary"]
    assert f"added to the 03_evaluation run {run.id}" in capsys.readouterr().out
    assert not (tmp_path / "results" / "history").exists()  # nothing wiped


def test_a_run_records_its_parameters_inputs_and_outputs(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "metadata_train.csv").write_text("a|b|c\n")
    runs.start_run("00_data_prep", {"experiment": "e", "outputs_dir": str(tmp_path)})
    runs.wrote("00_data_prep", "dataset", tmp_path / "dataset")
    scraps.publish(tmp_path / "e", "00_data_prep", {"n_train": 1})
    prep = runs.latest_run(tmp_path / "e", "00_data_prep")
    run = runs.start_run("01_phase1", {"experiment": "e", "outputs_dir": str(tmp_path),
                                       "lr": 1e-3})  # fmt: skip
    assert run.params["lr"] == 1e-3 and run.experiment == str(tmp_path / "e")
    entry = runs.read_input("phase1", "dataset", tmp_path / "dataset", "00_data_prep")
    assert entry["run_id"] == prep["run_id"] and entry["digest"] == runs.content_digest(
        tmp_path / "dataset"
    )
    scraps.publish(tmp_path / "e", "01_phase1", {"best_mel_ce": 5.0})
    record = json.loads(runs.record_path(tmp_path / "e", "01_phase1").read_text())
    assert record["params"]["lr"] == 1e-3 and record["inputs"]["dataset"]["stage"] == "00_data_prep"
    (tmp_path / "dataset" / "metadata_train.csv").write_text("a|b|d\n")
    assert runs.content_digest(tmp_path / "dataset") != entry["digest"]
    runs.forget("00_data_prep"), runs.forget("01_phase1")


# --- lineage: records made by hand, as the stages write them ----------------------------------


def _record(exp, stem, run_id, started, inputs=None, outputs=None, params=None, scraps_=None):
    path = runs.record_path(exp, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": stem, "run_id": run_id, "started": started, "params": params or {},
              "inputs": inputs or {}, "outputs": outputs or {}, "scraps": scraps_ or {}}  # fmt: skip
    path.write_text(json.dumps(record))


def _entry(path, stem, run_id, started):
    return {"path": str(path), "digest": runs.content_digest(path), "stage": stem,
            "run_id": run_id, "started": started}  # fmt: skip


def _pipeline(tmp_path):
    """data prep -> phase 1 -> phase 2 -> evaluation (base, phase1, phase2), all current."""
    from voicebook.core import lineage

    ds, p1, p2 = tmp_path / "dataset", tmp_path / "phase1" / "b.pth", tmp_path / "phase2" / "b.pth"
    ds.mkdir(), p1.parent.mkdir(), p2.parent.mkdir()
    (ds / "metadata_train.csv").write_text("x\n"), p1.write_bytes(b"1"), p2.write_bytes(b"2")
    t = "2026-12-02T09:1"
    _record(tmp_path, "00_data_prep", "d1", t + "0:00", outputs={"dataset": _entry(ds, "", "", "")})
    data = _entry(ds, "00_data_prep", "d1", t + "0:00")
    _record(tmp_path, "01_phase1", "a1", t + "1:00", {"dataset": data},
            {"best_checkpoint": _entry(p1, "", "", "")}, {"lr": 5e-4})  # fmt: skip
    _record(tmp_path, "02_phase2", "b1", t + "2:00",
            {"dataset": data, "parent": _entry(p1, "01_phase1", "a1", t + "1:00")},
            {"best_checkpoint": _entry(p2, "", "", "")})  # fmt: skip
    _record(tmp_path, "03_evaluation", "e1", t + "3:00",
            {"dataset": data, "candidate phase1": _entry(p1, "01_phase1", "a1", t + "1:00"),
             "candidate phase2": _entry(p2, "02_phase2", "b1", t + "2:00")})  # fmt: skip
    assert lineage.assess(tmp_path).stale == {}
    return ds, p1, p2


def test_a_phase1_rerun_with_another_lr_makes_phase2_and_the_evaluation_stale(tmp_path):
    from voicebook.core import lineage

    _pipeline(tmp_path)
    hist = tmp_path / "results" / "history"
    hist.mkdir()
    (hist / "01_phase1.x.a1.json").write_text(json.dumps({"params": {"lr": 5e-4}}))
    new = tmp_path / "phase1" / "run2.pth"
    new.write_bytes(b"new")
    _record(tmp_path, "01_phase1", "a2", "2026-12-02T10:42:00", params={"lr": 5e-5},
            outputs={"best_checkpoint": _entry(new, "", "", "")})  # fmt: skip
    found = lineage.assess(tmp_path)
    assert found.rerun == ["02_phase2", "03_evaluation"]
    why = found.stale_input("03_evaluation", "candidate phase1")
    assert why == ("phase 1 re-ran at 10:42 with lr=5e-05; the evaluation scored the run of 09:11")
    assert "phase 2, which is stale" in found.stale_input("03_evaluation", "candidate phase2")
    assert found.stale_input("03_evaluation", "dataset") is None  # the base row stays current
    assert found.sentences()[-1] == "Re-run 02_phase2, then 03_evaluation."


def test_a_rerun_that_keeps_the_same_checkpoint_replaces_nothing(tmp_path):
    from voicebook.core import lineage

    _, p1, _ = _pipeline(tmp_path)  # phase 1 ran again, found its work done: same best model
    _record(tmp_path, "01_phase1", "a2", "2026-12-02T10:42:00",
            outputs={"best_checkpoint": _entry(p1, "", "", "")})  # fmt: skip
    assert lineage.assess(tmp_path).stale == {}
    p1.write_bytes(b"overwritten")  # ... but a changed file is stale whoever changed it
    assert "changed since phase 2 read it" in lineage.assess(tmp_path).stale["02_phase2"][0]


def test_data_prep_rerun_marks_everything_downstream_and_a_gone_file_is_named(tmp_path):
    from voicebook.core import lineage

    ds, _, p2 = _pipeline(tmp_path)
    (ds / "metadata_train.csv").write_text("other clips\n")
    _record(tmp_path, "00_data_prep", "d2", "2026-12-02T11:00:00",
            outputs={"dataset": _entry(ds, "", "", "")})  # fmt: skip
    found = lineage.assess(tmp_path)
    assert found.rerun == ["01_phase1", "02_phase2", "03_evaluation"]
    assert found.stale["01_phase1"] == [
        "data prep re-ran at 11:00; phase 1 used the dataset of the run of 09:10"
    ]
    p2.unlink()
    assert "no longer exists" in lineage.assess(tmp_path).stale_input(
        "03_evaluation", "candidate phase2"
    )


def test_a_new_run_that_publishes_only_a_later_cell_adds_to_the_latest_run(tmp_path):
    first = runs.start_run("03_evaluation", {})
    scraps.publish(tmp_path, "03_evaluation", {"eval_table": "t"})
    runs.start_run("03_evaluation", {})  # restart, the setup cell, then the codebook cell
    scraps.publish(tmp_path, "03_evaluation", {"codebook": {"quiz": 3}})
    record = json.loads(runs.record_path(tmp_path, "03_evaluation").read_text())
    assert record["run_id"] == first.id and set(record["scraps"]) == {"eval_table", "codebook"}
    second = runs.start_run("03_evaluation", {})  # Run All: the evaluation cell comes first
    scraps.publish(tmp_path, "03_evaluation", {"eval_table": "u"})
    record = json.loads(runs.record_path(tmp_path, "03_evaluation").read_text())
    assert record["run_id"] == second.id and record["scraps"] == {"eval_table": "u"}
    runs.forget("03_evaluation")


def test_an_input_not_made_by_the_latest_run_of_its_stage_is_stale_at_once(tmp_path):
    from voicebook.core import lineage

    old, new = tmp_path / "phase1" / "run1" / "best_1.pth", tmp_path / "phase1" / "run2" / "b.pth"
    for p in (old, new):
        p.parent.mkdir(parents=True)
        p.write_bytes(p.name.encode())
    _record(tmp_path, "01_phase1", "a2", "2026-12-02T10:42:00",
            outputs={"best_checkpoint": _entry(new, "", "", "")})  # fmt: skip
    runs.start_run("02b_voice_search", {"experiment": tmp_path.name,
                                        "outputs_dir": str(tmp_path.parent)})  # fmt: skip
    entry = runs.read_input("02b_voice_search", "checkpoint", old, "phase1")
    assert entry["not_latest"] == "2026-12-02T10:42:00" and "run_id" not in entry
    same_run = runs.read_input("02b_voice_search", "other", new.parent / "checkpoint_9.pth",
                               "phase1")  # fmt: skip
    assert same_run["run_id"] == "a2"  # another checkpoint of the latest run folder
    runs.current("02b_voice_search").inputs.pop("other")
    scraps.publish(tmp_path, "02b_voice_search", {"voice_search": {}})
    found = lineage.assess(tmp_path)
    assert found.stale["02b_voice_search"] == [
        f"the voice search read {old}, which is not from the latest run of phase 1 (10:42)"
    ]
    runs.forget("02b_voice_search")


def test_a_sweep_trial_rests_on_the_shared_data_prep_run_as_on_its_own(tmp_path):
    """A trial's ``dataset`` links to the sweep's shared data prep (issue 36): its phase records
    that run as its input, so lineage follows it; only a real change there makes it stale."""
    from voicebook.core import lineage

    shared, trial = tmp_path / "data_prep", tmp_path / "s1__lr-0.001"
    ds = shared / "dataset"
    ds.mkdir(parents=True), trial.mkdir()
    (ds / "metadata_train.csv").write_text("x\n")
    (trial / "dataset").symlink_to("../data_prep/dataset", target_is_directory=True)
    made = {"dataset": _entry(ds, "", "", "")}
    _record(shared, "00_data_prep", "d1", "2026-12-02T09:10:00", outputs=made)
    _record(trial, "00_data_prep", "d1", "2026-12-02T09:10:00", outputs=made)  # the trial's copy
    runs.start_run("01_phase1", {"experiment": trial.name, "outputs_dir": str(tmp_path)})
    entry = runs.read_input("phase1", "dataset", trial / "dataset", "00_data_prep")
    assert entry["run_id"] == "d1" and entry["experiment"] == str(shared)
    assert "not_latest" not in entry
    scraps.publish(trial, "01_phase1", {"best_mel_ce": 5.0})
    runs.forget("01_phase1")
    assert lineage.assess(trial).stale == {}
    _record(shared, "00_data_prep", "d2", "2026-12-02T11:00:00", outputs=made)  # same dataset
    assert lineage.assess(trial).stale == {}  # a re-run that kept the same files replaces nothing
    (ds / "metadata_train.csv").write_text("other clips\n")
    _record(shared, "00_data_prep", "d3", "2026-12-02T11:30:00",
            outputs={"dataset": _entry(ds, "", "", "")})  # fmt: skip
    assert lineage.assess(trial).stale["01_phase1"] == [
        "data prep re-ran at 11:30; phase 1 used the dataset of the run of 09:10"
    ]


def test_where_the_numbers_come_from_names_the_decision_run_writing_the_report(tmp_path):
    """04 writes its report before it publishes its record (issue 36): the report's provenance
    names the run writing it, not the previous one."""
    _record(tmp_path / "e", "04_decision_matrix", "old", "2026-12-02T09:00:00")
    _record(tmp_path / "e", "01_phase1", "p1", "2026-12-02T08:00:00")
    run = runs.start_run("04_decision_matrix", {"experiment": "e", "outputs_dir": str(tmp_path)})
    rows = {r["stage"]: r for r in scraps.provenance(tmp_path / "e")}
    assert rows["04_decision_matrix"]["run"] == run.id != "old"
    assert rows["04_decision_matrix"]["recorded"] == "(running now)"
    assert rows["01_phase1"]["run"] == "p1"
    other = {r["stage"]: r["run"] for r in scraps.provenance(tmp_path / "f")}  # another experiment
    assert other == {}
    runs.forget("04_decision_matrix")
    assert {r["stage"]: r["run"] for r in scraps.provenance(tmp_path / "e")}[
        "04_decision_matrix"
    ] == "old"
