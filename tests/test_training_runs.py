"""Fine-tuning phases that really train the tiny base (a few dozen steps each): a run killed
mid-way continues with continuous steps and curves, the NaN and zero-gradient guards stop
cleanly, phase 2 continues phase 1's best at its own lr, and the export loads for inference."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from voicebook import training
from voicebook.dataprep.demo import write_demo_dataset

pytestmark = pytest.mark.slow
N_TRAIN, N_EVAL = 12, 3
RUN = {
    "batch_size": 2,
    "epochs": 50,
    "eval_every": 4,
    "save_every": 6,
    "keep_checkpoints": 2,
    "lr": 5e-4,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """12 train + 3 eval demo clips as 22.05 kHz wavs in the data-prep stage's format."""
    return write_demo_dataset(tmp_path_factory.mktemp("dataset"), N_TRAIN, N_EVAL)


def params(stage: str, out: Path, dataset: Path, **over) -> training.PhaseConfig:
    values = {**RUN, "outputs_dir": str(out), "dataset_dir": str(dataset), **over}
    return training.params_for(stage, **values)


def cli_args(p: training.PhaseConfig) -> list[str]:
    args = [sys.executable, "-m", "voicebook.training", p.stage]
    for name, value in p.to_dict().items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the training subprocess ended before it could be killed"
        assert time.time() < end, "timed out waiting for the training subprocess"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def phase1(tmp_path_factory, dataset):
    """Phase 1 killed (SIGKILL) after its first checkpoint, then run again to the end."""
    out = tmp_path_factory.mktemp("out")
    p = params("phase1", out, dataset, max_steps=20)
    phase = out / "demo" / "phase1"
    curves = phase / "curves.csv"

    def past_first_checkpoint() -> bool:
        # checkpoint_6 is written inside step 6; the row of step 7 proves it is complete
        if not list(phase.glob("phase1-run*/checkpoint_6.pth")) or not curves.is_file():
            return False
        rows = pd.read_csv(curves)
        return bool(((rows["split"] == "train") & (rows["step"] >= 7)).any())

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (out / "killed_run.log").open("w")
    proc = subprocess.Popen(cli_args(p), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(past_first_checkpoint, 300, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = {
        "status": json.loads((phase / "status.json").read_text()),
        "curves": pd.read_csv(curves),
    }
    result = training.run_phase(p)
    return p, killed, result


def test_killed_run_continues_with_continuous_steps_and_curves(phase1):
    p, killed, result = phase1
    assert killed["status"]["state"] == "running"  # the kill left no chance to clean up
    last_before_kill = int(killed["curves"].query("split == 'train'")["step"].max())
    assert last_before_kill >= 7

    status, curves = result.status, result.curves
    assert status["state"] == "finished" and status["final_step"] == 20
    assert status["run_dir"] == killed["status"]["run_dir"]  # the same run folder, continued
    train = curves.query("split == 'train'")
    assert train["step"].tolist() == list(range(20))  # every step exactly once, no gap
    assert (train["lr"] == p.lr).all()  # the scheduler's lr carried over
    evals = curves.query("split == 'eval'")
    assert evals["step"].is_monotonic_increasing and evals["step"].is_unique
    assert evals["step"].iloc[0] == 0 and evals["step"].iloc[-1] == 20
    # steps recorded after checkpoint_6 by the killed process are set aside, not lost
    dropped = list(result.phase_dir.glob("attempts/*/curves_after_checkpoint.csv"))
    if last_before_kill > 6:
        assert pd.read_csv(dropped[0])["step"].min() >= 7
    resumed = Path(status["resumed_from"]).name  # the newest complete checkpoint of the run
    assert resumed in {f"checkpoint_{s}.pth" for s in (6, 12)} | {"best_model_8.pth"}
    log = (Path(status["run_dir"]) / "trainer_0_log.txt").read_text()
    assert f"Continuing from {resumed}" in log


def test_eval_mel_ce_falls_and_the_best_is_judged_on_it(phase1):
    _, _, result = phase1
    evals = result.curves.query("split == 'eval'").set_index("step")["loss_mel_ce"]
    assert evals.iloc[-1] < evals.iloc[0] - 0.2
    assert result.status["best_mel_ce"] == pytest.approx(evals.min())
    assert result.status["best_step"] == evals.idxmin()
    assert Path(result.best_checkpoint).name == f"best_model_{evals.idxmin()}.pth"
    scraps = result.scraps()
    assert list(scraps["curves"].columns) == training.CURVE_COLUMNS
    assert scraps["stage"] == "phase1" and scraps["final_step"] == 20
    assert scraps["best_text_ce"] < 0.1  # logged x0.01: a raw Text CE would be ~5


def test_keep_best_3_keeps_the_3_lowest_eval_mel_ce_slim_and_named_by_step(phase1):
    p, _, result = phase1
    assert p.keep_best == 3
    evals = result.curves.query("split == 'eval'").set_index("step")["loss_mel_ce"]
    lowest = evals.nsmallest(3)
    kept = result.status["kept"]
    assert [k["step"] for k in kept] == lowest.index.tolist()  # best first
    assert [k["mel_ce"] for k in kept] == pytest.approx(lowest.tolist())
    run = Path(result.status["run_dir"])
    on_disk = sorted(run.glob("best_model_*.pth"))
    assert sorted(Path(k["checkpoint"]) for k in kept) == on_disk  # the rest removed
    for k in kept:
        assert Path(k["checkpoint"]).name == f"best_model_{k['step']}.pth"
        saved = torch.load(k["checkpoint"], weights_only=False)
        assert "optimizer" not in saved and saved["step"] == k["step"]  # slim
    assert os.path.samefile(run / "best_model.pth", kept[0]["checkpoint"])


def test_finished_run_with_same_params_is_returned_without_training(phase1):
    p, _, result = phase1
    start = time.time()
    again = training.run_phase(p)
    assert time.time() - start < 10
    assert again.status == result.status
    pd.testing.assert_frame_equal(again.curves, result.curves)


def test_export_is_slim_and_loads_for_inference(phase1, tmp_path):
    import shutil

    from voicebook.coqui.models import load_xtts

    _, _, result = phase1
    exported_to = training.export_phase(result, "best")
    # self-contained: no link into this machine's cache, so a copy loads anywhere
    assert not [p.name for p in exported_to.iterdir() if p.is_symlink()]
    folder = shutil.copytree(exported_to, tmp_path / "elsewhere", symlinks=True)
    names = {p.name for p in folder.iterdir()}
    assert {"model.pth", "config.json", "vocab.json", "reference.wav", "dvae.pth"} <= names
    slim = torch.load(folder / "model.pth", weights_only=False)["model"]
    assert not any(k.startswith(("xtts.", "dvae.")) for k in slim)
    # The best model is written as slim as the export; only periodic checkpoints (which resume
    # needs) carry the optimizer state.
    exported, best = (folder / "model.pth").stat().st_size, Path(result.best_checkpoint)
    assert abs(exported - best.stat().st_size) < 0.01 * exported
    assert exported < Path(result.status["final_checkpoint"]).stat().st_size / 2
    trained = torch.load(best, weights_only=False)
    assert "optimizer" not in trained and trained["step"] == result.status["best_step"]
    model = load_xtts(folder)
    key = next(k for k in slim if k.startswith("gpt."))
    assert torch.equal(model.state_dict()[key], trained["model"][key])


def test_phase2_continues_phase1_best_at_its_own_lr(phase1, dataset):
    p1, _, r1 = phase1
    p2 = params("phase2", Path(p1.outputs_dir), dataset, lr=1e-4, max_steps=4, eval_every=2)
    r2 = training.run_phase(p2)
    assert r2.status["parent"] == r1.best_checkpoint
    assert r2.scraps()["parent_checkpoint"] == r1.best_checkpoint
    assert (r2.curves.query("split == 'train'")["lr"] == 1e-4).all()
    start = r2.curves.query("split == 'eval' and step == 0")["loss_mel_ce"].item()
    base = r1.curves.query("split == 'eval' and step == 0")["loss_mel_ce"].item()
    # starts from phase 1's weights, not the base's: much nearer phase 1's best than the base
    assert abs(start - r1.status["best_mel_ce"]) < abs(start - base)


def patch_losses(monkeypatch, after: int, factor: float) -> None:
    """Multiply the GPT trainer's losses by ``factor`` from its ``after``-th train step on."""
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    original, calls = GPTTrainer.train_step, []

    def train_step(self, batch, *args):
        outputs, losses = original(self, batch, *args)
        if not self.xtts.gpt.training:  # evaluation runs train_step too
            return outputs, losses
        calls.append(1)
        if len(calls) > after:
            losses = {k: v * factor for k, v in losses.items()}
        return outputs, losses

    monkeypatch.setattr(GPTTrainer, "train_step", train_step)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path, dataset):
    patch_losses(monkeypatch, after=8, factor=math.nan)
    result = training.run_phase(params("phase1", tmp_path, dataset, max_steps=20))
    assert result.status["state"] == "stopped"
    stop = [e for e in result.health if e["severity"] == "stop"]
    assert [(e["kind"], e["step"]) for e in stop] == [("nan_loss", 8)]
    assert result.curves["loss_mel_ce"].notna().all()  # no NaN reached the curves
    assert result.curves.query("split == 'train'")["step"].max() == 7
    run = Path(result.status["run_dir"])
    assert (run / "checkpoint_6.pth").is_file()
    final = torch.load(result.status["final_checkpoint"], weights_only=False)["model"]
    assert all(torch.isfinite(t).all() for t in final.values() if t.is_floating_point())
    assert (
        "nan_loss" in result.summary().to_string() or "not finite" in result.summary().to_string()
    )


def test_zero_gradient_stops_the_run(monkeypatch, tmp_path, dataset):
    patch_losses(monkeypatch, after=2, factor=0.0)
    result = training.run_phase(params("phase1", tmp_path, dataset, max_steps=20))
    assert result.status["state"] == "stopped"
    (stop,) = [e for e in result.health if e["severity"] == "stop"]
    assert stop["kind"] == "zero_gradient" and stop["step"] == 6  # steps 2..6: five zero norms
    assert "no gradient flows" in result.status["stop_reason"]
    norms = result.curves.query("split == 'train'").set_index("step")["grad_norm"]
    assert (norms.loc[:1] > 0).all() and (norms.loc[2:] == 0).all()


def test_phase2_notebook_card_usage_records_the_lr_used(phase1, dataset, tmp_path):
    """`papermill 02_phase2.ipynb out.ipynb -p lr 1e-6` continues phase 1's best at 1e-6; the
    earlier phase-2 run (other parameters) moves to history/, never overwritten."""
    import papermill

    from voicebook.core.paths import NOTEBOOKS_DIR
    from voicebook.core.scraps import read_scraps

    p1, _, r1 = phase1
    out = tmp_path / "02_phase2.ipynb"
    # keep_best 1: one kept model, no selection pass (the evidence pick's own test is below)
    cheap = {"max_steps": 3, "eval_every": 2, "batch_size": 2, "epochs": 2, "keep_best": 1}
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "02_phase2.ipynb"),
        str(out),
        parameters={
            "lr": 1e-6,
            "outputs_dir": p1.outputs_dir,
            "dataset_dir": str(dataset),
            **cheap,
        },
        kernel_name="voicebook",
        cwd=str(NOTEBOOKS_DIR),
    )
    scraps = read_scraps(out)
    assert scraps["stage"] == "phase2" and scraps["params"]["lr"] == 1e-6
    assert scraps["parent_checkpoint"] == r1.best_checkpoint
    assert (scraps["curves"]["lr"] == 1e-6).all() and scraps["final_step"] == 3
    phase2 = Path(p1.outputs_dir) / "demo" / "phase2"
    earlier = json.loads((phase2 / "history" / "1" / "status.json").read_text())
    assert earlier["params"]["lr"] == 1e-4  # the run of test_phase2_continues_phase1_best...
    assert (phase2 / "export" / "model.pth").is_file()


