"""The real XTTS v2 size on the CPU: a random-weight model at the real shape (454 M weights)
through phase 1 (2 steps), export and evaluation (one short sentence), each in its own process.

It proves what the tiny base cannot: shapes at full size, peak RAM against the preflight's
estimate, the disk a phase takes against its estimate, the files' sizes (the best model slim,
the size of the export, far below a 5.46 GB checkpoint with optimizer state). About 4-6 min on
2 cores, 12 GB of RAM and 9 GB of disk (removed at the end); part of ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fullsize

from voicebook.dataprep.demo import write_demo_dataset
from voicebook.training.resources import ModelSize, model_size

pytestmark = pytest.mark.slow
LIB = Path(__file__).resolve().parents[1] / "lib"
BATCH, STEPS, KEEP = 2, 2, 1
LR = 5e-5  # the random-weight model's eval Mel CE falls: the best is written after a step


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Phase 1, export, evaluation of the full-size base; everything removed afterwards."""
    base = fullsize.fullsize_base()
    root = tmp_path_factory.mktemp("fullsize")
    out = root / "outputs"
    dataset = write_demo_dataset(out / "full" / "dataset", 4, 2)  # where evaluation looks
    phase = out / "full" / "phase1"
    args = ["phase1", "--experiment", "full", "--outputs-dir", str(out), "--base-model", str(base)]
    args += ["--dataset-dir", str(dataset), "--max-steps", str(STEPS), "--epochs", "1"]
    args += ["--batch-size", str(BATCH), "--eval-every", "1000", "--save-every", "1000"]
    args += ["--keep-checkpoints", str(KEEP), "--device", "cpu", "--lr", str(LR)]
    args += ["--keep-best", "1"]  # one kept model: no selection pass (the tiny base tests it)
    phase1 = fullsize.run_measured("module", "voicebook.training", args, LIB, watch=phase)
    assert phase1.returncode == 0, phase1.output[-4000:]
    after_phase1 = fullsize.folder_bytes(phase)
    export = fullsize.run_measured("code", _EXPORT.format(args=args[1:]), [], LIB)
    assert export.returncode == 0, export.output[-4000:]
    evaluation = fullsize.run_measured(
        "code", _EVALUATE.format(out=str(out), base=str(base)), [], LIB
    )
    assert evaluation.returncode == 0, evaluation.output[-4000:]
    yield {
        "base": base,
        "phase": phase,
        "phase1": phase1,
        "after_phase1": after_phase1,
        "export": export,
        "evaluation": evaluation,
        "exp": out / "full",
    }
    shutil.rmtree(root, ignore_errors=True)  # ~9 GB: pytest would keep it for three runs


_EXPORT = """
from voicebook import training
values = {args!r}
pairs = dict(zip(values[0::2], values[1::2]))
params = training.params_for("phase1", **{{k[2:].replace("-", "_"): v for k, v in pairs.items()}})
for name in ("max_steps", "epochs", "batch_size", "eval_every", "save_every", "keep_checkpoints",
             "keep_best"):
    setattr(params, name, int(getattr(params, name)))
params.lr = float(params.lr)
result = training.run_phase(params)  # finished with these parameters: returned, not trained
assert result.status["state"] == "finished", result.status
print(training.export_phase(result, "best"))
"""

_EVALUATE = """
from pathlib import Path
from voicebook.evaluation import scoring as evaluation
config = evaluation.EvalConfig(experiment="full", outputs_dir={out!r}, candidates=["phase1"],
    test_sentences=["Jó napot."], n_reference_clips=1, max_eval_batches=1, eval_batch_size=2,
    hidden_reference_sentences=0, device="cpu", takes=1, stress_set=False, mos=False,
    asr_model="")  # CER and MOS do not depend on the model's size: their own tests cover them
result = evaluation.evaluate(config, Path({out!r}) / "full", Path({base!r}))
print(result.table.to_json(orient="records"))
"""


