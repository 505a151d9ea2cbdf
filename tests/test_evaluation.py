"""Evaluation stage: candidates, comparable eval losses, capped synthesis, speaker similarity,
CER, DVAE codebook statistics, and the whole stage with and without a dataset."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from voicebook.coqui.base import resolve_base
from voicebook.core.paths import DEMO_DATA_DIR, REPO_ROOT
from voicebook.evaluation import codebook as cb
from voicebook.evaluation import depth as ed
from voicebook.evaluation import measures as em
from voicebook.evaluation import scoring as ev
from voicebook.evaluation import takes as eval_takes
from voicebook.evaluation.listening import session as ls
from voicebook.measures import takes
from voicebook.measures.text import character_error_rate
from voicebook.runner import load_params_file
from voicebook.voices import references as vr


@pytest.fixture(scope="module")
def base():
    return resolve_base("tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """6 train + 3 eval clips of the demo interview in the data-prep stage's layout."""
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "wavs").mkdir()
    meta = pd.read_csv(DEMO_DATA_DIR / "interview" / "metadata.csv", sep="|").head(9)
    lines = []
    for i, row in enumerate(meta.itertuples()):
        source = "quiz" if i % 2 else "interview"  # two sources, as data prep names them
        name = f"wavs/{source}_{i:03d}.wav"
        wav, _ = librosa.load(DEMO_DATA_DIR / "interview" / row.audio_file, sr=22050)
        sf.write(folder / name, wav, 22050)
        lines.append(f"{name}|{row.text}|demo")
    header = "audio_file|text|speaker_name"
    (folder / "metadata_train.csv").write_text("\n".join([header, *lines[:6]]) + "\n")
    (folder / "metadata_eval.csv").write_text("\n".join([header, *lines[6:]]) + "\n")
    card = {"sources": [{"name": "interview"}, {"name": "quiz"}]}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def tuned(base, tmp_path_factory):
    """A trainer-style checkpoint ('xtts.'-prefixed keys) whose GPT differs from the base."""
    state = torch.load(base / "model.pth", weights_only=False)["model"]
    torch.manual_seed(0)
    for key, value in state.items():
        if key.startswith("gpt.") and value.is_floating_point():
            state[key] = value + 0.02 * torch.randn_like(value)
    path = tmp_path_factory.mktemp("run") / "best_model_12.pth"
    torch.save({"model": {f"xtts.{k}": v for k, v in state.items()}}, path)
    return path


# The demo's token cap (params/demo.yaml), for tests whose subject is not the cap: the tiny base
# never stops, so its takes run to the cap as they do at the default, only sooner.
DEMO_TOKEN_CAP = float(
    load_params_file(REPO_ROOT / "params" / "demo.yaml")["evaluation"]["audio_tokens_per_char"]
)


def experiment_with(tmp_path, dataset=None, phase1=None):
    exp = tmp_path / "exp"
    exp.mkdir()
    if dataset:
        (exp / "dataset").symlink_to(dataset)
    if phase1:
        (exp / "phase1").mkdir()
        (exp / "phase1" / "status.json").write_text(json.dumps({"best_checkpoint": str(phase1)}))
    return exp


# --- candidates ----------------------------------------------------------------------------


def test_default_candidates_skip_phases_not_run_with_a_note(tmp_path, tuned):
    exp = experiment_with(tmp_path, phase1=tuned)
    found, notes = ev.resolve_candidates([], exp)
    assert [(c.name, c.checkpoint) for c in found] == [("base", None), ("phase1", tuned)]
    assert len(notes) == 1 and "phase2 skipped" in notes[0] and "status.json" in notes[0]


def test_explicit_candidates_get_labels_and_safe_unique_folder_names(tmp_path, tuned):
    exp = experiment_with(tmp_path)
    specs = [
        {"label": "Sárga / lr 2e-6!", "checkpoint": str(tuned)},
        str(tuned),
        str(tuned),
        str(tmp_path / "gone.pth"),
        {"label": "the base", "checkpoint": "base"},
        "phase1",
    ]
    found, notes = ev.resolve_candidates(specs, exp)
    names = [c.name for c in found]
    assert names == ["Sarga_lr_2e-6", "best_model_12", "best_model_12-2", "base"]
    assert found[0].label == "Sárga / lr 2e-6!" and found[3].label == "the base"
    assert [n.split()[0] for n in notes] == [str(tmp_path / "gone.pth"), "phase1"]
    assert [c.name for c in ev.resolve_candidates("base", exp)[0]] == ["base"]  # one string
    as_text = f'["base", {{"label": "mine", "checkpoint": "{tuned}"}}]'  # papermill -p
    assert [c.name for c in ev.resolve_candidates(as_text, exp)[0]] == ["base", "mine"]
    with pytest.raises(ValueError, match="no 'checkpoint'"):
        ev.resolve_candidates([{"label": "x"}], exp)