def test_ctrl_c_inside_an_eval_leaves_an_interrupted_phase_that_resumes(
    monkeypatch, tmp_path, dataset
):
    """A sweep's scheduler (or Jupyter's interrupt button) can stop a phase in the middle of an
    evaluation, before coqui computed the eval loss: the status says "interrupted", a resume
    point is written, and the same parameters continue from it."""
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    original, evals = GPTTrainer.train_step, []

    def train_step(self, batch, *args):
        if not self.xtts.gpt.training:
            evals.append(1)
            # the step-4 evaluation, after step 0's: the 3 held-out clips are one eval batch
            if len(evals) == 2:
                raise KeyboardInterrupt
        return original(self, batch, *args)

    monkeypatch.setattr(GPTTrainer, "train_step", train_step)
    p = params("phase1", tmp_path, dataset, max_steps=8)
    with pytest.raises(KeyboardInterrupt):
        training.run_phase(p)
    phase = tmp_path / "demo" / "phase1"
    status = json.loads((phase / "status.json").read_text())
    assert status["state"] == "interrupted" and status["final_step"] == 4
    assert (Path(status["run_dir"]) / "checkpoint_3.pth").is_file()  # resume at step 4
    monkeypatch.setattr(GPTTrainer, "train_step", original)
    result = training.run_phase(p)
    assert result.status["state"] == "finished" and result.status["final_step"] == 8
    steps = result.curves.query("split == 'train'")["step"].tolist()
    assert steps == list(range(8))