def test_the_base_has_the_real_xtts_v2_shape(run):
    config = json.loads((run["base"] / "config.json").read_text())["model_args"]
    assert (config["gpt_layers"], config["gpt_n_model_channels"], config["gpt_n_heads"]) == (
        30,
        1024,
        16,
    )
    size = model_size(run["base"])
    assert 440e6 < size.n_params < 470e6 and 420e6 < size.n_gpt < 440e6  # 454 M, GPT 431 M
    assert abs((run["base"] / "model.pth").stat().st_size - size.slim_bytes) < 0.01e9


def test_phase1_trains_two_steps_within_the_preflights_ram_estimate(run):
    status = json.loads((run["phase"] / "status.json").read_text())
    assert status["state"] == "finished" and status["final_step"] == STEPS
    curves = pd.read_csv(run["phase"] / "curves.csv")
    assert (curves["split"] == "train").sum() == STEPS
    assert curves["loss_mel_ce"].notna().all()
    health = json.loads((run["phase"] / "health.json").read_text())
    warning = next(e for e in health if e["kind"] == "full_size_on_cpu")
    assert "s per step" in warning["message"]
    estimate = model_size(run["base"]).host_bytes(BATCH, on_gpu=False)
    peak = run["phase1"].peak_rss
    print(
        f"\nphase 1: {run['phase1'].seconds:.0f} s, {run['phase1'].seconds_per_step():.1f} s/step,"
        f" peak RSS {peak / 1e9:.1f} GB (estimate {estimate / 1e9:.1f} GB)"
    )
    assert 0.6 * estimate < peak <= estimate


def test_best_model_is_slim_and_the_disk_stays_within_the_estimate(run):
    size: ModelSize = model_size(run["base"])
    run_dir = Path(json.loads((run["phase"] / "status.json").read_text())["run_dir"])
    (checkpoint,) = run_dir.glob("checkpoint_*.pth")
    status = json.loads((run["phase"] / "status.json").read_text())
    best = status["best_checkpoint"]
    assert status["best_step"] == STEPS  # written when the optimizer had state to leave out
    exported = run["phase"] / "export" / "model.pth"
    sizes = {p: Path(p).stat().st_size for p in (checkpoint, best, exported)}
    assert abs(sizes[checkpoint] - size.checkpoint_bytes) < 0.02 * size.checkpoint_bytes
    assert abs(sizes[best] - size.slim_bytes) < 0.01 * size.slim_bytes  # as slim as the export
    assert abs(sizes[best] - sizes[exported]) < 0.01 * sizes[exported]
    assert sizes[best] < 2.0e9 and sizes[checkpoint] > 5.0e9  # 1.82 GB vs 5.46 GB with optimizer
    state = torch.load(best, map_location="cpu", mmap=True, weights_only=True)
    assert set(state) == {"model", "step", "model_loss"}  # no optimizer state
    assert state["model"]["gpt.mel_head.weight"].shape == (1026, 1024)
    estimate = size.disk_bytes(KEEP)
    print(
        f"\nphase 1 disk: peak {run['phase1'].peak_disk / 1e9:.1f} GB, after export "
        f"{fullsize.folder_bytes(run['phase']) / 1e9:.1f} GB (estimate {estimate / 1e9:.1f} GB)"
    )
    assert run["phase1"].peak_disk <= estimate
    assert fullsize.folder_bytes(run["phase"]) <= estimate


def test_export_and_evaluation_run_at_full_size(run):
    table = pd.read_csv(run["exp"] / "eval" / "eval_table.csv")
    (row,) = table.to_dict("records")
    assert row["candidate"] == "phase1" and row["n_sentences"] == 1
    assert 0 < row["mel_ce"] < 20 and row["rtf"] > 0 and -1 <= row["speaker_similarity"] <= 1
    samples = pd.read_csv(run["exp"] / "eval" / "samples.csv")
    assert (run["exp"] / "eval" / samples["wav"][0]).is_file()
    voices = torch.load(run["phase"] / "export" / "speakers_xtts.pth", weights_only=True)
    assert voices["voicebook_reference"]["gpt_cond_latent"].shape == (1, 32, 1024)
    print(
        f"\nexport {run['export'].seconds:.0f} s (peak RSS {run['export'].peak_rss / 1e9:.1f} GB),"
        f" evaluation {run['evaluation'].seconds:.0f} s (peak RSS "
        f"{run['evaluation'].peak_rss / 1e9:.1f} GB), RTF {row['rtf']:.1f}"
    )