def test_default_sentences_exist_per_language_and_others_must_be_given():
    assert len(ev.EvalConfig().sentences()) == 4  # three lines and the short one
    assert ev.EvalConfig(test_sentences=["Egy."]).sentences() == ["Egy."]
    with pytest.raises(ValueError, match="test_sentences"):
        ev.EvalConfig(language="fi").sentences()


def test_a_short_sentence_is_always_among_the_test_sentences():
    longer = "Ez egy hosszabb mondat a kvízből."
    assert ev.EvalConfig().sentences()[-1] == "Igen, pontosan."
    assert ev.EvalConfig(language="en").sentences()[-1] == "Yes, exactly."
    assert ev.EvalConfig(test_sentences=[longer]).sentences() == [longer, "Igen, pontosan."]
    mine = ev.EvalConfig(test_sentences=[longer], short_test_sentence="Na, kezdjük!")
    assert mine.sentences() == [longer, "Na, kezdjük!"]
    three_words = ["Jó estét, mindenkinek!", longer]  # already short: nothing added
    assert ev.EvalConfig(test_sentences=three_words).sentences() == three_words
    with pytest.raises(ValueError, match="short_test_sentence"):
        ev.EvalConfig(language="fi", test_sentences=[longer]).sentences()


def test_sampling_defaults_are_coquis_but_the_temperature_sits_inside_the_seeds_range():
    from voicebook.coqui.probes import sampling_defaults

    config = ev.EvalConfig()
    assert config.sampling() == sampling_defaults() | {"temperature": 0.65}
    assert 0.55 <= config.temperature <= 0.75 and config.temperature_sweep == []


# --- metrics -------------------------------------------------------------------------------


def test_character_error_rate_ignores_case_and_punctuation():
    assert character_error_rate("Jó estét!", "jó estét") == 0
    assert character_error_rate("abc", "abd") == pytest.approx(1 / 3)
    assert character_error_rate("ab", "xyzw") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="empty reference"):
        character_error_rate("?!", "a")


def test_missing_asr_folder_is_a_clear_error_and_empty_means_no_cer(tmp_path):
    assert ev.load_asr("", "hu") is None
    with pytest.raises(FileNotFoundError, match="nor a CTranslate2 model folder with model.bin"):
        ev.load_asr(str(tmp_path / "whisper"), "hu")
    assert ev.EvalConfig().asr_model == "base"  # CER by default, offline


def test_real_time_factor_is_synthesis_time_over_audio_time():
    samples = pd.DataFrame({"audio_s": [2.0, 3.0], "synth_s": [1.0, 1.5]})
    assert ev.real_time_factor(samples) == pytest.approx(0.5)
    assert math.isnan(ev.real_time_factor(samples.assign(audio_s=0.0)))


def test_speaker_similarity_prefers_the_speaker_over_noise(dataset, tmp_path):
    clips = sorted((dataset / "wavs").glob("*.wav"))
    scorer = ev.SpeakerSimilarity(clips[:3])
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).normal(0, 0.1, 48000), 24000)
    same, other = scorer.score([clips[4], noise])
    assert 0.6 < same <= 1.0
    assert other < same - 0.2
    assert np.linalg.norm(scorer.reference) == pytest.approx(1.0)
    # batching the partials changes nothing: resemblyzer's own one-clip-at-a-time embedding
    one_by_one = [scorer.encoder.embed_utterance(scorer.load(c)) for c in clips[3:5]]
    np.testing.assert_allclose(scorer.embed(clips[3:5]), one_by_one, atol=1e-5)


def test_usage_stats_counts_codes_entropy_and_perplexity():
    two = cb.usage_stats(np.array([0, 0, 1, 1]))
    assert (two["codes_used"], two["entropy_bits"], two["perplexity"]) == (2, 1.0, 2.0)
    assert two["utilisation"] == 2 / 1024 and two["frames"] == 4
    every = cb.usage_stats(np.arange(1024).repeat(3))
    assert every["codes_used"] == 1024 and every["perplexity"] == pytest.approx(1024)


def test_clip_sources_come_from_clips_csv_card_names_or_double_underscore(tmp_path):
    header = "audio_file|text|speaker_name\n"
    (tmp_path / "metadata_train.csv").write_text(
        header + "wavs/quiz_show_1.wav|a|x\nwavs/quiz_2.wav|b|x\nwavs/radio__3.wav|c|x\n"
    )
    (tmp_path / "metadata_eval.csv").write_text(header + "wavs/other.wav|d|x\n")
    clips = cb.dataset_clips(tmp_path)
    assert clips["source"].tolist() == ["all", "all", "radio", "all"]  # no card: only "__"
    card = {"sources": [{"name": "quiz"}, {"name": "quiz_show"}]}
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert cb.dataset_clips(tmp_path)["source"].tolist() == ["quiz_show", "quiz", "radio", "all"]
    pd.DataFrame({"audio_file": clips["audio_file"], "source": ["a", "b", "c", "d"]}).to_csv(
        tmp_path / "clips.csv", index=False
    )
    assert cb.dataset_clips(tmp_path)["split"].tolist() == ["train"] * 3 + ["eval"]
    assert cb.dataset_clips(tmp_path)["source"].tolist() == ["a", "b", "c", "d"]


