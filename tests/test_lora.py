"""LoRA fine-tuning (finetune="lora") on the tiny base: a phase trains adapters only, its
checkpoints hold only them (+ optimizer state, + the weights' digest), an interrupted run
resumes with its adapters and optimizer, the export merges them into a standard XTTS
model.pth that coqui's Xtts loads and speaks from (merged = unmerged to 1e-5), phase 2
continues a LoRA phase 1 or starts LoRA on a full one, and evaluation takes LoRA checkpoints."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from voicebook import training
from voicebook.coqui import user_load
from voicebook.coqui.base import resolve_base
from voicebook.dataprep.demo import write_demo_dataset

pytestmark = pytest.mark.slow
RUN = {"batch_size": 2, "epochs": 50, "eval_every": 4, "save_every": 2, "keep_checkpoints": 2}
LORA = {"finetune": "lora", "lr": 3e-3, "lora_dropout": 0.0}
STEPS, INTERRUPT_AT = 8, 5  # a periodic checkpoint at 4, the interruption's at 5
SHORT = {"max_steps": 1, "eval_every": 100}  # one step: evaluated at its start and end


def params(stage: str, out: Path, dataset: Path, **over) -> training.PhaseConfig:
    values = {**RUN, "outputs_dir": str(out), "dataset_dir": str(dataset), **over}
    return training.params_for(stage, **values)


def adam_steps(checkpoint: Path) -> set[int]:
    state = torch.load(checkpoint, weights_only=False)["optimizer"][0]["state"]
    return {int(s["step"]) for s in state.values()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("dataset"), 8, 2)


@pytest.fixture(scope="module")
def lora1(tmp_path_factory, dataset):
    """A LoRA phase 1 interrupted (KeyboardInterrupt) after step INTERRUPT_AT, then re-run."""
    from voicebook.training.recorder import PhaseRecorder

    out = tmp_path_factory.mktemp("out")
    p = params("phase1", out, dataset, max_steps=STEPS, **LORA)
    row = PhaseRecorder.row

    def interrupting(self, step, split, *args):
        row(self, step, split, *args)
        if split == "train" and step == INTERRUPT_AT:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PhaseRecorder, "row", interrupting)
        with pytest.raises(KeyboardInterrupt):
            training.run_phase(p)
    interrupted = training.read_json(out / "demo" / "phase1" / "status.json")
    return p, interrupted, training.run_phase(p)


def test_lora_phase_trains_adapters_only_and_eval_mel_ce_falls(lora1):
    _, _, result = lora1
    evals = result.curves.query("split == 'eval'")["loss_mel_ce"]
    assert evals.iloc[-1] < evals.iloc[0] - 0.1
    assert result.status["finetune"] == "lora"
    assert 0 < result.status["trained_weights"] < 0.2 * result.status["gpt_weights"]


def test_lora_checkpoints_hold_only_adapters_and_the_weights_digest(lora1):
    _, _, result = lora1
    base = resolve_base("tiny") / "model.pth"
    run = Path(result.status["run_dir"])
    files = sorted(run.glob("*.pth"))
    assert {f.name.split("_")[0] for f in files} >= {"checkpoint", "best"}
    for f in files:
        saved = torch.load(f, weights_only=False)
        keys = [k.removeprefix("xtts.") for k in saved["model"]]
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), f.name
        info = saved["lora"]
        assert info["weights"] == str(base.resolve())
        assert info["weights_digest"] == hashlib.sha256(base.read_bytes()).hexdigest()
        assert info["spec"]["rank"] == 8
        assert f.stat().st_size < 0.1 * base.stat().st_size  # the full model is 10x larger
    periodic = torch.load(run / f"checkpoint_{STEPS}.pth", weights_only=False)
    assert len(periodic["optimizer"][0]["state"]) == len(periodic["model"])  # adapters' only


def test_interrupted_lora_phase_resumes_with_its_adapters_and_optimizer(lora1):
    _, interrupted, result = lora1
    assert interrupted["state"] == "interrupted"
    resumed = Path(result.status["resumed_from"])
    assert resumed.name == f"checkpoint_{INTERRUPT_AT}.pth"  # holds steps 0..INTERRUPT_AT
    train = result.curves.query("split == 'train'")["step"].tolist()
    assert train == list(range(STEPS))  # every step once
    # AdamW's step count went on from the checkpoint: its moments were restored, not reset
    final = Path(result.status["final_checkpoint"])
    assert adam_steps(final) == {STEPS}


def test_a_lora_phase_killed_mid_training_resumes_with_its_adapters_and_optimizer(
    dataset, tmp_path
):
    """SIGKILL (no chance to save): the re-run continues from the newest periodic checkpoint
    with its adapters and AdamW's moments, every step once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    p = params("phase1", tmp_path, dataset, max_steps=STEPS, keep_best=2, **LORA)
    phase, args = tmp_path / "demo" / "phase1", [sys.executable, "-m", "voicebook.training"]
    for name, value in p.to_dict().items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    args.insert(3, "phase1")

    def past_a_checkpoint() -> bool:  # checkpoint_4 is complete once step 5's row is written
        rows = phase / "curves.csv"
        if not list(phase.glob("phase1-run*/checkpoint_4.pth")) or not rows.is_file():
            return False
        train = pd.read_csv(rows).query("split == 'train'")
        return bool((train["step"] >= 5).any())

    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        end = time.time() + 600
        try:
            while not past_a_checkpoint():
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
                assert time.time() < end, "timed out waiting for the LoRA phase"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert training.read_json(phase / "status.json")["state"] == "running"  # killed outright
    result = training.run_phase(p)
    status = result.status
    assert status["state"] == "finished" and status["final_step"] == STEPS
    resumed = Path(status["resumed_from"])
    assert resumed.name.startswith("checkpoint_") and resumed.parent == Path(status["run_dir"])
    assert result.curves.query("split == 'train'")["step"].tolist() == list(range(STEPS))
    final = torch.load(status["final_checkpoint"], weights_only=False)
    assert adam_steps(Path(status["final_checkpoint"])) == {STEPS}  # moments restored, not reset
    keys = [k.removeprefix("xtts.") for k in final["model"]]
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)  # adapters only
    kept = status["kept"]
    assert 1 <= len(kept) <= 2
    for k in kept:  # the kept bests are adapters too
        saved = torch.load(k["checkpoint"], weights_only=False)["model"]
        assert all(".lora_" in key for key in saved)


