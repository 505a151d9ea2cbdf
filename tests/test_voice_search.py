"""Voice search: every method improves a known objective, the held-out check stops at the sweet
spot, the Mel CE of candidate latents is coqui's own loss, the speaker embedding's objective is
resemblyzer's own embedding, and on the tiny base (through coqui's code) both halves of the
voice are searched, selected on validation, started from the evaluation's reference clips,
kept side by side as named voices, evaluated on test, kept in the phase exports, and a
corrupted voice is recovered by CMA-ES and the gradient method."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
import soundfile as sf
import torch
from test_evaluation import DEMO_TOKEN_CAP

from voicebook.coqui import latents as coqui
from voicebook.coqui.base import BASE_FILES
from voicebook.coqui.models import load_xtts
from voicebook.coqui.tiny import build_tiny_base
from voicebook.core.paths import DEMO_DATA_DIR
from voicebook.voice_search import search as vs

N_TRAIN, N_EVAL, N_TEST = 12, 3, 3


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
    assert outcome.curves["heldout_loss"].min() == pytest.approx(outcome.best_heldout)
    # every generation is scored on its own minibatch (ES: the whole population at once)
    assert sorted(set(objective.train_calls)) == list(range(1, 41))


def test_search_keeps_the_held_out_best_and_stops_after_patience():
    """Training pulls towards 1, the held-out clips prefer 0.3: the sweet spot is on the way."""
    objective = Quadratic(torch.ones(4), heldout_target=torch.full((4,), 0.3))
    outcome = vs.search(objective, "gradient", generations=200, step_size=0.05, patience=3)
    assert outcome.generations_done < 200 and "not better for 3" in outcome.stop_reason
    assert outcome.generations_done == outcome.best_generation + 3
    assert outcome.best_x == pytest.approx(torch.full((4,), 0.3), abs=0.05)
    final = outcome.curves["heldout_loss"].iloc[-1]
    assert final > outcome.best_heldout  # the last point is overcooked, the kept one is not


def test_unknown_method_and_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="pick one of cmaes, snes, xnes, cem, gradient"):
        vs.search(Quadratic(torch.ones(2)), "adam")
    with pytest.raises(ValueError, match="step_size"):
        vs.SearchConfig(step_size=0)
    with pytest.raises(ValueError, match="pick one of"):
        vs.SearchConfig(method="adam")


def test_mix_space_starts_at_the_reference_and_spans_clips_pull_and_bias():
    start = torch.randn(1, 32, 16)
    clips = torch.randn(5, 32, 16)
    space = vs.MixSpace(start, clips, bias_dims=3, seed=0)
    assert space.dim == 5 + 1 + 3
    x = torch.zeros(2, 9)
    assert torch.equal(space.latents(x)[0], start[0])
    x[1, 0] = 1.0  # all of clip 0's deviation from the clips' mean
    assert torch.allclose(space.latents(x)[1], start[0] + clips[0] - clips.mean(0), atol=1e-5)
    x = torch.zeros(1, 9)
    x[0, 5] = 1.0  # the pull: all the way to the clips' mean voice
    assert torch.allclose(space.latents(x)[0], clips.mean(0), atol=1e-5)
    x = torch.zeros(1, 9)
    x[0, 6] = 0.1  # a bias coefficient of 0.1 moves the latent by 10 % of its norm
    moved = (space.latents(x) - start).norm() / start.norm()
    assert float(moved) == pytest.approx(0.1, rel=1e-4)


def test_torch_speaker_encoder_is_resemblyzers_embedding():
    """The differentiable embedding the speaker half uses is resemblyzer's, number for number
    (on a loudness-normalised wave: the one step it leaves out is voice-activity trimming)."""
    from resemblyzer import audio, hparams

    from voicebook.speaker import SpeakerSimilarity
    from voicebook.voice_search.speaker import TorchSpeakerEncoder

    scorer = SpeakerSimilarity.without_reference()
    wave = SpeakerSimilarity.load(DEMO_DATA_DIR / "interview" / "interview_003.flac")[:40_000]
    quiet = 0.1 * wave  # the encoder raises it to resemblyzer's loudness, as resemblyzer does
    expected = scorer.embed_waves(
        [audio.normalize_volume(quiet, hparams.audio_norm_target_dBFS, increase_only=True)]
    )[0]
    wave_t = torch.from_numpy(quiet).float()[None].requires_grad_(True)
    got = TorchSpeakerEncoder(scorer).embed(wave_t)
    assert got[0].detach().numpy() == pytest.approx(expected, abs=1e-4)
    got[0, 0].backward()  # differentiable down to the waveform
    assert float(wave_t.grad.abs().sum()) > 0


# --- on the tiny base ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> Path:
    return build_tiny_base()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment folder whose dataset is 12 train + 3 validation + 3 test demo clips
    (data-prep format)."""
    exp = tmp_path_factory.mktemp("out") / "vs"
    folder = exp / "dataset"
    (folder / "wavs").mkdir(parents=True)
    rows = (DEMO_DATA_DIR / "interview" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    rows = [r.split("|") for r in rows[1 : 1 + N_TRAIN + N_EVAL + N_TEST]]
    for flac, _ in rows:
        audio, rate = sf.read(DEMO_DATA_DIR / "interview" / flac)
        sf.write(folder / "wavs" / flac.replace(".flac", ".wav"), audio, rate)
    lines = [f"wavs/{flac.replace('.flac', '.wav')}|{text}|demo" for flac, text in rows]
    header = "audio_file|text|speaker_name"
    splits = {"train": lines[:N_TRAIN], "eval": lines[N_TRAIN : N_TRAIN + N_EVAL],
              "test": lines[N_TRAIN + N_EVAL :]}  # fmt: skip
    for split, chosen in splits.items():
        (folder / f"metadata_{split}.csv").write_text("\n".join([header, *chosen]) + "\n")
    return exp


@pytest.fixture(scope="module")
def phase1(experiment):
    """Phase 1 really trained (8 steps at a high lr: ~30 s), so that its GPT listens to the
    voice latent: the tiny base's random GPT hardly does (noise of 5x the latent's RMS moves
    its Mel CE by 2e-4)."""
    from voicebook import training

    p = training.params_for(
        "phase1", experiment=experiment.name, outputs_dir=str(experiment.parent),
        batch_size=2, epochs=50, eval_every=8, save_every=100, keep_checkpoints=1, lr=5e-4,
        max_steps=8, device="cpu",
    )  # fmt: skip
    return training.run_phase(p)


def params(experiment: Path, **over) -> vs.SearchConfig:
    """Cheap search settings on the module's experiment."""
    cheap = {"generations": 2, "speaker_generations": 2, "minibatch": 2, "speaker_minibatch": 1,
             "speaker_window_s": 0.8, "n_mix_clips": 3, "population": 4, "device": "cpu"}  # fmt: skip
    return vs.SearchConfig(
        experiment=experiment.name, outputs_dir=str(experiment.parent), **{**cheap, **over}
    )


@pytest.fixture(scope="module")
def frozen(base, experiment):
    train, evals = coqui.clip_samples(base, experiment / "dataset", experiment / "_work", "hu")
    model = coqui.load_frozen_xtts(base, None, "cpu")
    clips = coqui.precompute_clips(model, base, train, "cpu")
    return model, clips, evals


def test_the_held_out_clips_are_read_without_the_train_split(base, experiment, frozen):
    """``train=False`` (what the evaluation's voice Mel CE asks, per candidate): the same eval
    samples, and no train clip read."""
    _, _, evals = frozen
    train, alone = coqui.clip_samples(
        base, experiment / "dataset", experiment / "_work", "hu", train=False
    )
    assert train == [] and [s["audio_file"] for s in alone] == [s["audio_file"] for s in evals]


def test_batched_mel_ce_is_coquis_loss_for_each_candidate(frozen):
    model, clips, _ = frozen
    objective = coqui.LatentObjective(model.gpt, max_rows=8)  # 3 candidates x 4 clips: 2 chunks
    batch = clips.select([0, 3, 5, 7])
    latents, _ = coqui.clip_latents(model, batch.paths[:3])
    batched = objective.mel_ce(latents, batch)
    one_by_one = [objective.coqui_mel_ce(latent[None], batch) for latent in latents]
    assert batched.tolist() == pytest.approx(one_by_one, abs=1e-4)
    assert all(0 < v < 10 for v in one_by_one)


@pytest.mark.slow  # teacher-forced GPT latents and resemblyzer on real clips
def test_the_searches_of_a_stage_make_each_splits_mean_voice_once(frozen):
    from voicebook.speaker import SpeakerSimilarity
    from voicebook.voice_search.speaker import speaker_data

    model, clips, _ = frozen
    split = {"train": clips.select([0, 1]), "eval": clips.select([2, 3])}
    scorer, embedded = SpeakerSimilarity.without_reference(), []
    embed = scorer.embed
    scorer.embed = lambda paths: embedded.append(list(paths)) or embed(paths)
    latent = coqui.clip_latents(model, split["train"].paths[:1])[0]
    alone = speaker_data(model, coqui, latent, split, 0.5, scorer)
    shared: dict = {}
    first = speaker_data(model, coqui, latent, split, 0.5, scorer, shared)
    again = speaker_data(model, coqui, latent * 1.1, split, 0.5, scorer, shared)
    assert len(embedded) == 4  # two alone, two for the first shared search, none after
    for key in ("train_voice", "eval_voice"):
        assert torch.equal(first[key], alone[key]) and again[key] is first[key]
    assert not torch.equal(again["train_windows"], first["train_windows"])  # made anew


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


@pytest.mark.slow  # whole searches on the tiny base
@pytest.mark.parametrize("method, step_size, population", [("cmaes", 0.3, 6), ("gradient", 0.5, 2)])
def test_latent_half_on_the_tiny_base_beats_the_reference_voice(
    base, experiment, method, step_size, population
):
    """The speaker half off: the voice's embedding stays the reference clips' exactly."""
    p = params(experiment, method=method, population=population, generations=6, minibatch=3,
               n_mix_clips=4, step_size=step_size, search_speaker=False)  # fmt: skip
    result = vs.run_search(p)
    s = result.summary
    assert s["voice_name"] == f"base-{method}" and s["split"] == "validation"
    assert s["best_mel_ce"] < s["start_mel_ce"] - 1e-4
    assert s["start_mel_ce"] == pytest.approx(result.curves["heldout_loss"].iloc[0])
    assert s["best_mel_ce"] == pytest.approx(result.curves["heldout_loss"].min())
    assert set(result.curves["half"]) == {"latent"} and math.isnan(s["best_speaker_similarity"])
    assert s["init_from"] == "base" and s["generations"] == 6
    assert s["n_eval_clips"] == N_EVAL and s["n_train_clips"] == N_TRAIN
    assert s["minutes"] > s["search_minutes"] > 0
    latent, speaker = coqui.load_voice(s["voice_file"], p.name)
    assert latent.shape == (1, 32, 128) and speaker.shape == (1, 512, 1)
    reference = coqui.load_voice(Path(s["voice_file"]).with_name("reference_voice.pth"))
    assert torch.equal(speaker, reference[1]) and not torch.equal(latent, reference[0])
    # the start is the evaluation's voice: its reference clips, train clips, never test ones
    from voicebook.dataprep import splits
    from voicebook.voices.references import choose_reference_clips

    view = splits.test_view(experiment / "dataset", experiment / "_view")
    chosen = choose_reference_clips("first", view, p.n_reference_clips)
    assert [Path(c).name for c in s["reference_clips"]] == [c.name for c in chosen]
    train_clips = (experiment / "dataset" / "metadata_train.csv").read_text()
    test_clips = (experiment / "dataset" / "metadata_test.csv").read_text()
    assert all(Path(c).name in train_clips for c in s["reference_clips"])
    assert not any(Path(c).name in test_clips for c in s["reference_clips"])
    assert (
        json.loads((experiment / "voice_search" / "search.json").read_text())["voice_name"]
        == p.name
    )
    # the same parameters again: the finished search, not a new one
    again = vs.run_search(p)
    same = [json.dumps({k: v for k, v in r.items() if k != "params"}, sort_keys=True)
            for r in (again.summary, s)]  # fmt: skip
    assert same[0] == same[1]  # (NaN, the speaker half's figures, is not == itself)


@pytest.mark.slow  # a whole search, decoding audio
def test_speaker_half_raises_similarity_and_keeps_the_reference_latent(experiment):
    """The latent half off; the embedding by gradient through the decoder and resemblyzer."""
    p = params(experiment, method="gradient", step_size=0.5, search_latent=False,
               speaker_generations=3, voice_name="speaker only")  # fmt: skip
    result = vs.run_search(p)
    s = result.summary
    assert set(result.curves["half"]) == {"speaker"} and math.isnan(s["best_mel_ce"])
    assert s["best_speaker_similarity"] > s["start_speaker_similarity"] + 0.005
    assert s["best_speaker_similarity"] == pytest.approx(1 - result.curves["heldout_loss"].min())
    assert s["speaker_generations"] == 3 and s["speaker_seconds_per_generation"] > 0
    latent, speaker = coqui.load_voice(s["voice_file"], "speaker only")
    reference = coqui.load_voice(Path(s["voice_file"]).with_name("reference_voice.pth"))
    assert torch.equal(latent, reference[0]) and not torch.equal(speaker, reference[1])


@pytest.mark.slow  # rests on the searches above
def test_voices_are_kept_side_by_side_and_a_renewed_one_moves_to_its_history(experiment):
    voices_dir = experiment / "voice_search" / "voices"
    before = {p.name for p in voices_dir.iterdir()}
    assert {"base-cmaes", "base-gradient", "speaker_only"} <= before  # from the tests above
    earlier = json.loads((voices_dir / "base-cmaes" / "search.json").read_text())
    vs.run_search(params(experiment, method="cmaes", generations=1, search_speaker=False))
    assert {p.name for p in voices_dir.iterdir()} == before  # the others untouched
    histories = sorted((voices_dir / "base-cmaes" / "history").iterdir())
    kept = json.loads((histories[-1] / "search.json").read_text())
    assert kept == earlier and (histories[-1] / "speakers_xtts.pth").is_file()
    from voicebook.voices.store import current_voices

    assert {v["voice_name"] for v in current_voices(experiment)} == {
        "base-cmaes", "base-gradient", "speaker only"
    }  # fmt: skip


def test_init_from_names_what_is_missing(experiment):
    with pytest.raises(FileNotFoundError, match="init_from='phase2': no best checkpoint"):
        vs.resolve_checkpoint(experiment, "phase2")
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        vs.resolve_checkpoint(experiment, "/nowhere/model.pth")
    assert vs.resolve_checkpoint(experiment, "base") is None
    assert vs.SearchConfig(init_from="/x/phase1/export", method="cem").name == "phase1-export-cem"


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


@pytest.mark.slow  # trains phase 1 (the fixture)
def test_phase_export_keeps_every_voice_searched_on_its_checkpoint(base, experiment, phase1):
    from voicebook import training
    from voicebook.training.bundle import EXPORT_VOICE, export_folder

    export = training.export_phase(phase1, "best")
    speakers = export / "speakers_xtts.pth"
    xnes = params(experiment, init_from="phase1", method="xnes", search_speaker=False)
    s = vs.run_search(xnes).summary
    vs.run_search(params(experiment, init_from="phase1", method="gradient", search_speaker=False))
    assert s["checkpoint"] == phase1.best_checkpoint and s["export_voice_file"] == str(speakers)
    # a phase-notebook re-run re-exports: the voices built on its checkpoint stay, by name
    training.export_phase(phase1, "best")
    held = set(torch.load(speakers, weights_only=True))
    assert {EXPORT_VOICE, "phase1-xnes", "phase1-gradient"} <= held and "base-cmaes" not in held
    assert json.loads((export / "export.json").read_text())["searched_voices"] == [
        "phase1-gradient", "phase1-xnes"
    ]  # fmt: skip
    searched = coqui.load_voice(s["voice_file"], "phase1-xnes")
    in_export = coqui.load_voice(speakers, "phase1-xnes")
    assert all(torch.equal(a, b) for a, b in zip(in_export, searched, strict=True))
    # an export made without it, then the same search again: the cached search lands there too
    export_folder(phase1.best_checkpoint, base, export)
    assert "phase1-xnes" not in torch.load(speakers, weights_only=True)
    assert vs.run_search(xnes).summary["export_voice_file"] == str(speakers)
    assert "phase1-xnes" in torch.load(speakers, weights_only=True)
    # inference picks a voice by name
    model = load_xtts(export)
    assert "phase1-xnes" in model.speaker_manager.speakers
    model.gpt.max_gen_mel_tokens = 20  # the tiny model never stops by itself
    wav = coqui.speak(model, "Jó estét!", "hu", speakers, "phase1-xnes")
    assert len(wav) > 0 and torch.isfinite(torch.as_tensor(wav)).all()


@pytest.mark.parametrize(
    "method, population, generations", [("cmaes", 12, 20), ("gradient", 2, 10)]
)
@pytest.mark.slow  # trains phase 1 (the fixture)
def test_search_recovers_most_of_a_corrupted_voice(experiment, phase1, method, population, generations):  # fmt: skip
    """The reference latent plus noise (2x its RMS per element) raises phase 1's validation Mel
    CE by a known gap; started there, the latent half closes at least 70 % of it."""
    from voicebook.voice_search.recovery import recover

    p = params(experiment, init_from="phase1", method=method, population=population,
               generations=generations, minibatch=3, n_mix_clips=8, patience=0,
               search_speaker=False)  # fmt: skip
    setup = vs.prepare(p, experiment, experiment / "_recovery")
    r = recover(p, setup, noise_scale=2.0)
    assert r.corrupted_mel_ce - r.reference_mel_ce > 0.01  # a real gap, not rounding
    assert r.closed >= 0.7, r


@pytest.mark.slow  # the whole evaluation
def test_evaluation_takes_every_voice_on_its_checkpoint_and_scores_the_test_split(
    base, experiment, phase1
):
    from voicebook.decision import report
    from voicebook.evaluation import scoring as ev

    found, notes = ev.resolve_candidates([], experiment)
    by_name = {c.name: c for c in found}
    assert set(by_name) == {"base", "phase1", "base-cmaes", "base-gradient", "speaker_only",
                            "phase1-xnes", "phase1-gradient"}  # fmt: skip
    assert (
        by_name["base-cmaes"].checkpoint is None
        and by_name["base-cmaes"].voice_name == "base-cmaes"
    )
    assert str(by_name["phase1-xnes"].checkpoint) == phase1.best_checkpoint
    assert by_name["phase1-xnes"].label == "phase 1 + voice phase1-xnes (xnes: latent)"
    assert [n.split()[0] for n in notes] == ["phase2"]
    chosen = ["base", "phase1", "base-cmaes", "base-gradient", "phase1-xnes"]
    config = ev.EvalConfig(candidates=chosen, test_sentences=["Jó napot!"], max_eval_batches=1,
                           asr_model="", hidden_reference_sentences=0, takes=1,
                           stress_set=False, mos=False, audio_tokens_per_char=DEMO_TOKEN_CAP)  # fmt: skip
    evaluation = ev.evaluate(config, experiment, base)
    table = evaluation.table.set_index("candidate")
    assert set(table["split"]) == {"test"}
    # a voice changes what is spoken and its voice_mel_ce, never the checkpoint's trainer losses
    assert table.loc["base", "mel_ce"] == table.loc["base-cmaes", "mel_ce"]
    # ... exactly when its latent is not the reference's: the cheap searches above (base-cmaes
    # renewed with one generation, phase1-xnes with two) may find nothing better than their start
    # and keep it; base-gradient's six generations move it
    voices = (("base-cmaes", "base"), ("base-gradient", "base"), ("phase1-xnes", "phase1"))
    for voice, checkpoint in voices:
        moved = _latent_moved(experiment, voice)
        changed = table.loc[voice, "voice_mel_ce"] != table.loc[checkpoint, "voice_mel_ce"]
        assert changed == moved, (voice, moved)
    assert _latent_moved(experiment, "base-gradient")
    assert (experiment / "eval" / "phase1-xnes" / "s01.wav").is_file()
    versus = vs.versus_finetuning(table.reset_index(), vs.current_voices(experiment), {})
    versus = versus.set_index("candidate")
    assert versus.loc["phase1-xnes", "how"] == "fine-tuning + voice search"
    assert versus.loc["base-cmaes", "voice"] == "base-cmaes" and set(versus["split"]) == {"test"}
    # the report's table: every voice beside the fine-tuned candidates, numbers from the test
    evaluated = {report.dm.EVALUATION: evaluation.scraps()}
    result = report.analyse_scraps(experiment.name, evaluated, path=experiment)
    html = "".join(report._versus_html(result))
    assert html.count("<tr") == 1 + len(chosen) and "phase1-xnes" in html and "test" in html


def _latent_moved(experiment: Path, voice: str) -> bool:
    """Whether the current voice ``voice``'s latent differs from its reference voice's."""
    search = json.loads(
        (experiment / "voice_search" / "voices" / voice / "search.json").read_text()
    )
    latent, _ = coqui.load_voice(search["voice_file"], voice)
    reference, _ = coqui.load_voice(Path(search["voice_file"]).with_name("reference_voice.pth"))
    return not torch.equal(latent, reference)


class _RecordedView:
    """A stand-in for ``SearchView`` that keeps what each search showed."""

    made: ClassVar[list[_RecordedView]] = []

    def __init__(self, params: vs.SearchConfig):
        self.init_from, self.rows, self.closed = params.init_from, [], None
        _RecordedView.made.append(self)

    def on_generation(self, row: dict) -> None:
        self.rows.append(row)

    def close(self, curves) -> None:
        self.closed = curves


@pytest.mark.slow  # trains phase 1 (the fixture)
def test_a_list_of_models_is_one_search_each_in_one_stage_run(experiment, phase1):
    """``init_from: [base, phase1]`` (the demo searches the base and phase 2 before its one
    evaluation): one search per model, in order, each its own voice with its own view; the
    stage's latest files are the last one's."""
    p = params(experiment, init_from=["base", "phase1"], method="snes", generations=1,
               search_speaker=False)  # fmt: skip
    assert [one.name for one in p.searches()] == ["base-snes", "phase1-snes"]
    assert p.name == "base-snes, phase1-snes"
    with pytest.raises(ValueError, match="use run_searches"):
        vs.run_search(p)
    results = vs.run_searches(p, view=_RecordedView)
    summaries = [r.summary for r in results]
    assert [s["voice_name"] for s in summaries] == ["base-snes", "phase1-snes"]
    assert [s["init_from"] for s in summaries] == ["base", "phase1"]
    assert summaries[0]["checkpoint"].endswith("model.pth")
    assert summaries[1]["checkpoint"] == phase1.best_checkpoint
    views = _RecordedView.made
    assert [v.init_from for v in views] == ["base", "phase1"]
    assert all([r["generation"] for r in v.rows] == [0, 1] for v in views)
    assert all(v.closed is r.curves for v, r in zip(views, results, strict=True))
    latest = json.loads((experiment / "voice_search" / "search.json").read_text())
    assert latest["voice_name"] == "phase1-snes"
    assert {"base-snes", "phase1-snes"} <= {v["voice_name"] for v in vs.current_voices(experiment)}
    table = vs.summary_table(results)
    assert list(table.columns) == ["base-snes", "phase1-snes"]
    assert table.loc["init_from"].tolist() == ["base", "phase1"]
    with pytest.raises(ValueError, match="one name cannot hold several voices"):
        vs.SearchConfig(init_from=["base", "phase2"], voice_name="anna")
    with pytest.raises(ValueError, match=r"init_from=\[\]"):
        vs.SearchConfig(init_from=[])
    assert vs.SearchConfig(init_from=["phase2"], voice_name="anna").searches()[0].name == "anna"


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
            "candidate": ["base", "phase1", "phase2", "base-cmaes", "phase2_gradient"],
            "label": ["b", "p1", "p2", "bv", "p2v"],
            "mel_ce": [7.0, 5.3, 5.1, 7.0, 5.1],
            "voice_mel_ce": [7.08, 5.33, 5.15, 7.07, 5.14],
            "speaker_similarity": [0.38, 0.44, 0.45, 0.39, 0.46],
        }
    )
    searched = [
        {"voice_name": "base-cmaes", "init_from": "base", "minutes": 0.25},
        {"voice_name": "phase2 gradient", "init_from": "phase2", "minutes": 0.5},
    ]
    versus = vs.versus_finetuning(table, searched, minutes).set_index("candidate")
    assert versus["minutes"].tolist() == [0.0, 4.0, 6.0, 0.25, 6.5]
    assert versus.loc["phase2_gradient", "how"] == "fine-tuning + voice search"
    assert versus.loc["phase2_gradient", "voice"] == "phase2 gradient"
    assert versus.loc["base-cmaes", "how"] == "voice search"
    assert versus.loc["base", "how"] == "neither (base)" and versus.loc["base", "voice"] == ""
    assert versus.loc["base-cmaes", "voice_mel_ce"] == 7.07
    assert vs.versus_finetuning(None, None, {}).empty
    # phase 1 ran again since the evaluation: its row says so, its minutes are not the new run's
    why = "phase 1 re-ran at 10:42; the evaluation scored the run of 09:11"
    stale = vs.versus_finetuning(table, searched, minutes, {"phase1": why, "phase2": why})
    stale = stale.set_index("candidate")
    assert stale.loc["phase1", "stale"] == why and stale["minutes"].isna().tolist() == [
        False, True, True, False, False
    ]  # fmt: skip
    assert stale.loc["base", "stale"] == "" and len(stale) == len(table)


