"""Fine-tuning phases without training: health rules, parent resolution, run archiving, params,
and a preflight that refuses a bad dataset with every problem named."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from voicebook import training
from voicebook.training.health import (
    TEXT_CE_ALARM,
    ZERO_GRAD_STEPS,
    HealthMonitor,
    PreflightError,
)


def kinds(events):
    return [(e.kind, e.severity) for e in events]


def test_zero_gradient_stops_after_the_streak_only_on_optimizer_steps():
    monitor = HealthMonitor(patience_steps=0, lr_floor=1e-7, best_eval=None)
    for step in range(ZERO_GRAD_STEPS - 1):
        assert monitor.on_train(step, 6.0, 1e-4, 0.0) == []
    assert monitor.on_train(10, 6.0, 1e-4, None) == []  # accumulation step: no norm, no count
    assert monitor.on_train(11, 6.0, 1e-4, 1.3) == []  # a real gradient resets the streak
    events = [monitor.on_train(20 + i, 6.0, 1e-4, 0.0) for i in range(ZERO_GRAD_STEPS)]
    assert events[-1][0].kind == "zero_gradient" and events[-1][0].severity == "stop"
    assert "no gradient flows: check the data and frozen layers" in events[-1][0].message
    assert all(e == [] for e in events[:-1])


def test_nan_and_inf_losses_stop():
    monitor = HealthMonitor(0, 1e-7, None)
    assert monitor.check_loss(3, {"loss_mel_ce": 5.0, "loss_text_ce": 0.02}) == []
    for bad in (float("nan"), float("inf")):
        (event,) = monitor.check_loss(4, {"loss_mel_ce": bad, "loss_text_ce": 0.02})
        assert (event.kind, event.severity, event.step) == ("nan_loss", "stop", 4)
        assert "loss_mel_ce" in event.message and "last good checkpoint" in event.message


def test_low_lr_is_flagged_once():
    monitor = HealthMonitor(0, lr_floor=1e-7, best_eval=None)
    assert kinds(monitor.on_train(0, 6.0, 5e-8, 1.0)) == [("low_lr", "warning")]
    assert monitor.on_train(1, 6.0, 5e-8, 1.0) == []
    assert monitor.on_train(2, 6.0, 1e-6, 1.0) == []


def test_lr_floor_defaults_to_1e6_and_flags_only_below_it():
    """1e-6 is the documented phase-2 lr (README): at the floor is fine, 1e-7 is the symptom."""
    floor = training.PhaseConfig().lr_floor
    assert floor == training.Phase2Config().lr_floor == 1e-6
    assert HealthMonitor(0, floor, None).on_train(0, 6.0, 1e-6, 1.0) == []
    assert kinds(HealthMonitor(0, floor, None).on_train(0, 6.0, 1e-7, 1.0)) == [
        ("low_lr", "warning")
    ]


def test_text_ce_alarm_fires_when_crossing_above_the_threshold():
    monitor = HealthMonitor(0, 1e-7, None)
    mel = iter([6.0, 5.9, 5.8, 5.7, 5.6])
    seq = [0.02, TEXT_CE_ALARM + 0.001, 0.05, 0.03, 0.045]
    fired = [bool(monitor.on_eval(100 * i, next(mel), t)) for i, t in enumerate(seq)]
    assert fired == [False, True, False, False, True]


def test_text_ce_already_high_before_training_is_a_warning_about_the_start_not_an_alarm():
    monitor = HealthMonitor(0, 1e-7, None)
    assert kinds(monitor.on_eval(0, 7.0, 0.065)) == [("text_ce_at_start", "warning")]
    monitor.on_train(1, 6.9, 1e-4, 1.0)
    assert monitor.on_eval(20, 6.8, 0.05) == []  # still above, as it started: not news
    monitor.on_train(21, 6.7, 1e-4, 1.0)
    monitor.on_eval(40, 6.6, 0.03)
    monitor.on_train(41, 6.5, 1e-4, 1.0)
    assert kinds(monitor.on_eval(60, 6.4, 0.05)) == [("text_ce_alarm", "alarm")]


def test_overfitting_needs_eval_rising_while_train_falls():
    monitor = HealthMonitor(0, 1e-7, None)
    for train_mel, eval_mel, expect in [
        (5.0, 4.0, []),
        (4.8, 3.9, []),  # both fall: fine
        (4.6, 4.1, [("overfitting", "warning")]),  # eval rises, train falls
        (4.4, 4.3, []),  # still overfitting: reported once
        (4.5, 4.4, []),  # both rise: not overfitting
    ]:
        monitor.on_train(0, train_mel, 1e-4, 1.0)
        assert kinds(monitor.on_eval(0, eval_mel, 0.02)) == expect


def test_patience_counts_steps_since_the_best_eval():
    monitor = HealthMonitor(patience_steps=300, lr_floor=1e-7, best_eval=(100, 4.0))
    assert monitor.on_eval(200, 4.1, 0.02) == []
    assert monitor.on_eval(300, 3.9, 0.02) == []  # new best at 300
    assert monitor.on_eval(500, 3.95, 0.02) == []
    (event,) = monitor.on_eval(600, 3.92, 0.02)
    assert (event.kind, event.severity) == ("early_stop", "info")
    assert "300 steps" in event.message and "step 300" in event.message


def fake_phase1(exp, steps=(200, 400), best=400):
    run = exp / "phase1" / "phase1-run1-x"
    run.mkdir(parents=True)
    for s in steps:
        (run / f"checkpoint_{s}.pth").write_bytes(b"w")
    (run / f"best_model_{best}.pth").write_bytes(b"w")
    status = {"run_dir": str(run), "best_checkpoint": str(run / f"best_model_{best}.pth")}
    (exp / "phase1" / "status.json").write_text(json.dumps(status))
    return run


def test_phase2_parent_best_step_path_and_a_clear_error(tmp_path):
    run = fake_phase1(tmp_path)
    assert training.resolve_parent(tmp_path, "best") == run / "best_model_400.pth"
    assert training.resolve_parent(tmp_path, 200) == run / "checkpoint_200.pth"
    assert training.resolve_parent(tmp_path, str(run / "checkpoint_400.pth")).name == (
        "checkpoint_400.pth"
    )
    with pytest.raises(FileNotFoundError, match=r"step 1500.*Available steps: 200, 400"):
        training.resolve_parent(tmp_path, 1500)
    with pytest.raises(FileNotFoundError, match="final checkpoint"):
        training.resolve_parent(tmp_path, "final")


def test_one_resolver_serves_phase2_export_evaluation_and_voice_search(tmp_path):
    from voicebook.evaluation import scoring as evaluation
    from voicebook.training.checkpoints import checkpoint_step, resolve_checkpoint
    from voicebook.voice_search import search as voice_search

    run = fake_phase1(tmp_path)
    assert [checkpoint_step(n) for n in ("checkpoint_200.pth", "best_model_0.pth", "x_1.pth")] == [
        200,
        0,
        None,
    ]
    best = run / "best_model_400.pth"
    assert resolve_checkpoint(tmp_path, "phase1", "best") == best
    assert resolve_checkpoint(tmp_path, "phase1", "200") == run / "checkpoint_200.pth"
    assert training.resolve_parent(tmp_path, "best") == best
    assert voice_search.resolve_checkpoint(tmp_path, "phase1") == best
    assert evaluation.resolve_candidates(["phase1"], tmp_path)[0][0].checkpoint == best
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.pth").write_bytes(b"w")
    assert resolve_checkpoint(tmp_path, "phase1", str(export)) == export / "model.pth"
    assert training.resolve_init(str(export)) == export / "model.pth"
    with pytest.raises(FileNotFoundError, match="export_checkpoint=7.*Available steps: 200, 400"):
        resolve_checkpoint(tmp_path, "phase1", 7, "export_checkpoint=7")


def test_phase2_without_phase1_says_to_run_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 01_phase1 first"):
        training.resolve_parent(tmp_path, "best")


def test_earlier_run_is_archived_never_overwritten(tmp_path):
    phase = tmp_path / "phase1"
    (phase / "export").mkdir(parents=True)
    (phase / "status.json").write_text('{"params": {"lr": 1}}')
    (phase / "curves.csv").write_text("step\n1\n")
    (phase / "phase1-run1-x").mkdir()
    first = training.archive_previous_run(phase)
    (phase / "status.json").write_text('{"params": {"lr": 2}}')
    second = training.archive_previous_run(phase)
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((first / "status.json").read_text()) == {"params": {"lr": 1}}
    assert (first / "curves.csv").read_text() == "step\n1\n" and (first / "export").is_dir()
    assert (phase / "phase1-run1-x").is_dir()  # the run folder (checkpoints) stays put
    assert training.archive_previous_run(phase) is None


def test_params_reject_unknown_names_and_differ_by_stage():
    assert training.params_for("phase2").stage == "phase2"
    assert training.params_for("phase2").lr < training.params_for("phase1").lr
    with pytest.raises(TypeError, match="learning_rate"):
        training.params_for("phase1", learning_rate=1e-6)


def test_a_run_is_the_same_however_its_parameters_are_spelt(tmp_path, monkeypatch):
    """``voicebook run`` gives outputs_dir as an absolute folder, papermill with
    $VOICEBOOK_OUTPUTS as ""; a YAML file spells 1e-6 as text: one run all the same (issue 36)."""
    from voicebook.core.config import from_params
    from voicebook.training import run as phase_run

    monkeypatch.setenv("VOICEBOOK_OUTPUTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e" / "dataset").mkdir(parents=True)
    runner = training.params_for("phase2", experiment="e", outputs_dir=str(tmp_path), lr=1e-06,
                                 max_steps=8, dataset_dir=str(tmp_path / "e" / "dataset"))  # fmt: skip
    yaml_file = from_params(training.Phase2Config, {"experiment": "e", "outputs_dir": None,
                            "lr": "1e-6", "max_steps": "8", "dataset_dir": "e/dataset"})  # fmt: skip
    assert (yaml_file.lr, yaml_file.max_steps, yaml_file.outputs_dir) == (1e-6, 8, "")
    assert runner.training_identity() == yaml_file.training_identity()
    recorded = {"params": runner.to_dict(), "parent": "", "dataset": ""}
    plan = phase_run.PhasePlan(yaml_file, tmp_path / "e" / "phase2", "cpu", None, recorded)
    recorded["dataset"] = str(tmp_path / "e" / "dataset")
    assert phase_run._same_run(recorded, plan)  # "e/dataset" from here is that folder
    del recorded["dataset"]  # recorded before status named it: its dataset_dir resolved
    assert phase_run._same_run(recorded, plan)
    recorded["dataset"] = str(tmp_path / "other")
    assert not phase_run._same_run(recorded, plan)
    for differs in ({"lr": 2e-6}, {"max_steps": 9}):
        assert training.params_for("phase2", **differs).training_identity() != (
            training.params_for("phase2").training_identity()
        )
    with pytest.raises(ValueError, match=r"lr='fast' is not a float"):
        training.params_for("phase1", lr="fast")


def write_dataset(folder, rows_train, rows_eval, seconds):
    (folder / "wavs").mkdir(parents=True)
    t = np.linspace(0, seconds, int(22050 * seconds), endpoint=False)
    for name in {r[0] for r in rows_train + rows_eval}:
        sf.write(folder / "wavs" / name, 0.1 * np.sin(2 * np.pi * 220 * t), 22050)
    for meta, rows in (("metadata_train.csv", rows_train), ("metadata_eval.csv", rows_eval)):
        lines = ["audio_file|text|speaker_name"] + [f"wavs/{a}|{b}|demo" for a, b in rows]
        (folder / meta).write_text("\n".join(lines) + "\n")


def test_preflight_names_every_bad_clip_and_text_with_its_fix(tmp_path):
    data = tmp_path / "ds"
    write_dataset(
        data,
        [("ok.wav", "Hát, ez egy nagyon jó kérdés."), ("snow.wav", "Hó ☃ esik.")],
        [("short.wav", "Igen.")],
        seconds=0.3,
    )
    params = training.params_for("phase1", outputs_dir=str(tmp_path / "out"), dataset_dir=str(data))
    with pytest.raises(PreflightError) as err:
        training.run_phase(params)
    message = str(err.value)
    assert "snow.wav" in message and "☃" in message and "spell them out" in message
    assert "short.wav" in message and "shorter than 0.5 s" in message
    phase = tmp_path / "out" / "demo" / "phase1"
    status = json.loads((phase / "status.json").read_text())
    health = json.loads((phase / "health.json").read_text())
    assert status["state"] == "failed" and "snow.wav" in status["stop_reason"]
    assert health[-1]["kind"] == "preflight" and health[-1]["severity"] == "stop"
    assert not list(phase.glob("phase1-run*"))  # nothing trained, no empty run folder


def test_missing_dataset_points_to_data_prep(tmp_path):
    params = training.params_for("phase1", outputs_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run the data-prep stage"):
        training.run_phase(params)


def test_empty_dataset_is_a_clear_preflight_failure(tmp_path):
    data = tmp_path / "ds"
    write_dataset(data, [], [("a.wav", "Igen, persze.")], seconds=1.0)
    params = training.params_for("phase1", outputs_dir=str(tmp_path / "out"), dataset_dir=str(data))
    with pytest.raises(PreflightError, match=r"metadata_train.csv has no clips.*00_data_prep"):
        training.run_phase(params)
    status = json.loads((tmp_path / "out" / "demo" / "phase1" / "status.json").read_text())
    assert status["state"] == "failed"


def test_retry_after_a_failed_preflight_sets_the_old_health_aside(tmp_path):
    data = tmp_path / "ds"
    write_dataset(data, [], [("a.wav", "Igen, persze.")], seconds=1.0)
    params = training.params_for("phase1", outputs_dir=str(tmp_path / "out"), dataset_dir=str(data))
    phase = tmp_path / "out" / "demo" / "phase1"
    for _ in range(2):
        with pytest.raises(PreflightError):
            training.run_phase(params)
    first = json.loads((phase / "attempts" / "1" / "health.json").read_text())
    assert first[-1]["severity"] == "stop"
    assert len(json.loads((phase / "health.json").read_text())) == 1  # only this attempt's


@pytest.mark.slow  # runs a notebook
def test_the_saved_notebook_shows_the_progress_bar_where_training_ended():
    """A notebook saved after training shows the bar at the steps done, not at 0 (the widget's
    text at its first display), and the chart's legend colours hold for Text CE too."""
    import nbformat
    from nbclient import NotebookClient

    code = """
from voicebook.training import LiveView
view = LiveView("Phase 1", total_steps=10)
view.show()
for step in range(1, 5):
    view.on_row({"step": step, "split": "train", "loss_mel_ce": 5.0 - step / 10,
                 "loss_text_ce": 0.04, "loss": 5.0, "lr": 1e-5, "grad_norm": 1.0})
view.close()
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, kernel_name="voicebook", timeout=120).execute()
    # the live chart redraws as new displays (plotly data only, or emptied): the bar is text
    texts = [o["data"].get("text/plain", "") for o in nb.cells[0].outputs if "data" in o]
    bar = next(t for t in texts if "Phase 1" in t and "%" in t)
    assert "4/10" in bar and "0/10" not in bar

    curves = pd.DataFrame(
        [[s, split, 5.0, 0.04, 5.0, 1e-5, 1.0] for s in (1, 2) for split in ("train", "eval")],
        columns=training.CURVE_COLUMNS,
    )
    fig = training.phase_figure(curves)
    colour = {(t.xaxis, t.legendgroup): t.line.color for t in fig.data}
    for split in ("train", "eval"):  # Text CE (x2) drawn in the legend's colour (x)
        assert colour[("x2", split)] == colour[("x", split)]
    assert len({colour[("x", "train")], colour[("x", "eval")]}) == 2


_KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
import torch
import voicebook.coqui.trainer as coqui_trainer

run = Path(sys.argv[1])

def half_then_hang(value, partial):  # a write the kill catches half-way
    data = open(run / "new.bin", "rb").read()
    with open(partial, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        print("half written", flush=True)
        time.sleep(600)

coqui_trainer._torch_save_direct = half_then_hang
saves = coqui_trainer.BackgroundSaves()
path = run / "best_model_8.pth"
weights = {"w": torch.full((1000,), 8.0)}
torch.save(weights, run / "new.bin")
saves.best(path, weights, {"step": 8}, coqui_trainer._prune_bests(run, path, lambda: [path]))
saves.writer.wait()
"""


