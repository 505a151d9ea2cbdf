"""Sweeps on Ray Tune: the grid as Tune's param_space, trial names, data prep once, following
curves.csv, the report's savings; and real sweeps on the tiny base: a 3-trial ASHA sweep on a
fresh local Ray (a stale session file names a dead cluster) that stops a bad lr early, and a
sweep through --address on a 2-node cluster on this machine, through the decision, whose failed
trial re-runs alone."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest
from stub_notebooks import write_stub_notebook

from voicebook.coqui.base import resolve_base
from voicebook.core.fileio import FolderBusy
from voicebook.core.paths import REPO_ROOT
from voicebook.sweep import cli, report, spec, trial
from voicebook.sweep.spec import SweepError, SweepSpec

# --- what a sweep is -------------------------------------------------------------------------


def sweep_args(argv):
    from voicebook.cli import parser

    return parser().parse_args(["sweep", *argv])


def test_command_line_one_value_is_fixed_several_are_an_axis_listed_sets_cross_them(tmp_path):
    base, listed = tmp_path / "base.yaml", tmp_path / "trials.yaml"
    base.write_text("max_steps: 10\nepochs: 2\nseed: 5\n")
    listed.write_text("- {seed: 1}\n- {seed: 2, phase2.lr: 5.0e-7}\n")
    argv = ["--name", "g", "-p", "phase1.lr", "1e-6", "2e-6", "-p", "epochs", "1", "-f", str(base)]
    s = cli.spec_from_args(sweep_args([*argv, "--trials", str(listed)]))
    assert s.fixed == {"max_steps": 10, "epochs": 1}  # -p wins over the file; swept keys leave
    assert s.axes == {"phase1.lr": [1e-6, 2e-6]} and len(s.listed) == 2
    space = s.param_space()
    assert space["phase1.lr"] == {"grid_search": [1e-6, 2e-6]}
    assert space[spec.LISTED] == {"grid_search": [{"seed": 1}, {"seed": 2, "phase2.lr": 5e-7}]}
    assert spec.values_of({"phase1.lr": 1e-6, spec.LISTED: {"seed": 2}}) == {
        "seed": 2,
        "phase1.lr": 1e-6,
    }
    listed.write_text("phase1.lr: 1e-6\n")
    with pytest.raises(SweepError, match="hold a YAML list of mappings"):
        cli.load_trials(listed)
    with pytest.raises(SweepError, match="each -p KEY once"):
        cli.spec_from_args(sweep_args(["--name", "g", "-p", "lr", "1", "2", "-p", "lr", "3"]))


def test_trial_names_are_readable_safe_and_distinct():
    name = spec.trial_name("lr_grid", {"phase1.lr": 1e-6, "phase2.lr": 5e-7})
    assert name == "lr_grid__phase1.lr-1e-06__phase2.lr-5e-07"
    odd = spec.trial_name("s", {"sources": [{"path": "data/demo quiz"}], "note": "../x"})
    assert "/" not in odd and " " not in odd and not odd.startswith(".")
    long = spec.trial_name("s", {f"key{i}": "v" * 20 for i in range(10)})
    assert len(long) == spec.MAX_NAME
    assert spec.trial_name("s", {"x": "a/b"}) != spec.trial_name("s", {"x": "a_b"})
    assert spec.trial_name("s", {}) == "s__default"


def test_a_changed_sweep_is_refused_and_one_driver_holds_the_lock(tmp_path):
    s = SweepSpec("c", {"lr": [1, 2]}, [], {"seed": 1}, outputs_dir=str(tmp_path))
    before = spec.same_sweep(None, s, ["01_phase1"])
    assert before["axes"] == {"lr": [1, 2]} and "created_at" in before
    assert spec.same_sweep(before, s, ["01_phase1"])["created_at"] == before["created_at"]
    s.fixed = {"seed": 2}
    with pytest.raises(SweepError, match="another --name"):
        spec.same_sweep(before, s, ["01_phase1"])
    with (
        spec.locked(tmp_path),
        pytest.raises(FolderBusy, match="Another `voicebook sweep`"),
        spec.locked(tmp_path),
    ):
        pass
    holds = f"from voicebook.sweep import spec\nwith spec.locked({str(tmp_path)!r}):\n    print('held', flush=True)\n    input()"  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-c", holds], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert driver.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusy, match=f"{socket.gethostname()} {driver.pid}"):
        spec.locked(tmp_path).__enter__()  # the error names the living holder
    driver.kill()
    driver.wait()
    with spec.locked(tmp_path):  # a dead driver's lock is taken over
        assert (tmp_path / spec.LOCK_NAME).read_text().endswith(str(os.getpid()))
    with spec.locked(tmp_path):  # and a released one is free again
        pass
    with pytest.raises(SweepError, match="not usable as a folder name"):
        SweepSpec("../up")


RACER = """
import sys, time
from voicebook.core.fileio import FolderBusy
from voicebook.sweep import spec
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every racer asks at the same moment
try:
    with spec.locked(sys.argv[1]):
        print("got", flush=True)
        time.sleep(1.5)  # held while the others ask
