"""Voice search: every method improves a known objective, the held-out check stops at the sweet
spot, the Mel CE of candidate latents is coqui's own loss, and on the tiny base the search lowers
held-out Mel CE below the reference clips' voice and writes a voice file XTTS can use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from voicebook.coqui import latents as coqui
from voicebook.coqui.base import BASE_FILES
from voicebook.coqui.models import load_xtts
from voicebook.coqui.tiny import build_tiny_base
from voicebook.core.paths import DEMO_DATA_DIR
from voicebook.voice_search import search as vs

N_TRAIN, N_EVAL = 12, 3


class Quadratic:
    """f(x) = |x - target|^2 on the minibatch and |x - heldout_target|^2 on the held-out."""

    def __init__(self, target: torch.Tensor, heldout_target: torch.Tensor | None = None):
        self.target = target
        self.heldout_target = target if heldout_target is None else heldout_target
        self.dim = len(target)
        self.train_calls: list[int] = []

    def train(self, x: torch.Tensor, generation: int) -> torch.Tensor:
        self.train_calls.append(generation)
        return ((x - self.target) ** 2).sum(-1)

    def heldout(self, x: torch.Tensor) -> float:
        return float(((x - self.heldout_target) ** 2).sum())


@pytest.mark.parametrize(
    "method, step_size",
    [("cmaes", 0.3), ("snes", 0.3), ("xnes", 0.3), ("cem", 0.3), ("gradient", 0.05)],
)
def test_every_method_improves_a_quadratic(method, step_size):
    target = torch.linspace(-0.5, 0.5, 6)
    objective = Quadratic(target)
    outcome = vs.search(
        objective, method, population=12, generations=40, step_size=step_size, patience=0
    )
    assert outcome.start_heldout == pytest.approx(float((target**2).sum()))
    assert outcome.best_heldout < 0.1 * outcome.start_heldout
    assert float(((outcome.best_x - target) ** 2).sum()) == pytest.approx(outcome.best_heldout)
    assert outcome.generations_done == 40 and len(outcome.curves) == 41
    assert outcome.curves["heldout_mel_ce"].min() == pytest.approx(outcome.best_heldout)
    # every generation is scored on its own minibatch (ES: the whole population at once)
    assert sorted(set(objective.train_calls)) == list(range(1, 41))


def test_search_keeps_the_held_out_best_and_stops_after_patience():
    """Training pulls towards 1, the held-out clips prefer 0.3: the sweet spot is on the way."""
    objective = Quadratic(torch.ones(4), heldout_target=torch.full((4,), 0.3))
    outcome = vs.search(objective, "gradient", generations=200, step_size=0.05, patience=3)
    assert outcome.generations_done < 200 and "not better for 3" in outcome.stop_reason
    assert outcome.generations_done == outcome.best_generation + 3
    assert outcome.best_x == pytest.approx(torch.full((4,), 0.3), abs=0.05)
    final = outcome.curves["heldout_mel_ce"].iloc[-1]
    assert final > outcome.best_heldout  # the last point is overcooked, the kept one is not


def test_unknown_method_and_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="pick one of cmaes, snes, xnes, cem, gradient"):
        vs.search(Quadratic(torch.ones(2)), "adam")
    with pytest.raises(ValueError, match="step_size"):
        vs.SearchParams(step_size=0).check()


def test_mix_space_starts_at_the_reference_and_spans_clips_and_bias():
    start = torch.randn(1, 32, 16)
    clips = torch.randn(5, 32, 16)
    space = vs.MixSpace(start, clips, bias_dims=3, seed=0)
    assert space.dim == 8
    x = torch.zeros(2, 8)
    assert torch.equal(space.latents(x)[0], start[0])
    x[1, 0] = 1.0  # all of clip 0's deviation from the clips' mean
    assert torch.allclose(space.latents(x)[1], start[0] + clips[0] - clips.mean(0), atol=1e-5)
    x = torch.zeros(1, 8)
    x[0, 5] = 0.1  # a bias coefficient of 0.1 moves the latent by 10 % of its norm
    moved = (space.latents(x) - start).norm() / start.norm()
    assert float(moved) == pytest.approx(0.1, rel=1e-4)


# --- on the tiny base ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> Path:
    return build_tiny_base()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment folder whose dataset is 12 train + 3 eval demo clips (data-prep format)."""
    exp = tmp_path_factory.mktemp("out") / "vs"
    folder = exp / "dataset"
    (folder / "wavs").mkdir(parents=True)
    rows = (DEMO_DATA_DIR / "interview" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    rows = [r.split("|") for r in rows[1 : 1 + N_TRAIN + N_EVAL]]
    for flac, _ in rows:
        audio, rate = sf.read(DEMO_DATA_DIR / "interview" / flac)
        sf.write(folder / "wavs" / flac.replace(".flac", ".wav"), audio, rate)
    lines = [f"wavs/{flac.replace('.flac', '.wav')}|{text}|demo" for flac, text in rows]
    header = "audio_file|text|speaker_name"
    (folder / "metadata_train.csv").write_text("\n".join([header, *lines[:N_TRAIN]]) + "\n")
    (folder / "metadata_eval.csv").write_text("\n".join([header, *lines[N_TRAIN:]]) + "\n")
    return exp


@pytest.fixture(scope="module")
def frozen(base, experiment):
    train, evals = coqui.clip_samples(base, experiment / "dataset", experiment / "_work")
    model = coqui.load_frozen_xtts(base, None, "cpu")
    clips = coqui.precompute_clips(model, base, train, "cpu")
    return model, clips, evals


def test_batched_mel_ce_is_coquis_loss_for_each_candidate(frozen):
    model, clips, _ = frozen
    objective = coqui.LatentObjective(model.gpt, max_rows=8)  # 3 candidates x 4 clips: 2 chunks
    batch = clips.select([0, 3, 5, 7])
    latents, _ = coqui.clip_latents(model, batch.paths[:3])
    batched = objective.mel_ce(latents, batch)
    one_by_one = [objective.coqui_mel_ce(latent[None], batch) for latent in latents]
    assert batched.tolist() == pytest.approx(one_by_one, abs=1e-4)
    assert all(0 < v < 10 for v in one_by_one)


def test_gradient_reaches_the_latent_and_not_the_frozen_gpt(frozen):
    model, clips, _ = frozen
    latent, _ = coqui.clip_latents(model, clips.paths[:1])
    latent.requires_grad_(True)
    coqui.LatentObjective(model.gpt).mel_ce(latent, clips.select([1, 2]))[0].backward()
    assert latent.grad is not None and float(latent.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.gpt.parameters())


def test_voice_file_is_xtts_speakers_format_and_drives_inference(base, frozen, tmp_path):
    model, _, evals = frozen
    latent, speaker = coqui.reference_voice(model, [evals[0]["audio_file"]])
    voice = coqui.save_voice(tmp_path / "speakers_xtts.pth", "anna", latent + 0.5, speaker)
    loaded_latent, loaded_speaker = coqui.load_voice(voice)
    assert torch.equal(loaded_latent, latent + 0.5) and torch.equal(loaded_speaker, speaker)
    # a model folder with this file as its speakers_xtts.pth knows the voice by name
    folder = tmp_path / "model"
    folder.mkdir()
    for name in BASE_FILES:
        if name != "speakers_xtts.pth":
            (folder / name).symlink_to(base / name)
    shutil.copy(voice, folder / "speakers_xtts.pth")
    inference = load_xtts(folder)
    assert set(inference.speaker_manager.speakers) == {"anna"}
    inference.gpt.max_gen_mel_tokens = 20  # the tiny base never stops by itself
    wav = coqui.speak(inference, "Jó estét!", "hu", voice)
    assert len(wav) > 0 and torch.isfinite(torch.as_tensor(wav)).all()
    with pytest.raises(KeyError, match="Voice 'bob' is not in"):
        coqui.load_voice(voice, "bob")


@pytest.mark.parametrize("method, step_size, population", [("cmaes", 0.3, 6), ("gradient", 0.5, 2)])
def test_search_on_the_tiny_base_beats_the_reference_voice(
    experiment, method, step_size, population
):
    params = vs.SearchParams(
        experiment=experiment.name,
        outputs_dir=str(experiment.parent),
        method=method,
        population=population,
        generations=6,
        step_size=step_size,
        minibatch=3,
        n_mix_clips=4,
        device="cpu",
    )
    result = vs.run_search(params)
    s = result.summary
    assert s["best_mel_ce"] < s["start_mel_ce"] - 1e-4
    assert s["start_mel_ce"] == pytest.approx(result.curves["heldout_mel_ce"].iloc[0])
    assert s["best_mel_ce"] == pytest.approx(result.curves["heldout_mel_ce"].min())
    assert s["method"] == method and s["init_from"] == "base" and s["generations"] == 6
    assert s["n_eval_clips"] == N_EVAL and s["n_train_clips"] == N_TRAIN
    assert s["minutes"] > s["search_minutes"] > 0
    latent, speaker = coqui.load_voice(s["voice_file"], params.voice_name)
    assert latent.shape == (1, 32, 128) and speaker.shape == (1, 512, 1)
    folder = experiment / "voice_search"
    assert json.loads((folder / "search.json").read_text())["state"] == "finished"
    # the same parameters again: the finished search, not a new one
    again = vs.run_search(params)
    assert again.summary == {**s, "params": json.loads(json.dumps(params.to_dict()))}


def test_a_new_search_moves_the_earlier_one_to_history(experiment):
    folder = experiment / "voice_search"
    assert (folder / "search.json").is_file()  # from the tests above
    earlier = json.loads((folder / "search.json").read_text())
    params = vs.SearchParams(
        experiment=experiment.name,
        outputs_dir=str(experiment.parent),
        method="snes",
        generations=1,
        minibatch=2,
        n_mix_clips=2,
        device="cpu",
    )
    vs.run_search(params)
    histories = sorted((folder / "history").iterdir())
    kept = json.loads((histories[-1] / "search.json").read_text())
    assert kept == earlier and (histories[-1] / "speakers_xtts.pth").is_file()


def test_init_from_names_what_is_missing(experiment):
    with pytest.raises(FileNotFoundError, match="init_from='phase2': no best checkpoint"):
        vs.resolve_checkpoint(experiment, "phase2")
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        vs.resolve_checkpoint(experiment, "/nowhere/model.pth")
    assert vs.resolve_checkpoint(experiment, "base") is None


def test_export_carries_the_reference_voice_and_leaves_the_base_alone(base, frozen, tmp_path):
    from voicebook.training.bundle import EXPORT_VOICE, export_folder

    model, _, evals = frozen
    clip = evals[0]["audio_file"]
    before = (base / "speakers_xtts.pth").read_bytes()
    folder = export_folder(base / "model.pth", base, tmp_path / "export", clip)
    speakers = torch.load(folder / "speakers_xtts.pth", weights_only=True)
    base_speakers = torch.load(base / "speakers_xtts.pth", weights_only=True)
    assert set(speakers) == {*base_speakers, EXPORT_VOICE}
    latent, speaker = coqui.reference_voice(model, [clip])
    assert torch.allclose(speakers[EXPORT_VOICE]["gpt_cond_latent"], latent, atol=1e-5)
    assert torch.allclose(speakers[EXPORT_VOICE]["speaker_embedding"], speaker, atol=1e-5)
    assert (base / "speakers_xtts.pth").read_bytes() == before
    assert EXPORT_VOICE in load_xtts(folder).speaker_manager.speakers
    assert json.loads((folder / "export.json").read_text())["voice"] == EXPORT_VOICE


def test_search_from_a_phase_adds_its_voice_to_that_phase_export(base, experiment, frozen):
    from voicebook.training.bundle import EXPORT_VOICE, export_folder

    _, _, evals = frozen
    phase = experiment / "phase1"
    phase.mkdir()
    (phase / "status.json").write_text(json.dumps({"best_checkpoint": str(base / "model.pth")}))
    export_folder(base / "model.pth", base, phase / "export", evals[0]["audio_file"])
    params = vs.SearchParams(
        experiment=experiment.name,
        outputs_dir=str(experiment.parent),
        init_from="phase1",
        method="xnes",
        generations=2,
        minibatch=2,
        n_mix_clips=2,
        device="cpu",
    )
    s = vs.run_search(params).summary
    assert s["checkpoint"] == str(base / "model.pth")
    assert s["export_voice_file"] == str(phase / "export" / "speakers_xtts.pth")
    in_export = coqui.load_voice(s["export_voice_file"], params.voice_name)
    searched = coqui.load_voice(s["voice_file"], params.voice_name)
    assert all(torch.equal(a, b) for a, b in zip(in_export, searched, strict=True))
    coqui.load_voice(s["export_voice_file"], EXPORT_VOICE)  # the export's own voice stays


def test_evaluation_scores_the_searched_voice_as_a_candidate(base, experiment, tmp_path):
    from voicebook.evaluation import scoring as ev

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "dataset").symlink_to(experiment / "dataset")
    params = vs.SearchParams(
        experiment="exp",
        outputs_dir=str(tmp_path),
        method="gradient",
        generations=3,
        step_size=0.5,
        minibatch=2,
        device="cpu",
    )
    searched = vs.run_search(params).summary
    found, notes = ev.resolve_candidates([], exp)
    assert [c.name for c in found] == ["base", "base-voice"] and len(notes) == 2  # no phases
    assert found[1].checkpoint is None and found[1].voice == Path(searched["voice_file"])
    config = ev.EvalConfig(test_sentences=["Jó napot!"], max_eval_batches=1)
    table = ev.evaluate(config, exp, base).table.set_index("candidate")
    # the reference clips' voice and the searched one, measured as the search measured them
    assert table.loc["base", "voice_mel_ce"] == pytest.approx(searched["start_mel_ce"], abs=1e-5)
    assert table.loc["base-voice", "voice_mel_ce"] == pytest.approx(
        searched["best_mel_ce"], abs=1e-5
    )
    # the same GPT: the trainer-style losses agree; the voice changes what is spoken
    assert table.loc["base", "mel_ce"] == table.loc["base-voice", "mel_ce"]
    assert (exp / "eval" / "base-voice" / "s01.wav").is_file()
    assert table.loc["base-voice", "label"] == "base + searched voice (gradient)"