def test_codebook_usage_per_source_adds_up(base, dataset):
    usage = cb.codebook_usage(base, dataset, max_clips_per_source=2)
    assert set(usage) == {"interview", "quiz", "all"}
    assert usage["interview"]["clips"] == usage["quiz"]["clips"] == 2
    assert usage["all"]["clips"] == 4
    assert usage["interview"]["frames"] + usage["quiz"]["frames"] == usage["all"]["frames"]
    for stats in usage.values():
        assert 1 < stats["codes_used"] <= 1024
        assert stats["perplexity"] == pytest.approx(2 ** stats["entropy_bits"])
        assert stats["perplexity"] <= stats["codes_used"]
    assert usage["all"]["codes_used"] >= usage["quiz"]["codes_used"]


# --- model-based steps ---------------------------------------------------------------------


@pytest.mark.slow  # coqui's eval loop, three times
def test_eval_losses_are_repeatable_and_tell_checkpoints_apart(base, dataset, tuned, tmp_path):
    first = ev.eval_losses(base, dataset, None, tmp_path)
    again = ev.eval_losses(base, dataset, None, tmp_path)
    other = ev.eval_losses(base, dataset, tuned, tmp_path)
    assert first == again  # same code, same batches: the numbers are comparable
    assert first["n_batches"] == 1  # 3 eval clips, batch size 3
    assert 0 < first["mel_ce"] < 20 and 0 < first["text_ce"] < 0.2  # text CE weighted x0.01
    assert other["mel_ce"] != pytest.approx(first["mel_ce"], abs=1e-4)


@pytest.mark.slow  # coqui's eval loop, four times
def test_one_loss_model_per_checkpoint_gives_every_pass_the_numbers_of_a_fresh_one(
    base, dataset, tuned, tmp_path
):
    from voicebook.coqui.losses import CheckpointLosses

    shared = CheckpointLosses(base, tuned, tmp_path)
    one_clip = shared.means(dataset, batch_size=1)
    assert shared.means(dataset) == ev.eval_losses(base, dataset, tuned, tmp_path)
    assert one_clip == ev.eval_losses(base, dataset, tuned, tmp_path, batch_size=1)
    assert one_clip["n_batches"] == 3


@pytest.mark.slow  # four Xtts loads
def test_checkpoints_read_into_one_xtts_make_the_models_of_fresh_loads(base, tuned):
    from voicebook.coqui.models import XttsLoader, load_xtts

    loader = XttsLoader(base)
    model = loader.load(tuned)
    assert loader.load(None) is model  # read into the model built first, not built again
    for checkpoint in (None, tuned):
        loaded, fresh = (
            loader.load(checkpoint).state_dict(),
            load_xtts(base, checkpoint).state_dict(),
        )
        assert loaded.keys() == fresh.keys()
        assert all(torch.equal(loaded[k], fresh[k]) for k in fresh)
    assert not model.training and not model.gpt.training


@pytest.mark.slow  # synthesis
def test_synthesis_is_capped_in_proportion_to_the_text(base, dataset, tmp_path):
    from voicebook.coqui.models import load_xtts

    model = load_xtts(base)
    default_cap = model.gpt.max_gen_mel_tokens
    refs = vr.reference_clips(dataset, 1)
    short, longer = "Jó napot!", "Jó napot kívánok mindenkinek, kezdjük is a mai adást!"
    out = em.synthesize(model, [short, longer], refs, tmp_path / "c", tokens_per_char=1.0)
    assert model.gpt.max_gen_mel_tokens == default_cap  # restored
    assert out["sentence_id"].tolist() == ["s01", "s02"]
    assert all((tmp_path / "c" / f"{s}.wav").is_file() for s in out["sentence_id"])
    seconds_per_token = 1024 / 22050  # one GPT audio token = one 1024-sample DVAE frame
    caps = [takes.token_cap(t, 1.0) for t in (short, longer)]
    assert caps == [30, len(longer)]
    for audio_s, cap in zip(out["audio_s"], caps):
        assert 0 < audio_s <= (cap + 1) * seconds_per_token
    assert out["synth_s"].gt(0).all()
    # the tiny base never stops by itself: every sentence runs into its (forced) cap
    assert out["cap"].tolist() == caps and out["codes"].tolist() == caps
    assert ed.cap_hits(out, short) == {"cap_hits": 2, "short_cap_hit": True}
    assert "generate" not in vars(model.gpt)  # the counter is gone again


