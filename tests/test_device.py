"""Where stages run and what they need: the device parameter, threads, loader workers,
precision, the footprint estimates and the preflight checks built on them."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
import torch

from voicebook.coqui.base import resolve_base
from voicebook.core import device as dev
from voicebook.training import health, resources
from voicebook.training.resources import ModelSize

FULL_SIZE = ModelSize(n_params=454_000_000, n_gpt=431_000_000, n_dvae=3_900_000)


def test_auto_is_the_gpu_when_there_is_one_and_cuda_without_one_is_a_clear_error():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.resolve_device("auto").type == expected
    assert dev.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        dev.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no GPU.*device='auto' or 'cpu'"):
            dev.resolve_device("cuda")


def test_threads_go_back_to_the_cores_unless_omp_num_threads_says_otherwise(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(1)  # what coqui's dataset module does at import
        assert dev.use_all_cores() == dev.cpu_cores() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert dev.use_all_cores() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_importing_coquis_trainer_through_voicebook_keeps_every_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    from voicebook.coqui.config import gpt_trainer_module

    torch.set_num_threads(1)
    gpt_trainer_module()
    assert torch.get_num_threads() == dev.cpu_cores()


def test_loader_workers_only_on_a_gpu_and_at_most_eight(monkeypatch):
    assert dev.loader_workers("cpu") == 0
    for cores, workers in ((2, 1), (4, 3), (16, 8), (1, 1)):
        monkeypatch.setattr(dev, "cpu_cores", lambda cores=cores: cores)
        assert dev.loader_workers("cuda") == workers


def test_mixed_precision_needs_a_gpu():
    assert dev.check_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="needs a GPU.*precision='fp32'"):
        dev.check_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        dev.check_precision("fp8", "cpu")


def test_trainer_config_turns_precision_into_coquis_mixed_precision(tmp_path):
    from voicebook.coqui.config import gpt_trainer_config
    from voicebook.training import Phase1Config

    data = tmp_path / "ds"
    data.mkdir()
    for name in ("metadata_train.csv", "metadata_eval.csv"):
        (data / name).write_text("audio_file|text|speaker_name\n")
    base = resolve_base("tiny")
    fp32 = gpt_trainer_config(base, data, tmp_path, **Phase1Config().trainer_settings("run", 3))
    bf16 = gpt_trainer_config(
        base, data, tmp_path, **Phase1Config(precision="bf16").trainer_settings("run", 0)
    )
    assert (fp32.mixed_precision, bf16.mixed_precision, bf16.precision) == (False, True, "bf16")
    assert (fp32.num_loader_workers, fp32.num_eval_loader_workers) == (3, 3)


# --- footprints -------------------------------------------------------------------------------


def test_file_sizes_follow_from_the_weight_counts():
    # A trainer checkpoint: XTTS + DVAE weights and AdamW's two moments of the GPT.
    assert FULL_SIZE.checkpoint_bytes == 4 * (454_000_000 + 3_900_000) + 8 * 431_000_000
    assert FULL_SIZE.slim_bytes == 4 * 454_000_000  # 1.82 GB: the export's size
    assert 5.2e9 < FULL_SIZE.checkpoint_bytes < 5.6e9  # measured: 5.46 GB
    assert FULL_SIZE.disk_bytes(2) == 3 * FULL_SIZE.checkpoint_bytes + 3 * FULL_SIZE.slim_bytes
    assert FULL_SIZE.training_bytes(4) > FULL_SIZE.training_bytes(2) > 4 * FULL_SIZE.n_params


def test_counts_come_from_the_base_files():
    size = resources.model_size(resolve_base("tiny"))
    state = torch.load(resolve_base("tiny") / "model.pth", weights_only=False)["model"]
    gpt = sum(v.numel() for k, v in state.items() if k.startswith("gpt."))
    assert size.n_gpt == gpt and 1e6 < gpt < 5e6  # the tiny GPT: 2 layers, 128 channels
    assert size.n_params > size.n_gpt  # + the HiFi-GAN decoder, which does not train
    assert size.n_dvae > 1e6


Usage = namedtuple("Usage", "total used free")


def test_disk_too_small_names_the_need_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10e9, 9e9, 1e9))
    (problem,) = health.check_disk(FULL_SIZE, tmp_path, keep_checkpoints=2)
    need = resources.gb(FULL_SIZE.disk_bytes(2))
    assert "1.0 GB free" in problem and need in problem and "keep_checkpoints" in problem
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(99e9, 1e9, 30e9))
    assert health.check_disk(FULL_SIZE, tmp_path, keep_checkpoints=2) == []


def test_ram_too_small_says_what_the_batch_needs(monkeypatch):
    monkeypatch.setattr(health, "available_ram", lambda: 4e9)
    (problem,) = health.check_memory(FULL_SIZE, 2, "cpu", 0)
    assert problem.startswith("RAM: 4.0 GB available") and "lower batch_size" in problem
    monkeypatch.setattr(health, "available_ram", lambda: 64e9)
    assert health.check_memory(FULL_SIZE, 2, "cpu", 0) == []


def test_the_gpu_preflight_honours_a_per_process_memory_fraction(monkeypatch):
    """An H200 with 139 GB free, this process capped at 5% by
    ``torch.cuda.set_per_process_memory_fraction``: the driver's free memory alone would pass the
    full-size batch, the cap does not (faked: no GPU here; on a GPU host
    ``benchmarks/gpu_checks.py`` runs the real preflight under the cap)."""
    total, fraction = 150e9, [1.0]
    monkeypatch.setattr(health, "available_ram", lambda: 500e9)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (139e9, total))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda d: fraction[0])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 1e9)
    assert dev.gpu_memory_free("cuda") == (139e9, 1.0)
    assert health.check_memory(FULL_SIZE, 2, "cuda", 0) == []
    fraction[0] = 0.05  # 7.5 GB, of which the allocator holds 1 GB
    assert dev.gpu_memory_free("cuda") == (6.5e9, 0.05)
    (problem,) = health.check_memory(FULL_SIZE, 2, "cuda", 0)
    need = resources.gb(FULL_SIZE.training_bytes(2))
    assert problem.startswith("GPU: 6.5 GB free to this process (memory fraction 0.05)")
    assert f"needs about {need}" in problem and "lower batch_size" in problem


def test_a_full_size_gpt_on_the_cpu_is_a_loud_warning_with_an_estimate():
    (event,) = health.cpu_warning(FULL_SIZE, 2, "cpu")
    assert event.severity == "warning" and event.message.startswith("FULL-SIZE MODEL ON THE CPU")
    per_step = FULL_SIZE.cpu_seconds_per_step(2, torch.get_num_threads())
    assert f"about {per_step:.0f} s per step" in event.message
    assert health.cpu_warning(FULL_SIZE, 2, "cuda") == []
    assert health.cpu_warning(resources.model_size(resolve_base("tiny")), 2, "cpu") == []


def test_a_vocab_larger_than_the_models_text_tokens_is_named_with_the_fix(tmp_path):
    base = resolve_base("tiny")
    folder = tmp_path / "base"
    shutil.copytree(base, folder)
    assert health.check_vocab(folder) == []
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["gpt_number_text_tokens"] = 100
    (folder / "config.json").write_text(json.dumps(config))
    (problem,) = health.check_vocab(folder)
    assert str(folder / "vocab.json") in problem and "gpt_number_text_tokens=100" in problem
    assert "Use the vocab.json the model was trained with" in problem