def test_versus_finetuning_counts_what_each_candidate_cost(tmp_path):
    import pandas as pd

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem, seconds in (("01_phase1", 240.0), ("02_phase2", 120.0), ("02b_voice_search", 30.0)):
        nb = {"cells": [], "metadata": {"papermill": {"duration": seconds}}}
        (notebooks / f"{stem}.ipynb").write_text(json.dumps(nb))
    minutes = vs.stage_minutes(tmp_path)
    assert minutes == {"01_phase1": 4.0, "02_phase2": 2.0, "02b_voice_search": 0.5}
    table = pd.DataFrame(
        {
            "candidate": ["base", "phase1", "phase2", "base-voice", "phase2-voice"],
            "label": ["b", "p1", "p2", "bv", "p2v"],
            "mel_ce": [7.0, 5.3, 5.1, 7.0, 5.1],
            "voice_mel_ce": [7.08, 5.33, 5.15, 7.07, 5.14],
            "speaker_similarity": [0.38, 0.44, 0.45, 0.39, 0.46],
        }
    )
    versus = vs.versus_finetuning(table, {"minutes": 0.25}, minutes).set_index("candidate")
    assert versus["minutes"].tolist() == [0.0, 4.0, 6.0, 0.25, 6.25]
    assert versus.loc["phase2-voice", "how"] == "fine-tuning + voice search"
    assert versus.loc["base-voice", "how"] == "voice search"
    assert versus.loc["base", "how"] == "neither (base)"
    assert versus.loc["base-voice", "voice_mel_ce"] == 7.07
    assert vs.versus_finetuning(None, None, {}).empty