except FolderBusy:
    print("busy", flush=True)
"""


def test_of_drivers_that_ask_at_once_exactly_one_holds_the_sweep(tmp_path):
    """The race of the hand-made lock (two processes that both found a dead holder's file both
    went on): with the OS lock, exactly one of several processes asking at once gets it, also
    when a dead driver's file is there."""
    (tmp_path / spec.LOCK_NAME).write_text(f"{socket.gethostname()} 999999999")  # a dead one
    start = f"{time.time() + 3:.3f}"  # after every interpreter has started
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), start],
                               stdout=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    said = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
    assert said == ["busy", "busy", "got"]


def test_a_trial_shares_data_prep_unless_it_changes_a_data_prep_parameter(tmp_path):
    common = "experiment = 'x'\noutputs_dir = ''\n"
    write_stub_notebook(tmp_path / "00_data_prep.ipynb", common + "seed = 0\nlanguage = 'hu'\n", "")
    write_stub_notebook(tmp_path / "01_phase1.ipynb", common + "seed = 0\nlr = 1e-5\n", "")
    job = {"stages": ["00_data_prep", "01_phase1"], "fixed": {"seed": 0},
           "notebooks_dir": str(tmp_path)}  # fmt: skip
    stages, params, shared = trial.plan_trial(job, {"phase1.lr": 1e-6})
    assert shared and stages == ["01_phase1"] and params == {"01_phase1": {"seed": 0, "lr": 1e-6}}
    assert trial.plan_trial(job, {"phase1.seed": 3})[2]
    stages, params, shared = trial.plan_trial(job, {"seed": 3})
    assert not shared and stages == job["stages"] and params["00_data_prep"] == {"seed": 3}
    assert not trial.plan_trial(job, {"data_prep.language": "en"})[2]
    with pytest.raises(Exception, match="No selected stage has a parameter 'lr_typo'"):
        trial.plan_trial(job, {"lr_typo": 1})


# --- following curves.csv, the report's savings ------------------------------------------------

HEADER = "step,split,loss_mel_ce,loss_text_ce,loss,lr,grad_norm\n"


def test_the_follower_reports_new_eval_rows_on_one_step_count_across_phases(tmp_path):
    (tmp_path / "phase1").mkdir()
    curves = tmp_path / "phase1" / "curves.csv"
    follower = trial.CurveFollower(tmp_path, ["01_phase1", "02_phase2"])
    assert follower.new_rows() == []
    curves.write_text(HEADER + "0,eval,9.0,0.03,9.03,,\n1,train,8.0,0.02,8.02,1e-3,1.0\n2,ev")
    assert follower.new_rows() == [{"step": 0, "eval_mel_ce": 9.0, "eval_text_ce": 0.03}]
    with curves.open("a") as f:  # the half-written row is completed
        f.write("al,7.5,0.02,7.52,,\n")
    assert follower.new_rows() == [{"step": 2, "eval_mel_ce": 7.5, "eval_text_ce": 0.02}]
    assert follower.new_rows() == []
    (tmp_path / "phase2").mkdir()
    (tmp_path / "phase2" / "curves.csv").write_text(HEADER + "0,eval,7.4,0.02,7.42,,\n")
    assert [r["step"] for r in follower.new_rows()] == [2]  # phase 2 continues phase 1's count