def test_a_best_model_write_does_not_block_the_step(tmp_path):
    """At full size on the CPU, a step during which a best model (1.82 GB) is written takes at
    most 0.3 s longer than one without a write (the issue's bar), counting the copy to host
    memory on the training thread. Steps alternate without and with a write, on the same batch,
    three times; a write's steps are every step until it is on disk; medians are compared.

    The bar is asserted when this test runs alone (``pytest tests/test_fullsize.py -k
    does_not_block``: a quiet step here varies by up to 0.4 s); under ``make test``'s three
    workers on two cores a step varies by seconds, so there the steps alternate once (each
    full-size step costs seconds of CPU) and the figures are only printed. Always asserted: the
    writes went past the page cache (what slowed the step by 1.4 s), the update after a best
    never waited, and the files hold the last best."""
    import statistics
    import time

    from voicebook.coqui.config import gpt_trainer_config, gpt_trainer_model, load_samples
    from voicebook.coqui.trainer import BackgroundSaves, _prune_bests
    from voicebook.core.fileio import DirectFile
    from voicebook.training import Phase1Config
    from voicebook.training.run import best_weights

    dataset = write_demo_dataset(tmp_path / "dataset", 2, 1)
    settings = Phase1Config(batch_size=1).trainer_settings("run", 0)
    config = gpt_trainer_config(fullsize.fullsize_base(), dataset, tmp_path, **settings)
    model = gpt_trainer_model(config)
    train, _ = load_samples(config)
    loader = model.get_data_loader(config, is_eval=False, samples=train[:1], verbose=False)
    batch = model.format_batch_on_device(model.format_batch(next(iter(loader))))
    model.train()
    optimizer = torch.optim.AdamW(model.xtts.gpt.parameters(), lr=1e-7)
    saves = BackgroundSaves()
    saves.guard([optimizer])

    def step() -> float:
        start = time.perf_counter()
        _, losses = model.train_step(batch, None)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def best(n: int) -> float:
        start, path = time.perf_counter(), tmp_path / f"best_model_{n}.pth"
        saves.best(
            path,
            best_weights(model.state_dict()),
            {"step": n},
            _prune_bests(tmp_path, path, lambda: [path]),
        )
        return time.perf_counter() - start

    alone = not os.environ.get("PYTEST_XDIST_WORKER")
    rounds = (1, 2, 3) if alone else (1,)
    best(0)
    step()  # warm-up: AdamW's state, the best's host buffers
    saves.writer.wait()
    times: dict[str, list[float]] = {"without": [], "with": []}
    copies, waited = [], saves.blocked_seconds
    for n in rounds:
        times["without"].append(step())
        copies.append(best(n))
        times["with"].append(copies[-1] + step())
        while saves.writer.busy():  # a write that outlasts a step slows the next one too
            times["with"].append(step())
        saves.writer.wait()
    waited = saves.blocked_seconds - waited
    with_write, without = statistics.median(times["with"]), statistics.median(times["without"])
    print(
        f"\nfull-size step: {without:.2f} s without a write, {with_write:.2f} s with one "
        f"(median; {times}); copying to host memory took {max(copies):.3f} s at most, updates "
        f"waited {waited:.2f} s, the writer used {saves.writer.cpu_seconds / 4:.2f} s of CPU "
        f"per write"
    )
    if alone:
        assert with_write - without <= 0.3
    probe = DirectFile(tmp_path / "probe.bin")  # where this file system allows direct I/O
    probe.close()
    assert saves.written_direct == (1 + len(rounds) if probe.direct else 0)
    assert waited < 0.05  # a copy frees the weights at once
    assert sorted(p.name for p in tmp_path.glob("best_model*.pth")) == [
        "best_model.pth",
        f"best_model_{rounds[-1]}.pth",
    ]
