"""The shared measures: Wilson intervals, the paired bootstrap and its verdicts, comparisons of
takes and clips, failure flags on crafted takes, Distill-MOS offline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from voicebook.measures import failures as mf
from voicebook.measures import paired as mc
from voicebook.measures import stats
from voicebook.measures import takes as mt

# --- Wilson intervals ----------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_and_stays_inside_zero_and_one():
    low, high = stats.wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)  # 0 of 10: not "0 ± 0"
    low, high = stats.wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert stats.wilson_interval(10, 10)[1] == 1.0
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k=11"):
        stats.wilson_interval(11, 10)


def test_failure_rates_count_per_100_takes_with_wilson_intervals():
    takes = pd.DataFrame({"candidate": ["a"] * 4 + ["b"] * 4,
                          "runaway": [True, False, False, False] + [False] * 4})  # fmt: skip
    rates = mc.failure_rates(takes, ["runaway"]).set_index("candidate")
    assert rates.loc["a", ["takes", "failures", "per_100"]].tolist() == [4, 1, 25.0]
    assert rates.loc["b", "per_100"] == 0 and rates.loc["b", "ci_high"] == pytest.approx(
        100 * stats.wilson_interval(0, 4)[1]
    )


# --- the paired bootstrap and the verdict --------------------------------------------------


def test_identical_values_give_a_zero_interval_and_indistinguishable_for_every_seed():
    values = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
    units = np.array(["s1", "s1", "s2", "s2", "s3", "s3"])
    for seed in (0, 1, 7, 123, stats.BOOTSTRAP_SEED):
        found = stats.paired_bootstrap(values, values.copy(), units, seed=seed)
        assert (found.difference, found.ci_low, found.ci_high) == (0, 0, 0)
        assert found.win_rate == 0.5 and found.n == 3
        assert stats.verdict(found, +1) == stats.verdict(found, -1) == stats.SAME


def test_a_consistent_difference_is_better_or_worse_by_the_metrics_direction():
    rng = np.random.default_rng(0)
    against = rng.normal(0.5, 0.1, 40)
    units = np.repeat(np.arange(20), 2)  # 20 sentences, 2 takes each
    found = stats.paired_bootstrap(against + 0.05, against, units)
    assert found.difference == pytest.approx(0.05) and found.ci_low == pytest.approx(0.05)
    assert found.win_rate == 1.0
    assert stats.verdict(found, +1) == stats.BETTER  # e.g. similarity: higher is better
    assert stats.verdict(found, -1) == stats.WORSE  # e.g. CER: higher is worse
    assert stats.verdict(found, +1, floor=0.06) == stats.SAME  # below the practical floor


def test_noise_without_a_difference_is_mostly_indistinguishable_and_seeded():
    rng = np.random.default_rng(1)
    units = np.repeat(np.arange(12), 3)
    calls = [stats.paired_bootstrap(rng.normal(size=36), rng.normal(size=36), units, seed=5)
             for _ in range(40)]  # fmt: skip
    same = sum(stats.verdict(c, +1) == stats.SAME for c in calls)
    assert same >= 34  # a 95 % interval misses zero about 2 times in 40
    a, b = rng.normal(size=36), rng.normal(size=36)
    assert stats.paired_bootstrap(a, b, units, seed=5) == stats.paired_bootstrap(
        a, b, units, seed=5
    )
    assert stats.paired_bootstrap(a, b, units, seed=5) != stats.paired_bootstrap(
        a, b, units, seed=6
    )


def test_takes_of_a_sentence_stay_together_when_resampling():
    # one sentence with a big difference in both takes, the others none: resampling sentences
    # gives an interval whose top is the big sentence's whole weight, not one take's
    a = np.array([1.0, 1.0, 0, 0, 0, 0, 0, 0])
    units = np.repeat(["s1", "s2", "s3", "s4"], 2)
    found = stats.paired_bootstrap(a, np.zeros(8), units)
    assert found.n == 4 and found.difference == pytest.approx(0.25)
    assert found.ci_low == 0 and found.ci_high == pytest.approx(0.75)  # 3 of 4 draws of s1


def test_nan_pairs_are_left_out():
    found = stats.paired_bootstrap(np.array([1.0, math.nan, 3.0]), np.array([0.0, 1.0, 1.0]),
                                   np.array(["a", "b", "c"]))  # fmt: skip
    assert found.n == 2 and found.difference == pytest.approx(1.5)


# --- comparisons of takes and clips --------------------------------------------------------


def _takes(candidate: str, cer: list[float]) -> pd.DataFrame:
    n = len(cer) // 2
    return pd.DataFrame({"candidate": candidate, "sentence_id": np.repeat([f"s{i}" for i in
                         range(n)], 2), "take": [1, 2] * n, "cer": cer})  # fmt: skip


def test_comparisons_pair_takes_by_sentence_and_take_and_clips_by_file():
    base = _takes("base", [0.2, 0.3, 0.1, 0.2, 0.4, 0.5, 0.3, 0.3])
    twin = _takes("twin", [0.2, 0.3, 0.1, 0.2, 0.4, 0.5, 0.3, 0.3])
    good = _takes("good", [0.0, 0.1, 0.0, 0.0, 0.1, 0.2, 0.1, 0.0])
    takes = pd.concat([base, twin, good.sample(frac=1, random_state=0)])  # order does not matter
    clips = pd.DataFrame({"candidate": ["base"] * 3 + ["twin"] * 3 + ["good"] * 3,
                          "audio_file": ["a", "b", "c"] * 3,
                          "mel_ce": [5.0, 5.2, 4.8] * 2 + [4.0, 4.1, 3.9]})  # fmt: skip
    found = {(c.candidate, c.metric): c for c in
             mc.comparisons(takes, clips, ["base", "twin", "good"], ["base"])}  # fmt: skip
    assert sorted(found) == [("good", "cer"), ("good", "mel_ce"), ("twin", "cer"),
                             ("twin", "mel_ce")]  # fmt: skip
    assert {found[("twin", m)].verdict for m in ("cer", "mel_ce")} == {stats.SAME}
    cer = found[("good", "cer")]
    assert (cer.verdict, cer.n, cer.takes, cer.unit) == (stats.BETTER, 4, 8, "sentence")
    assert cer.difference == pytest.approx(-0.225) and cer.ci_high < 0
    mel = found[("good", "mel_ce")]
    assert (mel.verdict, mel.n, mel.unit) == (stats.BETTER, 3, "clip")
    assert mel.difference == pytest.approx(-1.0)
    assert mc.summary(found.values(), "good", "base")[stats.BETTER] == ["mel_ce", "cer"]
    table = mc.as_table(found.values())
    assert list(table.columns[:9]) == ["candidate", "against", "metric", "n", "difference",
                                       "ci_low", "ci_high", "win_rate", "verdict"]  # fmt: skip


# --- failure flags -------------------------------------------------------------------------

TEXT = "Jó estét kívánok, kezdjük a játékot!"


@pytest.mark.parametrize(
    "heard, expected",
    [
        ("jó estét kívánok kezdjük a játékot", (False, False, False)),  # clean
        ("Jó estét kívánok, kezdjük a játékát.", (False, False, False)),  # a misheard word
        ("jó estét kívánok kezdjük a játékot és még sok mást", (True, False, False)),  # after
        ("jó estét kívánok kezdjük a", (False, True, False)),  # the last word missing
        ("jó estét kívánok", (False, True, False)),  # the last words missing
        ("jó estét estét kívánok kezdjük a játékot", (False, False, True)),  # repeated
        ("jó kívánok kezdjük a játékot", (False, False, True)),  # skipped
        ("", (False, True, False)),  # nothing heard
    ],
)
def test_failure_flags_on_crafted_takes(heard, expected):
    flags = mf.failure_flags(TEXT, heard.split())
    assert (flags.runaway, flags.truncated, flags.skipped_or_repeated) == expected
    assert flags.any == any(expected)


def test_a_cap_hit_or_a_voiced_tail_is_a_runaway():
    clean = ["jó", "estét", "kívánok", "kezdjük", "a", "játékot"]
    assert mf.failure_flags(TEXT, clean, cap_hit=True).runaway
    assert mf.failure_flags(TEXT, clean, voiced_tail_s=mf.VOICED_TAIL_S + 0.1).runaway
    assert not mf.failure_flags(TEXT, clean, voiced_tail_s=mf.VOICED_TAIL_S - 0.1).runaway


def test_voiced_after_counts_the_loud_frames_after_the_last_word():
    rate = 16000
    rng = np.random.default_rng(0)
    speech, silence = rng.normal(0, 0.3, rate), np.zeros(rate)
    clip = np.concatenate([speech, silence, speech * 0.5, silence])  # voiced 2-3 s
    assert mf.voiced_after(clip, rate, 1.0) == pytest.approx(1.0, abs=0.05)
    assert mf.voiced_after(np.concatenate([speech, silence, silence]), rate, 1.0) == 0.0


# --- takes' seeds and the sampler ----------------------------------------------------------


def test_every_take_has_its_own_seed_and_the_first_is_the_old_single_take_seed():
    seeds = {(i, k): mt.take_seed(1, i, k) for i in range(1, 12) for k in range(1, 4)}
    assert len(set(seeds.values())) == len(seeds)
    assert [mt.take_seed(1, i, 1) for i in (1, 2, 3)] == [2, 3, 4]
    assert mt.wav_name("s01", 1) == "s01.wav" and mt.wav_name("x02", 3) == "x02_t3.wav"
    table = mt.sentence_table(["a b", "c"], ["d"])
    assert table.values.tolist() == [["s01", "test", "a b"], ["s02", "test", "c"],
                                     ["x01", "stress", "d"]]  # fmt: skip


def test_the_sampler_pins_every_setting_that_inference_and_synthesize_disagree_on():
    import inspect

    from TTS.tts.models.xtts import Xtts

    kwargs = mt.Sampler().kwargs()
    inference = set(inspect.signature(Xtts.inference).parameters) - {"self", "text", "language",
                    "gpt_cond_latent", "speaker_embedding", "hf_generate_kwargs"}  # fmt: skip
    assert set(kwargs) == inference  # every setting inference takes is given
    assert kwargs["temperature"] == 0.65 and kwargs["length_penalty"] == 1.0
    assert "top_k 50" in mt.Sampler().describe()
    with pytest.raises(ValueError, match="top_p"):
        mt.Sampler(top_p=0)


# --- Distill-MOS ---------------------------------------------------------------------------


@pytest.mark.slow
def test_distill_mos_runs_offline_and_scores_clean_speech_above_0_db_noise(monkeypatch):
    """On the bundled demo clips (espeak-ng speech), each clean clip above itself with white
    noise at 0 dB SNR (against its active speech level: the samples above 5 % of its peak)."""
    import librosa
    import torch

    from voicebook.core.paths import DEMO_DATA_DIR
    from voicebook.measures.quality import DistillMos

    torch.set_num_threads(1)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    for var in ("HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download would fail
    scorer = DistillMos()
    rng = np.random.default_rng(0)
    files = sorted((DEMO_DATA_DIR / "interview").glob("*.flac"))[:3]
    clean = [librosa.load(str(f), sr=16000)[0] for f in files]
    noisy = []
    for speech in clean:
        active = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
        noise = rng.normal(size=len(speech)) * np.sqrt(np.mean(active**2))  # 0 dB SNR
        noisy.append(speech + noise.astype(np.float32))
    scores_clean, scores_noisy = scorer.score_waves(clean), scorer.score_waves(noisy)
    assert all(1 <= s <= 5 for s in [*scores_clean, *scores_noisy])
    assert (scores_clean > scores_noisy).all()
    assert scorer.score_files(files[:1])[0] == pytest.approx(scores_clean[0], abs=1e-3)


def test_quality_is_compared_on_test_sentences_and_failures_on_every_take():
    rows = []
    for name, stress_cer, failed in (("base", 0.1, False), ("other", 0.9, True)):
        for sid, kind in (("s01", "test"), ("s02", "test"), ("x01", "stress")):
            for take in (1, 2):
                cer = stress_cer if kind == "stress" else 0.2
                rows.append([name, sid, take, kind, cer, failed and kind == "stress"])
    takes = pd.DataFrame(rows, columns=["candidate", "sentence_id", "take", "set", "cer",
                                        "failure"])  # fmt: skip
    found = {c.metric: c for c in mc.comparisons(takes, None, ["other"], ["base"])}
    assert (found["cer"].n, found["cer"].difference) == (2, 0)  # the stress set left out
    assert (found["failure"].n, found["failure"].takes) == (3, 6)  # every take counts
    assert found["failure"].difference == pytest.approx(1 / 3)