def _forward_latent(model, seed: int = 3) -> torch.Tensor:
    """The GPT's teacher-forced output latents for a fixed random input and voice."""
    gen = torch.Generator().manual_seed(seed)
    gpt = model.gpt
    text = torch.randint(0, 100, (1, 12), generator=gen)
    codes = torch.randint(0, 1000, (1, 30), generator=gen)
    cond = torch.randn(1, 32, gpt.model_dim, generator=gen)
    with torch.no_grad():
        return gpt(text, torch.tensor([12]), codes, torch.tensor([30 * 1024]),
                   cond_latents=cond, return_latent=True)  # fmt: skip


def test_merged_and_unmerged_adapters_give_the_same_outputs(lora1):
    from voicebook.coqui.models import load_xtts

    _, _, result = lora1
    base = resolve_base("tiny")
    best = result.best_checkpoint
    unmerged = _forward_latent(load_xtts(base, best, merge=False))
    merged = _forward_latent(load_xtts(base, best))
    plain = _forward_latent(load_xtts(base))
    assert (merged - unmerged).abs().max() < 1e-5
    assert (merged - plain).abs().max() > 1e-3  # the adapters did change the model


def test_export_is_a_standard_xtts_model_that_coqui_loads_strictly_where_moved_and_speaks_from(
    lora1, tmp_path
):
    from voicebook.coqui.models import load_xtts
    from voicebook.evaluation.measures import synthesize

    _, _, result = lora1
    folder = training.export_phase(result, "best")
    exported = torch.load(folder / "model.pth", weights_only=False)["model"]
    base = torch.load(resolve_base("tiny") / "model.pth", weights_only=False)["model"]
    assert set(exported) == set(base)  # no adapters left: every XTTS tool loads it
    key = "gpt.gpt.h.0.attn.c_attn.weight"
    assert not torch.allclose(exported[key], base[key])
    model = load_xtts(folder)  # coqui's Xtts.load_checkpoint
    assert torch.equal(model.state_dict()[key], exported[key])
    spoken = synthesize(model, ["Jó napot."], [folder / "reference.wav"], tmp_path)
    assert spoken["audio_s"].iloc[0] > 0
    # moved elsewhere and loaded as a user loads it: coqui's Xtts with strict=True, and TTS.api
    moved = Path(shutil.copytree(folder, tmp_path / "moved_export"))
    for how in user_load.USER_LOADERS:
        loaded = user_load.load_like_a_user(moved, how)
        assert torch.equal(loaded.state_dict()[key], exported[key]), how


