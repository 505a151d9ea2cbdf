"""Sweeps: grid expansion, trial names, data prep once, contained failures, skipping finished
trials on a re-run, the sweep report; and a real 2-trial sweep on local Ray on the tiny base."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from stub_notebooks import write_stub_notebook

from voicebook import sweep
from voicebook.models import resolve_base
from voicebook.paths import REPO_ROOT
from voicebook.sweep import SweepError, SweepSpec, Trial

# --- the grid and the names ------------------------------------------------------------------


def test_grid_expands_every_combination_last_axis_fastest():
    grid = sweep.expand_grid([("phase1.lr", [1e-6, 2e-6, 5e-6]), ("phase2.lr", [5e-7, 1e-6])])
    assert len(grid) == 6
    assert grid[:3] == [
        {"phase1.lr": 1e-6, "phase2.lr": 5e-7},
        {"phase1.lr": 1e-6, "phase2.lr": 1e-6},
        {"phase1.lr": 2e-6, "phase2.lr": 5e-7},
    ]
    assert sweep.expand_grid([]) == [{}]
    with pytest.raises(SweepError, match="swept twice"):
        sweep.expand_grid([("lr", [1, 2]), ("lr", [3, 4])])


def test_listed_trials_cross_the_grid(tmp_path):
    file = tmp_path / "trials.yaml"
    file.write_text("- {phase1.lr: 1.0e-6}\n- {phase1.lr: 2.0e-6, epochs: 3}\n")
    listed = sweep.load_trials(file)
    sets = sweep.combine(listed, sweep.expand_grid([("seed", [1, 2])]))
    assert sets == [
        {"phase1.lr": 1e-6, "seed": 1},
        {"phase1.lr": 1e-6, "seed": 2},
        {"phase1.lr": 2e-6, "epochs": 3, "seed": 1},
        {"phase1.lr": 2e-6, "epochs": 3, "seed": 2},
    ]
    file.write_text("phase1.lr: 1e-6\n")
    with pytest.raises(SweepError, match="must be a YAML list of mappings"):
        sweep.load_trials(file)


def test_command_line_one_value_is_fixed_several_are_an_axis(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("max_steps: 10\nepochs: 2\n")
    args = sweep.parse_args(
        ["--name", "g", "-p", "phase1.lr", "1e-6", "2e-6", "-p", "epochs", "1", "-f", str(base)]
    )
    spec = sweep.spec_from_args(args)
    assert spec.fixed == {"max_steps": 10, "epochs": 1}  # -p wins over the file
    assert spec.parameter_sets == [{"phase1.lr": 1e-6}, {"phase1.lr": 2e-6}]


def test_trial_names_are_readable_safe_and_distinct():
    name = sweep.trial_name("lr_grid", {"phase1.lr": 1e-6, "phase2.lr": 5e-7})
    assert name == "lr_grid__phase1.lr-1e-06__phase2.lr-5e-07"
    odd = sweep.trial_name("s", {"sources": [{"path": "data/demo quiz"}], "note": "../x"})
    assert "/" not in odd and " " not in odd and not odd.startswith(".")
    long = sweep.trial_name("s", {f"key{i}": "v" * 20 for i in range(10)})
    assert len(long) == sweep.MAX_NAME
    trials = sweep.make_trials("s", [{"x": "a/b"}, {"x": "a_b"}])  # both clean to "a_b"
    assert len({t.name for t in trials}) == 2
    assert sweep.trial_name("s", {}) == "s__default"
    with pytest.raises(SweepError, match="not usable as a folder name"):
        sweep.check_name("../up")


def test_finished_trials_are_skipped_failed_and_missing_ones_run(tmp_path):
    trials = [Trial("a", {}), Trial("b", {}), Trial("c", {}), Trial("d", {})]
    earlier = {
        "a": Trial("a", {}, "done"),
        "b": Trial("b", {}, "failed"),
        "d": Trial("d", {}, "done"),
    }
    (tmp_path / "a").mkdir()  # d's folder was deleted: it runs again
    assert [t.name for t in sweep.to_run(trials, earlier, tmp_path)] == ["b", "c", "d"]


def test_a_trial_shares_data_prep_unless_it_changes_a_data_prep_parameter():
    declared = {"00_data_prep": {"seed", "language"}}.__getitem__
    assert sweep.shares_data_prep({"phase1.lr": 1e-6}, {"seed": 0}, declared)
    assert sweep.shares_data_prep({"phase1.seed": 3}, {"seed": 0}, declared)
    assert not sweep.shares_data_prep({"seed": 3}, {"seed": 0}, declared)
    assert not sweep.shares_data_prep({"data_prep.language": "en"}, {}, declared)


# --- the whole flow on stand-in notebooks (no Ray, seconds) -----------------------------------


DATA_PREP = """
from pathlib import Path
exp = Path(outputs_dir) / experiment
(exp / "dataset").mkdir(parents=True, exist_ok=True)
(exp / "dataset" / "metadata_train.csv").write_text(f"seed {seed}")
with open(Path(outputs_dir).parent / "data_prep_runs.txt", "a") as f:
    f.write(experiment + "\\n")
