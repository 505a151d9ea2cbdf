"""The feature cache (DVAE codes computed once per clip and base) against coqui's own path.

Tolerances and their reasons:
- one clip per batch: cached and coqui losses agree to 1e-5 (the same numbers, computed once);
- padded batches: Text CE agrees to 1e-5 (text tokens come before the audio codes in the GPT's
  causal sequence, so codes cannot change it); Mel CE within 0.02, because coqui encodes the
  zero-padded batch and the last two or three codes of a shorter clip see padding through the
  DVAE's convolutions (measured: 0, 2 and 3 of 118, 86 and 65 codes), where the cache holds
  what the clip alone encodes to.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from TTS.tts.layers.xtts.trainer.dataset import get_prompt_slice
from TTS.tts.models.xtts import load_audio as coqui_load_audio

from voicebook.coqui.base import resolve_base
from voicebook.coqui.cached import CachedGPTTrainer
from voicebook.coqui.config import gpt_trainer_config, gpt_trainer_model, load_samples
from voicebook.coqui.features import FeatureCache, prompt_slice
from voicebook.coqui.models import load_audio
from voicebook.dataprep.demo import write_demo_dataset
from voicebook.training import Phase1Config

N_TRAIN, N_EVAL = 6, 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Demo clips of different lengths as 22.05 kHz WAVs in the data-prep stage's format."""
    return write_demo_dataset(tmp_path_factory.mktemp("dataset"), N_TRAIN, N_EVAL)


def make_config(dataset: Path, out: Path, batch_size: int):
    settings = Phase1Config(batch_size=batch_size, seed=7).trainer_settings("run", 0)
    return gpt_trainer_config(resolve_base("tiny"), dataset, out, **settings)


def eval_losses(model, config, samples) -> list[tuple[float, float]]:
    """(Mel CE, Text CE) of every eval batch, as the trainer's eval step computes them."""
    model.eval()
    loader = model.get_data_loader(config, is_eval=True, samples=samples, verbose=False)
    out = []
    with torch.no_grad():
        for batch in loader:
            batch = model.format_batch_on_device(model.format_batch(batch))
            _, losses = model.eval_step(batch, None)
            out.append((float(losses["loss_mel_ce"]), float(losses["loss_text_ce"])))
    return out


@pytest.fixture(scope="module")
def models(dataset, tmp_path_factory):
    """coqui's GPTTrainer and the cached one, same weights, each with its own config."""
    out = tmp_path_factory.mktemp("run")
    cache_root = tmp_path_factory.mktemp("features")
    built = {}
    for cached in (False, True):
        torch.manual_seed(0)
        config = make_config(dataset, out, batch_size=3)
        model = gpt_trainer_model(config, cached=cached)
        if cached:
            model.features = FeatureCache(
                config.model_args.dvae_checkpoint,
                config.model_args.mel_norm_file,
                22050,
                22050,
                root=cache_root,
            )
        built[cached] = (model, config)
    return built


def test_clip_reader_returns_coquis_samples(dataset):
    for wav in sorted((dataset / "wavs").glob("*.wav"))[:3]:
        ours, theirs = load_audio(wav, 22050), coqui_load_audio(str(wav), 22050)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("is_eval", [False, True])
def test_prompt_slice_draws_as_coqui(dataset, is_eval):
    wav = min((dataset / "wavs").glob("*.wav"))
    clip = load_audio(wav, 22050)
    for seed in range(5):
        random.seed(seed)
        theirs = get_prompt_slice(str(wav), 132300, 66150, 22050, is_eval)
        random.seed(seed)
        ours = prompt_slice(clip, 132300, 66150, is_eval)
        assert torch.equal(ours[0], theirs[0]) and ours[1:] == theirs[1:]


def test_one_clip_batches_give_coquis_losses(models, dataset):
    (coqui, config), (cached, _) = models[False], models[True]
    config.eval_batch_size = 1
    _, evals = load_samples(config)
    theirs, ours = eval_losses(coqui, config, evals), eval_losses(cached, config, evals)
    assert len(ours) == len(theirs) == N_EVAL
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=0, atol=1e-5)
    config.eval_batch_size = 3


