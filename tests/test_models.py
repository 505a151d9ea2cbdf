"""Base models: folder validation, the real-XTTS download call, the tiny base's real layout."""

import json
import shutil

import pytest
import torch

from voicebook.coqui import base as models
from voicebook.coqui import models as coqui_models
from voicebook.coqui import tiny
from voicebook.coqui.base import BASE_FILES, BaseModelError, resolve_base, validate_base_dir


def test_folder_missing_files_are_all_named(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BaseModelError) as err:
        resolve_base(tmp_path)
    message = str(err.value)
    for name in ("dvae.pth", "mel_stats.pth", "vocab.json", "speakers_xtts.pth"):
        assert name in message
    assert "model.pth," not in message and str(tmp_path) in message


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(BaseModelError, match="does not exist.*'tiny', 'xtts_v2'"):
        validate_base_dir(tmp_path / "nope")


def test_xtts_v2_download_asks_the_hub_for_exactly_the_base_files(tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, local_dir):
        calls.append((repo_id, tuple(allow_patterns)))
        for name in allow_patterns:
            (local_dir / name).write_bytes(b"weights")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder = models.download_xtts_v2(tmp_path / "xtts")
    assert calls == [("coqui/XTTS-v2", BASE_FILES)]
    assert validate_base_dir(folder) == folder
    models.download_xtts_v2(tmp_path / "xtts")  # cached: no second download
    assert len(calls) == 1


def test_xtts_v2_offline_error_says_how_to_proceed(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(BaseModelError, match="copy the XTTS v2 files there by hand"):
        models.download_xtts_v2(tmp_path / "xtts")


@pytest.fixture(scope="session")
def tiny_base():
    return resolve_base("tiny")


def test_tiny_base_has_the_real_layout_and_shapes(tiny_base):
    assert validate_base_dir(tiny_base) == tiny_base
    config = json.loads((tiny_base / "config.json").read_text())["model_args"]
    assert (config["gpt_layers"], config["gpt_n_model_channels"]) == (2, 128)
    assert config["gpt_num_audio_tokens"] == 1026
    dvae = torch.load(tiny_base / "dvae.pth", weights_only=True)
    assert dvae["codebook.embed"].shape == (512, 1024)  # real XTTS v2 DVAE: 1024 codes
    assert torch.load(tiny_base / "mel_stats.pth", weights_only=True).shape == (80,)
    assert resolve_base("tiny") == tiny_base  # cached, not rebuilt


def test_tiny_vocab_has_xtts_special_tokens_and_no_unknowns_on_corpus(tiny_base):
    tokenizer = coqui_models.load_tokenizer(tiny_base)
    vocab = tokenizer.tokenizer.get_vocab()
    for token in ("[STOP]", "[UNK]", "[SPACE]", "[START]", "[hu]", "[en]"):
        assert token in vocab
    unk = vocab["[UNK]"]
    for text in tiny.demo_corpus_texts()[:40] + ["Ki nyerte a döntőt, Őrs vagy Ügyes Ürsula?"]:
        ids = tokenizer.encode(text, "hu")
        assert unk not in ids and ids[0] == vocab["[hu]"]


def test_tiny_base_loads_through_coqui_xtts_and_codes_use_the_codebook(tiny_base):
    model = coqui_models.load_xtts(tiny_base)
    assert len(model.gpt.gpt.h) == 2
    speaker = model.speaker_manager.speakers[tiny.TINY_SPEAKER]
    assert speaker["speaker_embedding"].shape[1] == 512

    from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram
    from TTS.tts.models.xtts import load_audio

    dvae = coqui_models.load_dvae(tiny_base)
    mel = TorchMelSpectrogram(mel_norm_file=str(tiny_base / "mel_stats.pth"), sampling_rate=22050)
    clip = tiny.demo_corpus_clips()[0]
    with torch.no_grad():
        codes = dvae.get_codebook_indices(mel(load_audio(str(clip), 22050)))
    # Seeded from data, the codebook spreads a 2-4 s clip over many distinct codes.
    assert codes.numel() > 30 and codes.unique().numel() > codes.numel() // 3


@pytest.mark.slow  # builds the tiny base again
def test_tiny_base_build_is_deterministic(tiny_base, tmp_path):
    rebuilt = tiny.build_tiny_base(tmp_path / "tiny")
    for name in ("vocab.json", "config.json"):
        assert (rebuilt / name).read_bytes() == (tiny_base / name).read_bytes(), name
    # Weights: equal up to float rounding (CPU kernels may sum in another order when the
    # number of torch threads differs between the two builds).
    for name in ("model.pth", "dvae.pth"):
        new = torch.load(rebuilt / name, weights_only=True)
        old = torch.load(tiny_base / name, weights_only=True)
        new, old = new.get("model", new), old.get("model", old)
        assert new.keys() == old.keys()
        for key in new:
            assert torch.allclose(new[key].float(), old[key].float(), atol=1e-4), (name, key)
    new_stats = torch.load(rebuilt / "mel_stats.pth", weights_only=True)
    assert torch.allclose(new_stats, torch.load(tiny_base / "mel_stats.pth", weights_only=True))


def test_xtts_limits_are_coquis_own():
    """voicebook.coqui.limits defines XTTS's limits once; an upgrade that moves coqui's fails."""
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs

    from voicebook.coqui import limits

    args = GPTArgs()
    assert (args.max_wav_length, args.max_text_length) == (
        limits.MAX_WAV_SAMPLES,
        limits.MAX_TEXT_TOKENS,
    )
    assert coqui_models.load_tokenizer(resolve_base("tiny")).char_limits == limits.CHAR_LIMITS
    assert limits.char_limit("zh-cn") == 82 and limits.char_limit("xx") == 250


def test_trainer_config_takes_the_model_config_whole_from_the_base(tmp_path):
    """A base whose token limits, stride or d-vector settings differ trains with its own."""
    from voicebook.coqui.config import gpt_trainer_config
    from voicebook.training import Phase1Config

    base = tmp_path / "base"
    shutil.copytree(resolve_base("tiny"), base)
    config = json.loads((base / "config.json").read_text())
    changed = {"gpt_max_audio_tokens": 333, "gpt_code_stride_len": 512, "d_vector_dim": 256}
    config["model_args"].update(changed, gpt_max_text_tokens=123)
    (base / "config.json").write_text(json.dumps(config))
    data = tmp_path / "ds"
    data.mkdir()
    for name in ("metadata_train.csv", "metadata_eval.csv"):
        (data / name).write_text("audio_file|text|speaker_name\n")
    settings = Phase1Config().trainer_settings("run", 0)
    args = gpt_trainer_config(base, data, tmp_path, **settings).model_args
    assert {k: getattr(args, k) for k in changed} == changed
    assert args.gpt_max_text_tokens == 123
    assert args.gpt_layers == 2 and args.gpt_num_audio_tokens == 1026
    assert args.xtts_checkpoint == str(base / "model.pth")
    assert args.max_wav_length == 255995  # data limits stay XTTS's