"""
PHASE1 = """
from pathlib import Path
from voicebook.scraps import glue
exp = Path(outputs_dir) / experiment
if not Path(base_model).exists():
    raise FileNotFoundError(f"base model {base_model} is missing")
assert (exp / "dataset" / "metadata_train.csv").is_file(), "no dataset"
glue("stage", "phase1")
glue("best_mel_ce", 3.0 - lr * 1e4)
glue("best_text_ce", 0.02)
glue("best_checkpoint", "best_model.pth")
"""


@pytest.fixture
def stand_ins(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    common = "experiment = 'x'\noutputs_dir = ''\n"
    write_stub_notebook(folder / "00_data_prep.ipynb", common + "seed = 0\n", DATA_PREP)
    write_stub_notebook(
        folder / "01_phase1.ipynb", common + "lr = 1e-5\nbase_model = '/'\n", PHASE1
    )
    return folder


def test_sweep_runs_data_prep_once_contains_a_failure_and_reruns_only_it(stand_ins, tmp_path):
    out, later_base = tmp_path / "outputs", tmp_path / "base_copied_later"
    sets = [{"phase1.lr": 1e-5}, {"phase1.lr": 2e-5, "base_model": str(later_base)}]
    spec = SweepSpec("g", sets, {"seed": 7}, None, out, stand_ins)
    lines: list[str] = []
    engine = sweep.LocalEngine

    summary = sweep.run_sweep(spec, engine, echo=lines.append)
    folder = out / "g"
    ok, bad = (t["name"] for t in summary["trials"])
    assert [t["status"] for t in summary["trials"]] == ["done", "failed"]
    failed = summary["trials"][1]
    assert "StageFailed" in failed["error"] and "base_copied_later is missing" in failed["error"]
    assert (folder / bad / "notebooks" / "01_phase1.ipynb").is_file()  # its outputs are kept
    assert (out / "data_prep_runs.txt").read_text().split() == ["data_prep"]
    assert (folder / ok / "dataset").is_symlink()
    assert (folder / ok / "dataset" / "metadata_train.csv").read_text() == "seed 7"
    assert json.loads((folder / "sweep.json").read_text())["trials"] == summary["trials"]
    assert sum(line.startswith("[") for line in lines) == 2  # a line per trial finished

    table = sweep.sweep_table(folder)
    assert list(table.columns[:3]) == ["trial", "phase1.lr", "base_model"]
    assert table.loc[0, "ships"] == "phase 1" and table.loc[0, "mel_ce"] == pytest.approx(2.9)
    assert table.loc[1, "status"] == "failed" and "is missing" in table.loc[1, "error"]
    assert sweep.favoured(table)[0] == ok
    assert (tmp_path / "outputs" / "g" / sweep.REPORT_NAME).is_file()

    later_base.mkdir()  # the fix; the same command again runs only the failed trial
    lines.clear()
    summary = sweep.run_sweep(spec, engine, echo=lines.append)
    assert [t["status"] for t in summary["trials"]] == ["done", "done"]
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [f"[1/1] {bad}"]
    assert not (folder / ok / "notebooks" / "history").exists()  # not run again
    assert (out / "data_prep_runs.txt").read_text().split() == ["data_prep"]
    table = sweep.sweep_table(folder)
    assert sweep.favoured(table)[0] == bad  # lr 2e-5: Mel CE 2.8 beats 2.9
    page = (folder / sweep.REPORT_NAME).read_text()
    assert f"Favoured: {bad}" in page and (folder / "sweep_report.prev.html").is_file()


def test_a_trial_changing_data_prep_builds_its_own_dataset(stand_ins, tmp_path):
    out = tmp_path / "outputs"
    spec = SweepSpec("d", [{"seed": 1}, {"seed": 2}], {}, None, out, stand_ins)
    summary = sweep.run_sweep(spec, sweep.LocalEngine, echo=lambda _: None)
    assert [t["own_data_prep"] for t in summary["trials"]] == [True, True]
    assert summary["data_prep"] is None  # nobody shares it: the shared one never ran
    runs = (out / "data_prep_runs.txt").read_text().split()
    assert runs == ["d__seed-1", "d__seed-2"]
    assert (out / "d" / "d__seed-2" / "dataset" / "metadata_train.csv").read_text() == "seed 2"


def test_a_changed_sweep_is_refused_and_unknown_parameters_stop_it_early(stand_ins, tmp_path):
    out = tmp_path / "outputs"
    spec = SweepSpec("c", [{"lr": 1e-5}], {"seed": 1}, None, out, stand_ins)
    sweep.run_sweep(spec, sweep.LocalEngine, echo=lambda _: None)
    spec.fixed = {"seed": 2}
    with pytest.raises(SweepError, match="another --name"):
        sweep.run_sweep(spec, sweep.LocalEngine, echo=lambda _: None)
    typo = SweepSpec("t", [{"lr_typo": 1}], {}, None, out, stand_ins)
    with pytest.raises(Exception, match="No selected stage has a parameter 'lr_typo'"):
        sweep.run_sweep(typo, sweep.LocalEngine, echo=lambda _: None)
    assert not (out / "t").exists()


# --- the real thing: the stage notebooks on the tiny base, trials as Ray tasks ---------------

CHEAP = [
    "-p", "max_steps", "3", "-p", "epochs", "1", "-p", "eval_every", "2",
    "-p", "max_eval_batches", "1", "-p", "test_sentences", '["Jó napot."]',
    "-p", "n_reference_clips", "1", "-p", "codebook_clips_per_source", "2",
]  # fmt: skip


@pytest.mark.slow
def test_two_trial_sweep_on_local_ray_reports_and_reruns_only_the_failed_trial(tmp_path):
    """Trial 2 names a base-model folder that is not there yet (a base not yet copied to the
    node): it fails, the other finishes; once the folder exists the same command runs only it."""
    out, later_base = tmp_path / "outputs", tmp_path / "tiny_copy"
    trials = tmp_path / "trials.yaml"
    trials.write_text(
        f"- {{phase1.lr: 5.0e-4}}\n- {{phase1.lr: 1.0e-3, phase1.base_model: '{later_base}'}}\n"
    )
    command = [sys.executable, "-m", "voicebook.cli", "sweep", "--name", "ray_grid"]
    command += ["--trials", str(trials), "--stages", "data", "phase1", "eval", *CHEAP]
    command += ["--outputs-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")}

    first = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert first.returncode == 1, first.stdout + first.stderr
    folder = out / "ray_grid"
    summary = json.loads((folder / "sweep.json").read_text())
    ok, bad = summary["trials"]
    assert (ok["status"], bad["status"]) == ("done", "failed")
    assert str(later_base) in bad["error"], bad["error"]
    assert "Engine: Ray (local" in first.stdout and "0 GPU and 1 CPU per trial" in first.stdout
    assert summary["data_prep"]["status"] == "done"
    assert (folder / ok["name"] / "dataset").is_symlink()
    assert (folder / bad["name"] / "notebooks" / "01_phase1.ipynb").is_file()  # kept
    table = sweep.sweep_table(folder)
    assert table.loc[0, "ships"] and table.loc[0, "mel_ce"] > 0
    assert sweep.favoured(table)[0] == ok["name"]

    shutil.copytree(resolve_base("tiny"), later_base)
    second = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 trials, 1 finished earlier (skipped), 1 to run" in second.stdout
    finished = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert len(finished) == 1 and finished[0].startswith(f"[1/1] {bad['name']}: done")
    summary = json.loads((folder / "sweep.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done", "done"]
    assert not (folder / ok["name"] / "notebooks" / "history").exists()  # not run again
    table = sweep.sweep_table(folder)
    assert table["mel_ce"].notna().all() and table["phase1.lr"].tolist() == [5e-4, 1e-3]
    page = (folder / sweep.REPORT_NAME).read_text()
    assert "Favoured: ray_grid__" in page and ok["name"] in page and bad["name"] in page