def test_trials_stopped_early_show_the_steps_and_minutes_they_saved():
    table = pd.DataFrame(
        {
            "trial": ["a", "b", "c", "d"],
            "status": ["done", "done", report.STOPPED, "failed"],
            "step": [20, 20, 4, 2],
            "minutes": [3.0, 5.0, 1.0, 0.5],
            "saved_steps": [None] * 4,
            "saved_minutes": [None] * 4,
        }
    ).astype(object)
    out = report.savings(table)
    assert out.loc[2, "saved_steps"] == 16 and out.loc[2, "saved_minutes"] == pytest.approx(3.0)
    assert out[["saved_steps", "saved_minutes"]].drop(index=2).isna().all().all()


def test_the_favoured_trial_is_green_only_when_what_it_would_ship_is_ready():
    rows = {"trial": ["a", "b"], "status": ["done", "done"], "ships": ["phase 1", "base"],
            "ready": [False, False], "tier": [None, None], "mel_ce": [6.6, 7.0],
            "best_tuned_mel_ce": [6.6, 6.9]}  # fmt: skip
    table = pd.DataFrame(rows).astype(object)
    winner, why = report.favoured(table)
    assert winner == "a" and why.startswith("a has nothing ready to ship: phase 1 (tier unknown")
    assert report._box_class(table, winner) == "box warn"
    table.loc[1, ["ready", "tier"]] = True, "good"
    winner, why = report.favoured(table)
    assert winner == "b" and why.startswith("b would ship base (ready, tier good, eval Mel CE 7)")
    assert report._box_class(table, winner) == "box"
    assert report._box_class(table, None) == "box warn"


# --- Ray ---------------------------------------------------------------------------------------


class _Started(Exception):
    pass


def test_without_an_address_the_sweep_starts_its_own_ray_whatever_a_session_file_says(
    monkeypatch, tmp_path
):
    """A killed Ray leaves ``ray_current_cluster`` naming a dead cluster; ``ray.init()`` would
    join it. The sweep asks for ``address="local"`` (a new instance); with --address, that one."""
    import ray

    from voicebook.sweep.tuner import Resources, connect

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    asked = []

    def init(**options):
        asked.append(options)
        raise _Started

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    for address in (None, "10.0.0.5:6379"):
        with pytest.raises(_Started):
            connect(Resources(address=address))
    assert [a["address"] for a in asked] == ["local", "10.0.0.5:6379"]
    assert "object_store_memory" in asked[0] and "object_store_memory" not in asked[1]
    env = asked[0]["runtime_env"]
    assert env["working_dir"] == str(REPO_ROOT) and env["env_vars"] == {"PYTHONPATH": "lib"}
    assert {".venv", "outputs", ".git"} <= set(env["excludes"])


# --- real sweeps on the tiny base -------------------------------------------------------------

# max_steps caps the run; keep_best 1: one kept model, no selection pass (test_training_runs)
CHEAP = ["-p", "epochs", "20", "-p", "eval_every", "2", "-p", "keep_best", "1"]


def _sweep(name, out, *args, ray_tmp=None):
    command = [sys.executable, "-m", "voicebook.cli", "sweep", "--name", name, *CHEAP]
    command += ["--outputs-dir", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")}
    if ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp
    start = time.monotonic()
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, cwd=out.parent
    )
    return done, time.monotonic() - start