@pytest.mark.slow  # synthesis
def test_synthesis_passes_the_sampling_settings_to_inference(base, dataset, tmp_path):
    from voicebook.coqui.models import load_xtts

    model, seen = load_xtts(base), []
    inference = model.inference
    model.inference = lambda *a, **kw: seen.append(kw) or inference(*a, **kw)
    settings = {"temperature": 0.55, "repetition_penalty": 5.0, "top_p": 0.8, "top_k": 20}
    refs = vr.reference_clips(dataset, 1)
    em.synthesize(model, ["Jó napot!"], refs, tmp_path, tokens_per_char=1.0, sampling=settings)
    assert seen == [takes.Sampler(**settings).kwargs()]  # every setting given, none defaulted
    assert seen[0]["length_penalty"] == 1.0 and seen[0]["do_sample"] is True


def test_the_temperature_sweep_takes_a_list_or_its_text():
    assert ed.sweep_temperatures(ev.EvalConfig(temperature_sweep=[0.55, 0.75])) == [0.55, 0.75]
    assert ed.sweep_temperatures(ev.EvalConfig(temperature_sweep="[0.6, 0.7]")) == [0.6, 0.7]
    assert ed.sweep_temperatures(ev.EvalConfig(temperature_sweep=0.6)) == [0.6]
    assert ed.sweep_temperatures(ev.EvalConfig()) == []


def test_generated_codes_stop_at_the_stop_token():
    from voicebook.coqui import probes

    stop = 1025
    assert probes.generated_codes(torch.tensor([5, 7, stop, stop]), stop) == {
        "codes": 2, "stopped": True,
    }  # fmt: skip
    assert probes.generated_codes(torch.tensor([5, 7, 9]), stop) == {"codes": 3, "stopped": False}

    class Gpt:  # a GPT that stops after 4 tokens, as a trained one does
        stop_audio_token = stop

        def generate(self, *args, **kwargs):
            return torch.tensor([[3, 3, 3, 3, stop]])

    model = type("Model", (), {"gpt": Gpt()})()
    with probes.count_generated_codes(model) as calls:
        model.gpt.generate()
    assert calls == [{"codes": 4, "stopped": True}]
    samples = pd.DataFrame({"text": ["Igen.", "Hosszú mondat."], "codes": [4, 30], "cap": [30, 30]})
    assert ed.cap_hits(samples, "Igen.") == {"cap_hits": 1, "short_cap_hit": False}
    assert ed.cap_hits(samples, "Nincs ilyen.")["short_cap_hit"] is None


def test_without_a_dataset_the_stage_lists_candidates_and_says_what_is_missing(tmp_path, base):
    exp = experiment_with(tmp_path)
    result = ev.evaluate(ev.EvalConfig(), exp, base)
    assert result.table["candidate"].tolist() == ["base"]
    assert result.table[["mel_ce", "speaker_similarity", "rtf", "cer"]].isna().all().all()
    assert any("00_data_prep" in n for n in result.notes)
    assert any("phase1 skipped" in n for n in result.notes)
    assert not (exp / "eval" / "eval_table.csv").exists()