def _start_mel(result) -> float:
    return result.curves.query("split == 'eval' and step == 0")["loss_mel_ce"].item()


def test_phase2_continues_lora_adapters_trains_their_merge_or_adds_lora_to_full(lora1, dataset):
    p1, _, r1 = lora1
    out = Path(p1.outputs_dir)
    r2 = training.run_phase(params("phase2", out, dataset, **SHORT, **{**LORA, "lr": 1e-3}))
    assert _start_mel(r2) == pytest.approx(r1.status["best_mel_ce"], abs=1e-4)  # same adapters
    info = torch.load(r2.status["final_checkpoint"], weights_only=False)["lora"]
    assert (
        info["weights_digest"]
        == torch.load(r1.best_checkpoint, weights_only=False)["lora"]["weights_digest"]
    )

    full = training.run_phase(params("phase2", out, dataset, **SHORT, lr=1e-4))
    assert _start_mel(full) == pytest.approx(r1.status["best_mel_ce"], abs=1e-4)  # merged
    assert "lora" not in torch.load(full.status["final_checkpoint"], weights_only=False)
    assert full.status["trained_weights"] == full.status["gpt_weights"]

    # LoRA on a full checkpoint (here full phase 2's): the adapters sit on its weights
    on_full = params("phase2", out, dataset, **SHORT, **LORA, resume_from=full.best_checkpoint)
    r3 = training.run_phase(on_full)
    info = torch.load(r3.status["final_checkpoint"], weights_only=False)["lora"]
    assert info["weights"] == str(Path(full.best_checkpoint).resolve())
    assert _start_mel(r3) == pytest.approx(full.status["best_mel_ce"], abs=1e-4)
    assert r3.status["trained_weights"] < full.status["trained_weights"] / 5

    with pytest.raises(ValueError, match="lora_rank=8"):
        training.run_phase(params("phase2", out, dataset, **SHORT, **LORA, lora_rank=4))


def test_a_lora_checkpoint_read_into_one_xtts_is_its_fresh_load(lora1):
    from voicebook.coqui.models import XttsLoader, load_xtts

    _, _, r1 = lora1
    base, best = resolve_base("tiny"), Path(r1.best_checkpoint)
    loader = XttsLoader(base)
    model = loader.load(None)
    for checkpoint in (best, None):  # the adapters merged in, then the base's weights again
        assert loader.load(checkpoint) is model
        loaded, fresh = model.state_dict(), load_xtts(base, checkpoint).state_dict()
        assert loaded.keys() == fresh.keys()
        assert all(torch.equal(loaded[k], fresh[k]) for k in fresh)