@pytest.fixture
def ray_tmp():
    """A Ray temp folder of this test's own (short: Ray's socket paths must fit 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="vbray", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_asha_stops_a_bad_lr_early_on_a_fresh_local_ray_despite_a_stale_session(tmp_path, ray_tmp):
    """Three trials, 1 CPU each: two learn, the third (lr 1e-9, last, so the others have reached
    the rungs) does not. A stale Ray session file names a dead cluster: the sweep starts its own."""
    os.makedirs(f"{ray_tmp}/ray")
    with open(f"{ray_tmp}/ray/ray_current_cluster", "w") as f:
        f.write("127.0.0.1:1\n")  # what a killed Ray leaves behind; joining it fails
    out = tmp_path / "outputs"
    out.mkdir()
    lrs, steps = ["1e-3", "2e-3", "1e-9"], 8  # rungs at steps 2, 4 and 8
    done, seconds = _sweep("asha", out, "--stages", "data", "phase1", "-p", "max_steps", str(steps),
                           "-p", "phase1.lr", *lrs, "--grace-steps", "2", ray_tmp=ray_tmp)  # fmt: skip
    print(f"3-trial ASHA sweep: {seconds:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Engine: Ray Tune (local" in done.stdout and "scheduler asha" in done.stdout
    folder = out / "asha"
    table = report.sweep_table(folder)
    bad = table[table["phase1.lr"] == 1e-9].iloc[0]
    assert bad["status"] == report.STOPPED, table.to_string()
    assert bad["step"] < steps and bad["saved_steps"] >= steps - bad["step"] - 1
    assert bad["saved_minutes"] > 0
    assert (table["status"] == "done").sum() >= 1
    exp = folder / bad["trial"]
    status = json.loads((exp / "phase1" / "status.json").read_text())
    assert status["state"] == "interrupted"  # the kernel got Ctrl-C: the phase ended cleanly
    notebook = (exp / "notebooks" / "01_phase1.ipynb").read_text()
    assert "KeyboardInterrupt" in notebook  # papermill kept the executed notebook
    assert (exp / trial.STOPPED_NAME).is_file() and (exp / "dataset").is_symlink()
    page = (folder / report.REPORT_NAME).read_text()
    assert report.STOPPED in page and "Favoured: asha__" in page
    assert json.loads((folder / "sweep.json").read_text())["data_prep"]["status"] == "done"


@pytest.mark.slow
def test_a_sweep_through_address_on_a_two_node_cluster_reruns_only_its_failed_trial(tmp_path):
    """A 2-node Ray cluster on this machine (1 CPU each). Trial 2 names a base-model folder not
    there yet: it fails, the other finishes; once it exists the same command re-runs only it.
    The trials run the code Ray shipped (runtime_env), not this checkout. Then, through the
    decision (issue 36): the trials rest on the shared data prep's run (their datasets link to
    it), so none is stale; each row says what its own decision recommends; a changed dataset is
    stale."""
    from ray.cluster_utils import Cluster

    out, later_base = tmp_path / "outputs", tmp_path / "tiny_copy"
    out.mkdir()
    trials = tmp_path / "trials.yaml"
    trials.write_text(f"- {{phase1.lr: 1.0e-3}}\n- {{phase1.lr: 2.0e-3, "
                      f"phase1.base_model: '{later_base}'}}\n")  # fmt: skip
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        args = ["--trials", str(trials), "--stages", "data", "phase1", "decision", "--address",
                cluster.address, "--scheduler", "none", "-p", "max_steps", "4"]  # fmt: skip
        first, _ = _sweep("cl", out, *args)
        assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
        assert f"Ray Tune (cluster {cluster.address}: 2 CPU" in first.stdout
        folder = out / "cl"
        table = report.sweep_table(folder)
        assert table["status"].tolist() == ["done", "failed"], table.to_string()
        assert str(later_base) in table.loc[1, "error"]
        ok = folder / table.loc[0, "trial"]
        log = (ok / "trial.log").read_text()
        shipped = log.split("voicebook from ")[1].split(";")[0]
        assert "runtime_resources" in shipped and str(REPO_ROOT) not in shipped, log[:500]

        shutil.copytree(resolve_base("tiny"), later_base)
        second, _ = _sweep("cl", out, *args)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "Restoring" in second.stdout
        table = report.sweep_table(folder)
        assert table["status"].tolist() == ["done", "done"]
        assert not (ok / "notebooks" / "history").exists()  # the finished trial did not run again
        assert (folder / table.loc[1, "trial"] / "notebooks" / "history").is_dir()
    finally:
        cluster.shutdown()
    _each_row_says_its_own_decision_and_a_changed_dataset_is_stale(folder, table)


def _each_row_says_its_own_decision_and_a_changed_dataset_is_stale(folder, table) -> None:
    from voicebook.decision.report import analyse_experiment

    for row in table.to_dict("records"):
        exp = folder / row["trial"]
        result = analyse_experiment(exp)
        assert not result.lineage.stale and not result.decision.stale, result.lineage.stale
        assert row["ships"] == result.decision.winner_label and "stale" not in row["ships"]
        assert row["ready"] == result.decision.ready
        inputs = json.loads((exp / "results" / "01_phase1.json").read_text())["inputs"]
        assert inputs["dataset"]["experiment"] == str(folder / spec.SHARED)
        assert json.loads((exp / "decision.json").read_text())["winner"] == result.decision.winner
    winner, why = report.favoured(table)
    page = (folder / report.REPORT_NAME).read_text()
    ready = bool(table.set_index("trial").loc[winner, "ready"])
    assert ('<div class="box">' in page) == ready and ("would ship" in why) == ready
    # the shared dataset changes after the phases read it: the trials rest on it, so are stale
    meta = folder / spec.SHARED / "dataset" / "metadata_train.csv"
    meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")
    stale = analyse_experiment(folder / winner)
    assert "changed since phase 1 read it" in stale.lineage.stale["01_phase1"][0]
    assert stale.decision.stale and stale.decision.winner == ""


PHASE = """
import json, time
from pathlib import Path
phase = Path(outputs_dir) / experiment / "phase1"
phase.mkdir(parents=True, exist_ok=True)
(phase / "curves.csv").write_text("step,split,loss_mel_ce,loss_text_ce,loss,lr,grad_norm\\n")
try:
    for step in range(0, max_steps + 1, 2):
        with open(phase / "curves.csv", "a") as f:
            f.write(f"{step},eval,{9 - lr * step},0.02,9,{lr},\\n")
        time.sleep(0.3)