@pytest.mark.slow  # the whole evaluation
def test_whole_stage_writes_wavs_table_and_samples_for_every_candidate(
    tmp_path, base, dataset, tuned
):
    exp = experiment_with(tmp_path, dataset, phase1=tuned)
    config = ev.EvalConfig(
        test_sentences=["Jó napot!"],
        n_reference_clips=1,
        hidden_reference_sentences=0,
        temperature_sweep=[0.5, 0.9],
        takes=2,
        stress_sentences=["Tényleg?"],
        mos=False,
        audio_tokens_per_char=DEMO_TOKEN_CAP,
    )
    heard = []

    def transcribe(wav):  # a stand-in ASR that hears only the first word
        heard.append(wav)
        return "jó"

    result = ev.evaluate(config, exp, base, transcribe=transcribe)
    table = result.table
    by = result.per_source.set_index(["candidate", "source"])
    per_source = ["mel_ce[interview]", "mel_ce[quiz]", "text_ce[interview]", "text_ce[quiz]"]
    assert list(table.columns) == ev.EVAL_TABLE_COLUMNS + per_source
    assert table["candidate"].tolist() == ["base", "phase1"]
    assert table["checkpoint"].tolist() == ["", str(tuned)]
    assert table["n_sentences"].tolist() == [1, 1]
    assert table["cer"].tolist() == pytest.approx([6 / 8, 6 / 8])  # "jó napot" vs "jó"
    assert table[["mel_ce", "text_ce", "rtf"]].gt(0).all().all()
    assert table["speaker_similarity"].between(-1, 1).all()
    # 2 candidates x (1 test + 1 stress sentence) x 2 takes, + the sweep's 4
    assert len(heard) == 8 + 4 and any("phase2 skipped" in n for n in result.notes)
    takes = result.takes
    assert len(takes) == 8 and table["n_takes"].tolist() == [4, 4]
    assert table["takes_per_sentence"].tolist() == [2, 2]
    by_take = takes.set_index(["candidate", "sentence_id", "take"])
    assert by_take.loc["base", "seed"].tolist() == by_take.loc["phase1", "seed"].tolist()
    assert by_take.loc[("base", "x01", 2), "set"] == "stress"
    assert by_take.loc[("phase1", "s01", 2), "cer"] == pytest.approx(6 / 8)
    assert takes["runaway"].all()  # the tiny base never stops: every take hits the cap
    assert table["runaway_per_100"].tolist() == [100.0, 100.0]
    assert table["mos"].isna().all()  # mos=False: not loaded
    on_disk_takes = pd.read_csv(exp / "eval" / "takes.csv")
    assert "phase1/s01_t2.wav" in on_disk_takes["wav"].tolist()
    assert all((exp / "eval" / w).is_file() for w in on_disk_takes["wav"])
    clips = result.clip_losses.groupby("candidate")["mel_ce"]
    assert clips.size().tolist() == [3, 3]
    assert clips.mean()["phase1"] == pytest.approx(by.loc[("phase1", "all"), "mel_ce"])
    on_disk = pd.read_csv(exp / "eval" / "eval_table.csv")
    assert on_disk["mel_ce"].tolist() == pytest.approx(table["mel_ce"].tolist())
    samples = pd.read_csv(exp / "eval" / "samples.csv")
    assert samples["wav"].tolist() == ["base/s01.wav", "phase1/s01.wav"]
    assert all((exp / "eval" / w).is_file() for w in samples["wav"])
    # evaluation depth: the tiny base never stops, so its one (short) sentence hits the cap
    assert table["cap_hits"].tolist() == [1, 1] and table["short_cap_hit"].tolist() == [True] * 2
    assert table["dvae_mse"].tolist() == [result.dvae_reconstruction["all"]["mse"]] * 2
    assert by.loc[("phase1", "quiz"), "mel_ce"] == table["mel_ce[quiz]"].iloc[1]
    assert by["n_clips"].xs("all", level="source").tolist() == [3, 3]
    sweep = result.temperature_sweep
    assert sweep[["candidate", "temperature"]].values.tolist() == [
        ["base", 0.5], ["base", 0.9], ["phase1", 0.5], ["phase1", 0.9]
    ]  # fmt: skip
    assert sweep["cap_hits"].tolist() == [1] * 4 and sweep["cer"].tolist() == [6 / 8] * 4
    assert (exp / "eval" / "phase1" / "temperature_0.9" / "s01.wav").is_file()
    assert result.settings["temperature"] == 0.65 and result.settings["reference_mode"] == "first"
    assert result.settings["reference_clips"] == ["wavs/interview_000.wav"]  # a train clip
    # forgetting: Text CE and CER on the general sentences, read in the speaker's voice
    general = pd.read_csv(exp / "eval" / ".general" / "metadata_eval.csv", sep="|")
    assert general["text"].tolist() == ["Jó napot!"]
    assert general["audio_file"].tolist() == ["wavs/reference_0.wav"]
    assert table["general_cer"].tolist() == pytest.approx([6 / 8, 6 / 8])
    text_ce = table["general_text_ce"].tolist()
    assert all(0 < x < 1 for x in text_ce) and text_ce[0] != pytest.approx(text_ce[1], abs=1e-6)
    again = ev.general_text_ce(ev.Candidate("base", "base", None), config,
                               exp / "eval" / ".general", exp / "eval", base, "cpu")  # fmt: skip
    assert again == pytest.approx(text_ce[0], abs=1e-6)  # seeded: the same batches every time


def _paired_stage(tmp_path, base, dataset, other, **settings):
    """The whole stage on the base and ``other`` (a checkpoint), with a stand-in recogniser."""
    exp = experiment_with(tmp_path, dataset)
    config = ev.EvalConfig(
        candidates=["base", {"label": "other", "checkpoint": str(other)}],
        test_sentences=["Jó napot!", "Szép idő van ma, ugye?"], n_reference_clips=1,
        hidden_reference_sentences=0, audio_tokens_per_char=DEMO_TOKEN_CAP, **settings,
    )  # fmt: skip
    return ev.evaluate(config, exp, base, transcribe=lambda wav: "jó napot")