def test_evaluation_and_report_take_a_lora_checkpoint_as_a_candidate(lora1, dataset, tmp_path):
    import pandas as pd

    from voicebook.decision.finetune_compare import finetune_table
    from voicebook.evaluation import scoring as ev

    _, _, r1 = lora1
    base, best = resolve_base("tiny"), Path(r1.best_checkpoint)
    tuned = ev.eval_losses(base, dataset, best, tmp_path, batch_size=2)["mel_ce"]
    assert tuned < ev.eval_losses(base, dataset, None, tmp_path, batch_size=2)["mel_ce"] - 0.1
    table = pd.DataFrame(
        [{"candidate": "base", "checkpoint": "", "general_text_ce": 0.05, "general_cer": 0.5},
         {"candidate": "phase1", "checkpoint": str(best), "mel_ce": tuned, "text_ce": 0.06,
          "speaker_similarity": 0.5, "general_text_ce": 0.07, "general_cer": 0.75}]
    )  # fmt: skip
    compare = finetune_table(table).set_index("candidate")
    assert list(compare.index) == ["phase1"]  # the base was made by no phase
    row = compare.loc["phase1"]
    assert row["finetune"] == "lora r8" and row["mel_ce"] == tuned
    assert row["trained_weights"] == r1.status["trained_weights"]
    assert 0 < row["minutes"] < 10 and row["peak_memory_mb"] > 100
    assert row["checkpoint_mb"] < 1  # adapters and their optimizer state only
    assert row["forgetting_text_ce"] == pytest.approx(0.02) and row["forgetting_cer"] == 0.25


def test_a_changed_base_is_refused_by_name(lora1, tmp_path):
    from voicebook.coqui import lora

    _, _, result = lora1
    info = lora.lora_info(result.best_checkpoint)
    fake = tmp_path / "model.pth"
    fake.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="has changed"):
        lora.checked_weights({**info, "weights": str(fake)}, result.best_checkpoint)
    with pytest.raises(FileNotFoundError, match="missing"):
        lora.checked_weights({**info, "weights": str(tmp_path / "gone.pth")}, "x.pth")


def test_lora_parameters_are_checked_and_only_count_for_lora_runs():
    with pytest.raises(ValueError, match="finetune='qlora'"):
        training.Phase1Config(finetune="qlora")
    with pytest.raises(ValueError, match="lora_rank=0"):
        training.Phase1Config(finetune="lora", lora_rank=0)
    full = training.Phase1Config()
    assert full.training_identity() == training.Phase1Config(lora_rank=32).training_identity()
    lora = training.Phase1Config(finetune="lora")
    assert (
        lora.training_identity()
        != training.Phase1Config(finetune="lora", lora_rank=32).training_identity()
    )
    assert lora.lora_spec().targets == ("c_attn", "c_proj", "c_fc")


@pytest.mark.parametrize("stem", ["01_phase1", "02_phase2"])
def test_both_phase_notebooks_declare_every_lora_parameter(stem):
    import papermill

    from voicebook.core.paths import NOTEBOOKS_DIR

    declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{stem}.ipynb"))
    assert {"finetune", *training.PhaseConfig.LORA} <= set(declared)  # papermill parses them


def test_preflight_sizes_a_lora_phase_by_its_adapters(lora1):
    """Disk and memory are estimated for what a LoRA phase trains and saves, not the whole GPT:
    a machine with room for the adapters is not refused for lack of room for full checkpoints."""
    import json

    from voicebook.coqui.lora import HEADS
    from voicebook.training.resources import adapter_weights, model_size

    _, _, result = lora1
    base = resolve_base("tiny")
    trained = result.status["trained_weights"]
    assert adapter_weights(base, 8, ("c_attn", "c_proj", "c_fc")) == trained  # 2 x 16 x 8 x 128
    heads = adapter_weights(base, 8, ("c_attn", "c_proj", "c_fc"), HEADS)
    state = torch.load(base / "model.pth", weights_only=False)["model"]
    assert heads - trained == sum(
        t.numel() for k, t in state.items() if k.startswith(tuple(f"gpt.{h}." for h in HEADS))
    )
    full, lora = model_size(base), model_size(base).with_adapters(trained)
    assert (lora.n_trained, full.n_trained) == (trained, full.n_gpt)
    run = Path(result.status["run_dir"])
    on_disk = (run / f"checkpoint_{STEPS}.pth").stat().st_size
    assert lora.checkpoint_bytes <= on_disk < lora.checkpoint_bytes + 64_000  # + config, steps
    assert lora.disk_bytes(2) < full.disk_bytes(2) / 5
    assert lora.training_bytes(2) < full.training_bytes(2)
    phase = Path(result.status["run_dir"]).parent
    health = json.loads((phase / "health.json").read_text())
    preflight = next(e["message"] for e in health if e["kind"] == "preflight")
    assert f"({trained / 1e6:.3g} M trained)" in preflight