def _fake_voice(experiment: Path, name: str, init_from: str = "base") -> Path:
    folder = experiment / "voice_search" / "voices" / name
    folder.mkdir(parents=True)
    voice = folder / "speakers_xtts.pth"
    voice.write_bytes(name.encode())
    summary = {"voice_name": name, "init_from": init_from, "checkpoint": None,
               "voice_file": str(voice), "state": "finished"}  # fmt: skip
    (folder / "search.json").write_text(json.dumps(summary))
    return voice


@pytest.mark.parametrize("carried", [True, False])
def test_a_later_search_keeps_the_earlier_voices_current_for_lineage(tmp_path, carried):
    """Two voices searched one after the other (the demo: on the base, then on phase 2) are
    both current: the evaluation that scores both is not stale because the second search ran.
    Without carrying the first voice forward, lineage would call it stale (the control)."""
    from voicebook.core import lineage, runs, scraps

    experiment = tmp_path / "exp"
    where = {"experiment": "exp", "outputs_dir": str(tmp_path)}
    first = _fake_voice(experiment, "base-cmaes")
    runs.start_run("02b_voice_search", where)
    runs.wrote("02b_voice_search", "voice", first)
    scraps.publish(experiment, "02b_voice_search", {"voice_search": {}})
    second = _fake_voice(experiment, "phase2-cmaes", "phase2")
    runs.start_run("02b_voice_search", where)
    if carried:  # what the search notes when it publishes its voice
        vs._note_voices(experiment, json.loads((second.parent / "search.json").read_text()))
    else:
        runs.wrote("02b_voice_search", "voice", second)
    scraps.publish(experiment, "02b_voice_search", {"voice_search": {}})
    runs.start_run("03_evaluation", where)
    for voice in (first, second):
        runs.read_input("03_evaluation", f"voice {voice.parent.name}", voice, "02b_voice_search")
    scraps.publish(experiment, "03_evaluation", {"eval_notes": []})
    for stage in ("02b_voice_search", "03_evaluation"):
        runs.forget(stage)
    stale = lineage.assess(experiment).stale
    if carried:
        assert stale == {}
    else:
        assert (
            "base-cmaes" in stale["03_evaluation"][0]
            and "not from the latest run" in (stale["03_evaluation"][0])
        )