@pytest.mark.slow
def test_twins_one_checkpoint_under_two_labels_are_indistinguishable_for_every_seed(
    tmp_path, base, dataset
):
    from voicebook.decision import matrix as dm
    from voicebook.decision import report
    from voicebook.decision.confidence import Paired
    from voicebook.measures import stats

    torch.set_num_threads(1)
    result = _paired_stage(tmp_path, base, dataset, base / "model.pth", takes=2,
                           stress_sentences=["Tényleg?"])  # fmt: skip
    assert result.table["candidate"].tolist() == ["base", "other"]
    assert result.table["mos"].between(1, 5).all()  # Distill-MOS ran, loaded once
    for seed in (1, 2, 3, 11, stats.BOOTSTRAP_SEED):
        found = Paired(result.takes, result.clip_losses, seed).between("other", "base")
        assert {"mel_ce", "text_ce", "cer", "speaker_similarity", "mos", "failure"} <= set(found)
        assert all(c.ci_low <= 0 <= c.ci_high for c in found.values()), seed
        assert {c.verdict for c in found.values()} == {stats.SAME}, seed
    untrained = dm.Thresholds(text_ce_max=1.0, text_ce_alarm=1.0)  # the tiny base reads nothing
    scraps = {"03_evaluation": result.scraps()}
    decision = report.analyse_scraps("twins", scraps, untrained).decision
    assert decision.winner == "base" and decision.finetuning_beat_zero_shot is False
    assert any("indistinguishable on every measure" in r for r in decision.reasons)


@pytest.mark.slow
def test_a_model_with_noise_on_its_gpt_is_worse_on_mel_ce_beyond_doubt(tmp_path, base, dataset):
    from voicebook.decision.confidence import Paired
    from voicebook.measures import stats

    torch.set_num_threads(1)
    state = torch.load(base / "model.pth", weights_only=False)["model"]
    torch.manual_seed(0)
    for key, value in state.items():  # noise the size of each GPT weight's own spread
        if key.startswith("gpt.") and value.is_floating_point() and value.numel() > 1:
            state[key] = value + value.std() * torch.randn_like(value)
    noisy = tmp_path / "noisy.pth"
    torch.save({"model": {f"xtts.{k}": v for k, v in state.items()}}, noisy)
    result = _paired_stage(tmp_path, base, dataset, noisy, takes=1, stress_set=False, mos=False)
    mel = Paired(result.takes, result.clip_losses).between("other", "base")["mel_ce"]
    assert mel.verdict == stats.WORSE and mel.ci_low > 0 and mel.n == 3
    assert mel.difference == pytest.approx(
        result.clip_losses.groupby("candidate")["mel_ce"].mean().diff().iloc[-1]
    )


@pytest.mark.slow  # the whole evaluation
def test_a_held_out_clip_hides_as_the_reference_sample_of_its_own_transcript(
    tmp_path, base, dataset
):
    exp = experiment_with(tmp_path, dataset)
    config = ev.EvalConfig(candidates=["base"], test_sentences=["Jó napot!"], n_reference_clips=1,
                           takes=1, stress_set=False, mos=False)  # fmt: skip
    result = ev.evaluate(config, exp, base)
    held_out = pd.read_csv(dataset / "metadata_eval.csv", sep="|")
    hidden = held_out.iloc[-1]  # the last held-out clip; the first one is the voice reference
    samples = pd.read_csv(exp / "eval" / "samples.csv")
    assert samples[["candidate", "sentence_id"]].values.tolist() == [
        ["base", "s01"], ["base", "s02"], ["reference", "s02"]
    ]  # fmt: skip
    assert samples["text"].tolist() == ["Jó napot!", hidden.text, hidden.text]
    real = exp / "eval" / samples["wav"].iloc[2]
    assert real.read_bytes() == (dataset / hidden.audio_file).read_bytes()
    assert result.table["n_sentences"].tolist() == [2]  # the reference is no candidate
    train = pd.read_csv(dataset / "metadata_train.csv", sep="|")
    assert result.settings["reference_clips"] == [train.audio_file.iloc[0]]  # never a test clip
    similarity = samples.set_index("candidate")["speaker_similarity"]
    assert similarity["reference"] > similarity["base"].max()  # the real voice, not noise
    listed = [s.candidate for s in ls.load_samples(exp / "eval")]
    assert listed == ["base", "base", ls.REFERENCE]
    assert ev.hidden_references(dataset, 5, 2)["text"].tolist() == held_out["text"][2:].tolist()
    # a dataset made with two splits: scored on validation, labelled, and how to rebuild it
    assert result.table["split"].tolist() == ["validation"] and result.settings["split"] == (
        "validation"
    )
    assert any("no test split" in n and "re-running 00_data_prep" in n for n in result.notes)