def test_the_evidence_pick_is_recorded_with_the_figures_behind_it_and_loss_picks_the_lowest(
    phase1,
):
    from dataclasses import replace

    from voicebook.training.checkpoints import resolve_checkpoint

    _, _, result = phase1
    kept = result.status["kept"]
    params = {**result.params, "select_takes": 1, "select_by": "evidence"}
    start = time.time()
    picked = training.select_checkpoint(replace(result, params=params))
    pick = picked.status["pick"]
    print(f"selection pass: {time.time() - start:.1f} s for {len(kept)} kept models")
    assert pick["select_by"] == "evidence"
    assert [k["step"] for k in pick["kept"]] == [k["step"] for k in kept]
    for k in pick["kept"]:  # every kept model's figures: Mel CE and what its takes scored
        assert all(math.isfinite(k[m]) for m in ("mel_ce", "cer", "speaker_similarity", "mos"))
    assert {c["against"] for c in pick["comparisons"]} <= {f"step {k['step']}" for k in kept}
    assert {c["verdict"] for c in pick["comparisons"]} <= {"better", "worse", "indistinguishable"}
    assert len(pick["comparisons"]) >= 2 * 4  # each other kept model, on every measure
    assert pick["picked_checkpoint"] in [k["checkpoint"] for k in kept]
    assert f"step {kept[0]['step']} has the lowest validation Mel CE" in pick["why"]
    assert picked.best_checkpoint == pick["picked_checkpoint"]
    exp = result.phase_dir.parent
    assert resolve_checkpoint(exp, "phase1", "best") == Path(pick["picked_checkpoint"])
    table = picked.selection_table()
    assert table["picked"].sum() == 1 and len(table) == len(kept)
    assert len(list((result.phase_dir / "selection").glob("*/s*.wav"))) == len(kept) * N_EVAL
    assert picked.scraps()["best_checkpoint"] == pick["picked_checkpoint"]
    # the same pick again is read back, not made again
    assert training.select_checkpoint(picked).status["pick"] == pick

    lossy = training.select_checkpoint(replace(result, params={**params, "select_by": "loss"}))
    assert lossy.status["pick"]["select_by"] == "loss"
    assert lossy.best_checkpoint == kept[0]["checkpoint"] == result.status["best_checkpoint"]
    assert lossy.scraps()["best_mel_ce"] == pytest.approx(result.status["best_mel_ce"])
    assert resolve_checkpoint(exp, "phase1", "best") == Path(kept[0]["checkpoint"])