except KeyboardInterrupt:  # as the real phase does: record it, then let it end the cell
    (phase / "status.json").write_text(json.dumps({"state": "interrupted", "step": step}))
    raise
"""


@pytest.mark.slow  # runs a notebook
def test_a_trial_reports_eval_rows_and_a_stop_interrupts_its_kernel_keeping_outputs(tmp_path):
    """The trainable without Ray: setup starts the stages, step returns each eval row, cleanup
    while the phase still trains sends Ctrl-C to the kernel; the executed notebook stays."""
    notebooks, folder = tmp_path / "notebooks", tmp_path / "out" / "s"
    notebooks.mkdir()
    write_stub_notebook(notebooks / "01_phase1.ipynb",
                        "experiment = 'x'\noutputs_dir = ''\nlr = 0.1\nmax_steps = 10\n", PHASE)  # fmt: skip
    job = {"sweep": "s", "folder": str(folder), "stages": ["01_phase1"], "fixed": {},
           "notebooks_dir": str(notebooks)}  # fmt: skip
    run = trial.StageTrial.__new__(trial.StageTrial)  # Tune's actor set-up is not needed here
    run.setup({"phase1.lr": 0.5, "max_steps": 1000}, job)
    first, second = run.step(), run.step()
    assert first == {"step": 0, "eval_mel_ce": 9.0, "eval_text_ce": 0.02}
    assert second["step"] == 2 and second["eval_mel_ce"] == 8.0
    run.cleanup()
    exp = folder / "s__phase1.lr-0.5__max_steps-1000"
    assert run.proc.returncode == 1  # the stage failed on the KeyboardInterrupt, as it should
    assert json.loads((exp / "phase1" / "status.json").read_text())["state"] == "interrupted"
    assert "KeyboardInterrupt" in (exp / "notebooks" / "01_phase1.ipynb").read_text()
    assert json.loads((exp / trial.STOPPED_NAME).read_text())["step"] == 2
    assert f"voicebook from {REPO_ROOT / 'lib'}" in (exp / "trial.log").read_text()