def test_the_test_split_is_scored_through_a_view_whose_eval_split_it_is(tmp_path, dataset):
    from voicebook.dataprep import splits

    copy = tmp_path / "dataset"
    shutil.copytree(dataset, copy)
    assert splits.scoring_dataset(copy, tmp_path / "eval")[1:] == (
        "validation",
        splits.two_split_note(copy),
    )
    lines = (copy / "metadata_eval.csv").read_text().splitlines()
    (copy / "metadata_test.csv").write_text("\n".join([lines[0], lines[-1]]) + "\n")
    view, split, note = splits.scoring_dataset(copy, tmp_path / "eval")
    assert (split, note) == ("test", None) and view == tmp_path / "eval" / splits.VIEW_DIR
    assert vr.eval_clips(view) == [view / lines[-1].split("|")[0]]  # the test clip only
    assert vr.eval_clips(view)[0].read_bytes() == (copy / lines[-1].split("|")[0]).read_bytes()
    assert (view / "metadata_train.csv").read_text() == (copy / "metadata_train.csv").read_text()


# --- evaluation depth ----------------------------------------------------------------------


def test_per_source_means_weigh_every_clip_once_and_add_up_to_all_exactly():
    per_clip = pd.DataFrame(
        {"source": ["quiz", "quiz", "quiz", "interview"], "mel_ce": [1.0, 2.0, 3.0, 10.0],
         "text_ce": [0.01, 0.02, 0.03, 0.05]}
    )  # fmt: skip
    table = ed.by_source(per_clip).set_index("source")
    assert table["n_clips"].to_dict() == {"interview": 1, "quiz": 3, "all": 4}
    assert table["mel_ce"].to_dict() == {"interview": 10.0, "quiz": 2.0, "all": 4.0}
    assert table.loc["all", "text_ce"] == pytest.approx(0.0275)
    assert ed.source_columns(table.reset_index()) == {
        "mel_ce[interview]": 10.0, "mel_ce[quiz]": 2.0,
        "text_ce[interview]": 0.05, "text_ce[quiz]": pytest.approx(0.02),
    }  # fmt: skip


@pytest.mark.slow  # coqui's eval loop per clip
def test_per_source_losses_of_a_checkpoint_add_up_to_its_one_clip_batches(
    base, dataset, tuned, tmp_path
):
    config = ev.EvalConfig()
    table = ed.by_source(ed.clip_table(base, dataset, tuned, tmp_path, config)).set_index("source")
    assert table["n_clips"].to_dict() == {"interview": 2, "quiz": 1, "all": 3}
    sources = table.drop("all")
    for metric in ("mel_ce", "text_ce"):
        weighted = (sources["n_clips"] * sources[metric]).sum() / sources["n_clips"].sum()
        assert weighted == pytest.approx(table.loc["all", metric], rel=1e-12)
    # the same data path as eval_losses: its one-clip batches give the same overall figure
    one_clip = ev.eval_losses(base, dataset, tuned, tmp_path, batch_size=1)
    assert table.loc["all", "mel_ce"] == pytest.approx(one_clip["mel_ce"], rel=1e-9)
    assert table.loc["all", "text_ce"] == pytest.approx(one_clip["text_ce"], rel=1e-9)
    assert table.loc["interview", "mel_ce"] != pytest.approx(table.loc["quiz", "mel_ce"])
    first_two = ed.by_source(ed.clip_table(
        base, dataset, tuned, tmp_path, ev.EvalConfig(max_eval_batches=2, eval_batch_size=1)
    ))  # fmt: skip
    assert first_two["n_clips"].tolist() == [1, 1, 2]  # interview_006, quiz_007


def test_forgetting_one_source_is_named_when_the_mean_hides_it():
    rows = [("base", "quiz", 5.0), ("base", "interview", 5.0), ("base", "all", 5.0),
            ("phase1", "quiz", 5.2), ("phase1", "interview", 4.0), ("phase1", "all", 4.5),
            ("phase2", "quiz", 4.8), ("phase2", "interview", 4.9), ("phase2", "all", 4.85)]  # fmt: skip
    per_source = pd.DataFrame(rows, columns=["candidate", "source", "mel_ce"])
    (note,) = ed.forgetting_notes(per_source)
    assert note.startswith("phase1: Mel CE fell overall (5 → 4.5) but rose on quiz (5 → 5.2)")
    assert ed.forgetting_notes(per_source[per_source.candidate != "base"]) == []