def test_a_kill_mid_write_leaves_the_previous_best_intact(tmp_path):
    """SIGKILL while a best model is half-written: the previous best, its shortcut and the
    file names a resume or export reads are as they were; only a hidden partial is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from voicebook.training.checkpoints import run_checkpoints

    torch.save({"model": {"w": torch.full((1000,), 4.0)}, "step": 4}, tmp_path / "best_model_4.pth")
    os.link(tmp_path / "best_model_4.pth", tmp_path / "best_model.pth")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "half written"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_checkpoints(tmp_path) == [tmp_path / "best_model_4.pth"]
    for name in ("best_model_4.pth", "best_model.pth"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert state["step"] == 4 and (state["model"]["w"] == 4.0).all()
    (partial,) = tmp_path.glob(".best_model_8.pth.*.partial")
    assert 0 < partial.stat().st_size < (tmp_path / "new.bin").stat().st_size


@pytest.mark.parametrize("copy", [True, False], ids=["host copy", "live weights"])
def test_a_file_holds_the_weights_of_its_step_while_training_goes_on(tmp_path, monkeypatch, copy):
    """A slow write: from a host copy (a best model) the next update goes ahead at once; from the
    live weights (a CPU's periodic checkpoint) it waits until the write let go of them. Either
    way the file holds the weights of its step."""
    import time

    import torch

    import voicebook.coqui.trainer as coqui_trainer

    slowed = "_torch_save_direct" if copy else "_torch_save"
    real = getattr(coqui_trainer, slowed)

    def slow(*args):
        time.sleep(0.5)
        return real(*args)

    monkeypatch.setattr(coqui_trainer, slowed, slow)
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    saves = coqui_trainer.BackgroundSaves(copy=copy)  # copy=False: written from live weights
    saves.guard([optimizer])
    path = tmp_path / "best_model_1.pth"
    saves.best(
        path,
        {"w": weight.data},
        {"step": 1},
        coqui_trainer._prune_bests(tmp_path, path, lambda: [path]),
    )
    weight.grad = torch.ones(4)
    optimizer.step()  # from a copy: at once; from the live weights: after the write
    blocked = saves.blocked_seconds
    assert (blocked < 0.1) if copy else (blocked > 0.3)
    assert saves.writer.busy() or not copy  # a copy's write is still under way
    assert saves.writer.wait() == [path]
    assert (weight.data == 0).all()
    assert (torch.load(path, weights_only=True)["model"]["w"] == 1).all()
    assert (torch.load(tmp_path / "best_model.pth", weights_only=True)["model"]["w"] == 1).all()
    optimizer.step()  # nothing held: no wait
    assert saves.blocked_seconds - blocked < 0.05


def test_a_best_waiting_for_its_turn_is_replaced_by_a_better_one(tmp_path, monkeypatch):
    """Bests come faster than the disk takes them: the first is written, the second (still
    waiting) is replaced by the third and never written, two host buffers serve all three, an
    update meanwhile waits for neither, and the files and the shortcut end at the last best."""
    import threading

    import torch

    import voicebook.coqui.trainer as coqui_trainer

    first_started, go_on = threading.Event(), threading.Event()
    real = coqui_trainer._torch_save_direct

    def held(value, partial):  # the first write holds until the test lets it go
        first_started.set()
        go_on.wait(10)
        return real(value, partial)

    monkeypatch.setattr(coqui_trainer, "_torch_save_direct", held)
    saves = coqui_trainer.BackgroundSaves()
    weight = torch.zeros(1000)
    replaced = []
    for step in (1, 2, 3):
        weight.fill_(step)
        path = tmp_path / f"best_model_{step}.pth"
        replaced.append(
            saves.best(
                path,
                {"w": weight},
                {"step": step},
                coqui_trainer._prune_bests(tmp_path, path, lambda p=path: [p]),
            )
        )
        assert first_started.wait(10)
    # the first still being written and the third waiting: an update does not wait for either
    weight_param = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([weight_param], lr=1.0)
    saves.guard([optimizer])
    weight_param.grad = torch.ones(4)
    optimizer.step()
    assert saves.blocked_seconds < 0.1 and saves.writer.busy()
    go_on.set()
    assert saves.writer.wait() == [tmp_path / "best_model_1.pth", tmp_path / "best_model_3.pth"]
    assert replaced == [None, None, tmp_path / "best_model_2.pth"] and saves.replaced == 1
    assert [b is not None for b in saves.buffers] == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.pth", "best_model_3.pth"]
    state = torch.load(tmp_path / "best_model.pth", weights_only=True)
    assert state["step"] == 3 and (state["model"]["w"] == 3).all()


def test_the_background_writer_keeps_order_holds_priority_and_reports_errors(tmp_path):
    """BackgroundWriter (on concurrent.futures): one job at a time in the order submitted; live
    state held until copied or written; a waiting job withdrawn; a write that holds nothing at
    niceness 19, one that holds live state at the caller's; a failed write raised once."""
    import threading

    from voicebook.core.fileio import WRITER_NICENESS, BackgroundWriter

    gate, seen = threading.Event(), {}

    def write(value, partial):
        seen[value] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        partial.write_text(value)

    writer = BackgroundWriter()
    writer.submit(tmp_path / "a", lambda: gate.wait() and "a", write)  # until_copied
    writer.submit(tmp_path / "b", lambda: "b", write, holds="until_written")
    writer.submit(tmp_path / "c", lambda: "c", write, holds="nothing", key="best")
    writer.submit(tmp_path / "d", lambda: "d", write, holds="nothing")
    released = threading.Thread(target=writer.wait_released)
    released.start()
    released.join(0.3)
    assert released.is_alive() and writer.busy()  # a is not copied yet, b not written
    assert writer.withdraw("best").path == tmp_path / "c" and writer.withdraw("best") is None
    gate.set()
    released.join(10)
    assert not released.is_alive()
    assert writer.wait() == [tmp_path / n for n in "abd"] and not (tmp_path / "c").exists()
    assert list(seen) == ["a", "b", "d"] and (tmp_path / "d").read_text() == "d"
    callers = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen["b"] == callers and seen["a"] == seen["d"] == max(callers, WRITER_NICENESS)
    writer.submit(tmp_path / "e", lambda: 1 / 0, write)
    with pytest.raises(RuntimeError, match="a background write failed: division by zero"):
        writer.wait()
    assert writer.wait() == [] and not writer.busy()  # raised once


def test_a_direct_file_is_what_torch_save_would_write(tmp_path):
    """``DirectFile`` (past the page cache where the file system allows it, through it where
    not) writes bytes that load as they were saved, at sizes that are and are not whole blocks
    and staging buffers."""
    import io

    import torch

    from voicebook.core.fileio import DIRECT_BLOCK, DirectFile

    state = {"a": torch.arange(10_000, dtype=torch.float32), "b": torch.ones(3, 7), "step": 5}
    with DirectFile(tmp_path / "state.pth", stage_bytes=4 * DIRECT_BLOCK) as file:
        torch.save(state, file)
    loaded = torch.load(tmp_path / "state.pth", weights_only=True)
    assert loaded["step"] == 5 and torch.equal(loaded["a"], state["a"])
    assert torch.equal(loaded["b"], state["b"])
    buffered = io.BytesIO()
    torch.save(state, buffered)
    assert (tmp_path / "state.pth").stat().st_size == len(buffered.getvalue())
    for size in (0, 1, DIRECT_BLOCK, 4 * DIRECT_BLOCK, 4 * DIRECT_BLOCK + 5, 9 * DIRECT_BLOCK - 1):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        with DirectFile(tmp_path / f"{size}.bin", stage_bytes=4 * DIRECT_BLOCK) as file:
            assert file.write(data[: size // 3]) + file.write(data[size // 3 :]) == size
        assert (tmp_path / f"{size}.bin").read_bytes() == data


def test_the_k_best_stay_and_one_pushed_out_goes_only_once_its_better_is_on_disk(tmp_path):
    """keep_best 2: bests at steps 1, 2, 3 (each better); after the third is written, steps 2
    and 3 stay, step 1 is gone, and the shortcut links the best. A pushed-out best is still on
    disk while the one that pushed it out is being written."""
    import os

    import torch

    import voicebook.coqui.trainer as coqui_trainer

    saves = coqui_trainer.BackgroundSaves()
    kept = []
    seen_while_writing = []
    real = coqui_trainer._torch_save_direct

    def watched(value, partial):
        seen_while_writing.append(sorted(p.name for p in tmp_path.glob("best_model_*.pth")))
        return real(value, partial)

    coqui_trainer._torch_save_direct, original = watched, real
    try:
        for step in (1, 2, 3):
            path = tmp_path / f"best_model_{step}.pth"
            kept = [path, *kept][:2]  # each new one is the best: the K best, best first
            snapshot = list(kept)
            saves.best(path, {"w": torch.full((10,), float(step))}, {"step": step},
                       coqui_trainer._prune_bests(tmp_path, path, lambda k=snapshot: k))  # fmt: skip
            saves.writer.wait()
    finally:
        coqui_trainer._torch_save_direct = original
    names = sorted(p.name for p in tmp_path.glob("best_model_*.pth"))
    assert names == ["best_model_2.pth", "best_model_3.pth"]
    assert os.path.samefile(tmp_path / "best_model.pth", tmp_path / "best_model_3.pth")
    assert seen_while_writing[2] == ["best_model_1.pth", "best_model_2.pth"]  # 1 still there


def test_candidates_phase1_kept_name_every_kept_best_model_and_mark_the_pick(tmp_path):
    import json
    from pathlib import Path

    from voicebook.evaluation.scoring import resolve_candidates
    from voicebook.training.checkpoints import resolve_checkpoint

    phase = tmp_path / "phase1"
    (phase / "run").mkdir(parents=True)
    kept = []
    for step, mel in ((60, 3.1), (40, 3.2), (20, 3.4)):
        path = phase / "run" / f"best_model_{step}.pth"
        path.write_bytes(b"x")
        kept.append({"step": step, "mel_ce": mel, "text_ce": 0.02, "checkpoint": str(path)})
    status = {"kept": kept, "best_checkpoint": kept[0]["checkpoint"],
              "picked_checkpoint": kept[1]["checkpoint"]}  # fmt: skip
    (phase / "status.json").write_text(json.dumps(status))
    found, notes = resolve_candidates(["phase1:kept"], tmp_path)
    assert [c.name for c in found] == ["phase1-step60", "phase1-step40", "phase1-step20"]
    assert [c.checkpoint for c in found] == [Path(k["checkpoint"]) for k in kept]
    assert [c.label.endswith("(picked)") for c in found] == [False, True, False]
    assert notes == []
    # "best" is the pick (the export, phase 2's resume_from and the evaluation's phase1)
    assert resolve_checkpoint(tmp_path, "phase1", "best") == Path(kept[1]["checkpoint"])
    assert resolve_candidates(["phase2:kept"], tmp_path) == ([], [
        "phase2:kept skipped: that phase kept no best models yet."])  # fmt: skip


def test_a_rerun_with_new_parameters_starts_its_bar_at_zero_and_coqui_logs_to_the_run_folder(
    tmp_path,
):
    """Issue 36: the bar read "Phase 1: 30/?" for a 10-step run after a run with another lr;
    coqui's trainer log (CUDNN lines on a CPU, its own parameter count) went to the notebook."""
    import logging

    import pandas as pd

    from voicebook.coqui.trainer import log_to_run_folder_only
    from voicebook.training.files import CURVE_COLUMNS
    from voicebook.training.view import steps_to_continue

    earlier = training.params_for("phase1", lr=1e-3, max_steps=30)
    phase = tmp_path / "phase1"
    phase.mkdir()
    (phase / "status.json").write_text(json.dumps({"params": earlier.to_dict()}))
    rows = [{**dict.fromkeys(CURVE_COLUMNS), "step": i, "split": "train"} for i in range(30)]
    pd.DataFrame(rows, columns=CURVE_COLUMNS).to_csv(phase / "curves.csv", index=False)
    assert steps_to_continue(earlier, phase) == 30  # the same run continues where it stopped
    assert steps_to_continue(training.params_for("phase1", lr=5e-4, max_steps=10), phase) == 0
    assert steps_to_continue(earlier, tmp_path / "none") == 0
    log = logging.getLogger("trainer")
    log.addHandler(logging.StreamHandler())
    log_to_run_folder_only()
    assert not log.handlers  # each trainer adds the file handler of its own run folder


@pytest.mark.parametrize("select_by", ["loss", "evidence"])
def test_select_by_loss_or_without_a_recogniser_picks_the_lowest_validation_mel_ce(
    tmp_path, select_by
):
    import json
    from pathlib import Path

    import pandas as pd

    from voicebook.training.result import PhaseResult

    phase = tmp_path / "phase1"
    (phase / "run").mkdir(parents=True)
    kept = []
    for step, mel in ((80, 2.9), (40, 3.0)):  # best first, as the recorder keeps them
        path = phase / "run" / f"best_model_{step}.pth"
        path.write_bytes(b"x")
        kept.append({"step": step, "mel_ce": mel, "text_ce": 0.02, "checkpoint": str(path)})
    status = {"kept": kept, "best_checkpoint": kept[0]["checkpoint"], "best_step": 80,
              "best_mel_ce": 2.9, "best_text_ce": 0.02}  # fmt: skip
    (phase / "status.json").write_text(json.dumps(status))
    params = {"select_by": select_by, "select_asr_model": "", "language": "hu"}
    result = PhaseResult("phase1", params, status, pd.DataFrame(), [], phase)
    picked = training.select_checkpoint(result)
    pick = picked.status["pick"]
    assert pick["select_by"] == "loss" and pick["picked_step"] == 80
    assert picked.best_checkpoint == kept[0]["checkpoint"]
    assert "step 80: the lowest validation Mel CE (2.9000)" in pick["why"]
    if select_by == "evidence":
        assert "needs a speech recogniser" in pick["why"]
    assert json.loads((phase / "status.json").read_text())["picked_checkpoint"] == str(
        Path(kept[0]["checkpoint"])
    )
    assert picked.selection_table()["picked"].tolist() == [True, False]
    assert result.status.get("pick") is None  # the result handed in is left as it was


def test_a_live_chart_draws_anew_and_empties_its_previous_display(monkeypatch):
    """JupyterLab's plotly renderer ignores updates of a drawn figure (issue 36: the chart
    stayed empty in the browser): a redraw is a new display, the previous one emptied."""
    from voicebook.training.view import LiveView

    handles = []

    class Handle:
        def __init__(self, bundle):
            self.bundle = bundle

        def update(self, bundle, raw):
            self.bundle = bundle

    def display(bundle, raw=False, display_id=None):
        handles.append(Handle(bundle))
        return handles[-1]

    monkeypatch.setattr("IPython.display.display", display)
    view = LiveView("Phase 1", total_steps=4)
    view.show()
    row = {"step": 0, "split": "eval", "loss_mel_ce": 7.0, "loss_text_ce": 0.06, "loss": 7.06}
    view.on_row(row)  # drawn a moment ago: not again yet
    assert len(handles) == 1
    monkeypatch.setattr(view, "REDRAW_SECONDS", 0.0)
    view.on_row({**row, "step": 2, "loss_mel_ce": 6.9})
    assert len(handles) == 2 and handles[0].bundle == {}
    figure = handles[1].bundle["application/vnd.plotly.v1+json"]
    assert [len(t["x"]) for t in figure["data"]] == [0, 2, 0, 2]  # train, eval per panel
    view.close()
    assert len(handles) == 3 and handles[1].bundle == {}