def test_padded_batches_match_within_the_stated_tolerance(models):
    (coqui, config), (cached, _) = models[False], models[True]
    _, evals = load_samples(config)
    theirs, ours = (
        np.array(eval_losses(coqui, config, evals)),
        np.array(eval_losses(cached, config, evals)),
    )
    assert ours.shape == theirs.shape == (N_EVAL // 3, 2)
    np.testing.assert_allclose(ours[:, 1], theirs[:, 1], rtol=0, atol=1e-5)  # Text CE
    mel_gap = np.abs(ours[:, 0] - theirs[:, 0])
    assert mel_gap.max() < 0.02, mel_gap
    # the clip's own codes equal the batch's except the last three at most of a shorter clip
    batch_codes = coqui_codes_of_first_batch(coqui, config, evals)
    for clip, codes in batch_codes.items():
        own = cached.features.codes(clip)
        n = len(own)
        differ = (own != codes[:n]).nonzero().flatten().tolist()
        assert not differ or min(differ) >= n - 3


def coqui_codes_of_first_batch(model, config, samples) -> dict[str, torch.Tensor]:
    loader = model.get_data_loader(config, is_eval=True, samples=samples, verbose=False)
    batch = model.format_batch(next(iter(loader)))
    names = list(batch["filenames"])
    codes = model.format_batch_on_device(batch)["audio_codes"]
    return dict(zip(names, codes, strict=True))


def test_training_batches_are_coquis_draw_for_draw(models):
    (coqui, config), (cached, _) = models[False], models[True]
    train, _ = load_samples(config)
    drawn = {}
    for name, model in (("coqui", coqui), ("cached", cached)):
        random.seed(3)
        loader = model.get_data_loader(config, is_eval=False, samples=list(train), verbose=False)
        drawn[name] = [
            (list(b["filenames"]), b["cond_idxs"].tolist(), b["padded_text"].tolist())
            for b, _ in zip(loader, range(4), strict=False)
        ]
    assert drawn["cached"] == drawn["coqui"]
    assert len({f for b in drawn["cached"] for f in b[0]}) > 1


def test_codes_computed_once_per_clip_and_base(models, dataset, tmp_path):
    cached, config = models[True]
    clips = sorted(str(p) for p in (dataset / "wavs").glob("*.wav"))
    root = cached.features.folder.parent
    again = FeatureCache(
        config.model_args.dvae_checkpoint, config.model_args.mel_norm_file, 22050, 22050, root=root
    )
    assert again.base_key == cached.features.base_key
    assert (
        again.fill(clips, cached.dvae, cached.torch_mel_spectrogram_dvae) == 0
    )  # the first model's fills serve this one
    # a changed clip (same name, new bytes) is recomputed alone
    copy = tmp_path / "wavs"
    shutil.copytree(dataset / "wavs", copy)
    changed = copy / Path(clips[0]).name
    audio, rate = sf.read(changed)
    sf.write(changed, audio * 0.5, rate, subtype="PCM_16")
    fresh = FeatureCache(
        config.model_args.dvae_checkpoint, config.model_args.mel_norm_file, 22050, 22050, root=root
    )
    assert (
        fresh.fill(
            sorted(str(p) for p in copy.glob("*.wav")),
            cached.dvae,
            cached.torch_mel_spectrogram_dvae,
        )
        == 1
    )
    assert fresh.computed == 1


def test_another_base_or_setting_gets_its_own_codes(models, tmp_path):
    _, config = models[True]
    args = config.model_args
    stats = tmp_path / "mel_stats.pth"
    torch.save(torch.load(args.mel_norm_file) * 1.01, stats)
    keys = {
        FeatureCache(
            args.dvae_checkpoint, args.mel_norm_file, 22050, 22050, root=tmp_path
        ).base_key,
        FeatureCache(args.dvae_checkpoint, stats, 22050, 22050, root=tmp_path).base_key,
        FeatureCache(
            args.dvae_checkpoint, args.mel_norm_file, 22050, 24000, root=tmp_path
        ).base_key,
    }
    assert len(keys) == 3


def test_cached_trainer_is_the_default_model(models):
    _, config = models[True]
    assert isinstance(gpt_trainer_model(config), CachedGPTTrainer)


def test_usable_samples_keep_exactly_the_clips_coquis_dataset_keeps(dataset, tmp_path):
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    from voicebook.coqui.config import gpt_trainer_module, usable_samples

    config = make_config(dataset, tmp_path, batch_size=1)
    _, evals = load_samples(config)
    wav, rate = sf.read(evals[0]["audio_file"], dtype="float32")
    sf.write(tmp_path / "short.wav", wav[: rate // 4], rate)  # under coqui's 0.5 s
    sf.write(tmp_path / "other_rate.wav", wav[::2], rate // 2)  # coqui's loader resamples it
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    odd = [{**evals[0], "audio_file": str(tmp_path / n)}
           for n in ("short.wav", "other_rate.wav", "broken.wav")]  # fmt: skip
    samples = [*evals, *odd, {**evals[1], "text": "  "}]
    tokenizer = VoiceBpeTokenizer(config.model_args.tokenizer_file)
    coquis = gpt_trainer_module().XTTSDataset(config, list(samples), tokenizer, 22050, True)
    kept = usable_samples(config, samples, 22050)
    assert kept == coquis.samples
    assert [s["audio_file"] for s in kept] == [*(s["audio_file"] for s in evals), odd[1]["audio_file"]]  # fmt: skip