def test_dvae_reconstruction_per_source_weighs_every_mel_value(base, dataset):
    per_clip = pd.DataFrame(
        {"source": ["a", "a", "b"], "elements": [100, 300, 400], "sq_error": [10.0, 30.0, 120.0],
         "abs_error": [20.0, 60.0, 200.0], "peak": [1.0, 2.0, 1.5]}
    )  # fmt: skip
    recon = ed.reconstruction_by_source(per_clip)
    assert recon["a"] == {"clips": 2, "mse": 0.1, "mae": 0.2, "peak": 2.0}
    assert recon["all"] == {"clips": 3, "mse": 0.2, "mae": 0.35, "peak": 2.0}
    real = ed.dvae_reconstruction(base, dataset)  # the held-out clips: 2 interview, 1 quiz
    assert {k: v["clips"] for k, v in real.items()} == {"interview": 2, "quiz": 1, "all": 3}
    for stats in real.values():
        assert 0 < stats["mae"] ** 2 <= stats["mse"] <= stats["peak"] ** 2
    usage = {"quiz": {"codes_used": 40, "perplexity": 30.0, "clips": 5}}
    table = ed.reconstruction_table(real, usage).set_index("source")
    assert table.index.tolist() == ["interview", "quiz", "all"]  # the sources, then all
    assert list(table.columns) == ["eval_clips", "recon_mse", "recon_mae", "recon_peak",
                                   "codes_used", "perplexity"]  # fmt: skip
    assert table.loc["quiz", "codes_used"] == 40 and math.isnan(table.loc["all", "codes_used"])


def test_auto_reference_clips_are_the_nearest_the_mean_voice():
    clips = ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]
    embeddings = np.array(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.8, 0.3, 0.1], [0.95, 0.0, 0.05]]
    )  # c is another voice; the mean leans to the first axis
    # cosines to the mean: a 0.952, b 0.959, c 0.284, d 0.958, e 0.966
    assert vr.nearest_clips(embeddings, clips, 2) == ["e.wav", "b.wav"]
    assert vr.nearest_clips(embeddings, clips, 4) == ["e.wav", "b.wav", "d.wav", "a.wav"]
    with pytest.raises(ValueError, match="5 clips but 2 embeddings"):
        vr.nearest_clips(embeddings[:2], clips, 1)


def test_reference_clips_first_auto_or_files(dataset, tmp_path):
    held_out, train = vr.eval_clips(dataset), vr.train_clips(dataset)
    assert vr.choose_reference_clips("first", dataset, 2) == train[:2]  # train, never test

    class Scorer:  # an encoder whose embeddings make the third train clip the nearest
        def embed(self, clips):
            assert clips == train  # "auto" looks at the train clips only
            return np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.9, 0.1], [0.1, 0.9],
                             [0.5, 0.4]])  # fmt: skip

    assert vr.choose_reference_clips("auto", dataset, 1, Scorer()) == [train[2]]
    given = ["wavs/quiz_001.wav", str(held_out[0])]  # relative to the dataset, or not
    assert vr.choose_reference_clips(given, dataset, 9) == [dataset / given[0], held_out[0]]
    as_text = '["wavs/quiz_001.wav"]'  # papermill -p
    assert vr.choose_reference_clips(as_text, dataset, 1) == [dataset / "wavs/quiz_001.wav"]
    with pytest.raises(FileNotFoundError, match="names wavs/nope.wav, which"):
        vr.choose_reference_clips(["wavs/quiz_001.wav", "wavs/nope.wav"], dataset, 1)
    scorer = ev.SpeakerSimilarity(train)  # "auto" with resemblyzer's real embeddings
    auto = vr.choose_reference_clips("auto", dataset, 2)
    assert auto == vr.nearest_clips(scorer.clip_embeddings, train, 2) and len(set(auto)) == 2
    assert not set(auto) & set(held_out) and set(auto) <= set(train)
    hidden = ev.hidden_references(dataset, 5, 1, exclude=[held_out[1]])
    assert [Path(w).name for w in hidden["wav"]] == [held_out[0].name, held_out[2].name]


@pytest.mark.parametrize("language", sorted(eval_takes.STRESS_SENTENCES))
def test_every_stress_set_holds_what_users_see_fail(language):
    from voicebook.coqui.limits import char_limit

    stress = eval_takes.stress_sentences(ev.EvalConfig(language=language))
    assert stress == eval_takes.STRESS_SENTENCES[language]
    assert any(len(s.split()) <= 3 for s in stress)  # 1-3-word prompts
    assert any(s.endswith("?") for s in stress) and any(s.endswith("!") for s in stress)
    assert any(0.9 * char_limit(language) <= len(s) <= char_limit(language) for s in stress)
    assert any(any(c.isdigit() for c in s) and "." in s.split()[0] for s in stress)  # "Dr. ..."


def test_the_stress_set_can_be_given_as_text_or_turned_off():
    given = ev.EvalConfig(stress_sentences='["Igen.", "Mi?"]')  # papermill -p passes text
    assert eval_takes.stress_sentences(given) == ["Igen.", "Mi?"]
    assert eval_takes.stress_sentences(ev.EvalConfig(stress_sentences="Mi?")) == ["Mi?"]
    assert eval_takes.stress_sentences(ev.EvalConfig(stress_set=False)) == []
    assert eval_takes.stress_sentences(ev.EvalConfig(language="fi")) == []  # no default there
