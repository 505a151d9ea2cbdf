"""How sure the decision is: twins are indistinguishable for every seed, a clearly better
fine-tune wins by its intervals, a fine-tune that does not beat the base makes the report say
so and recommend the base with its best voice, and the report and decision.json carry it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_decision import fake_scraps

from voicebook.core.stages import checked
from voicebook.decision import matrix as dm
from voicebook.decision import report
from voicebook.decision.confidence import Paired
from voicebook.measures import stats

CLIPS, SENTENCES, TAKES = 8, 6, 3


def evidence(shifts: dict[str, dict[str, float]], seed: int = 0, noise: float = 0.01):
    """Per-clip losses and takes of ``shifts``' candidates: the base's values plus each
    candidate's shift per measure (and a little noise, none for a zero ``noise``)."""
    rng = np.random.default_rng(seed)
    base_mel = rng.normal(4.0, 0.3, CLIPS)
    keys = pd.MultiIndex.from_product([[f"s{i}" for i in range(SENTENCES)], range(1, TAKES + 1)])
    n = len(keys)
    base = {"cer": rng.uniform(0.05, 0.3, n), "speaker_similarity": rng.normal(0.6, 0.05, n),
            "mos": rng.normal(2.5, 0.2, n), "rate_error": rng.uniform(0, 0.3, n)}  # fmt: skip
    clips, takes = [], []
    for name, shift in shifts.items():
        jitter = (lambda size: rng.normal(0, noise, size)) if noise else (lambda size: 0)
        clips.append(pd.DataFrame({"candidate": name, "audio_file": [f"c{i}.wav" for i in
                     range(CLIPS)], "mel_ce": base_mel + shift.get("mel_ce", 0) + jitter(CLIPS),
                     "text_ce": 0.02}))  # fmt: skip
        frame = pd.DataFrame({"candidate": name, "sentence_id": keys.get_level_values(0),
                              "take": keys.get_level_values(1), "set": "test"})  # fmt: skip
        for metric, values in base.items():
            frame[metric] = values + shift.get(metric, 0) + jitter(n)
        for flag in ("runaway", "truncated", "skipped_or_repeated", "failure"):
            frame[flag] = rng.random(n) < 0.1
        takes.append(frame)
    return pd.concat(takes, ignore_index=True), pd.concat(clips, ignore_index=True)


def scraps_with(shifts, checkpoints, seed=0, noise=0.01, bootstrap_seed=stats.BOOTSTRAP_SEED):
    """fake_scraps whose evaluation holds ``shifts``' candidates, their takes and clips."""
    scraps = fake_scraps(phase2=False, ratings=False)
    takes, clips = evidence(shifts, seed, noise)
    mel = clips.groupby("candidate", sort=False)["mel_ce"].mean()
    sim = takes.groupby("candidate", sort=False)["speaker_similarity"].mean()
    scraps["03_evaluation"]["eval_table"] = pd.DataFrame({
        "candidate": list(shifts), "label": list(shifts), "checkpoint": checkpoints,
        "mel_ce": mel.tolist(), "text_ce": 0.02, "speaker_similarity": sim.tolist(), "split": "test",
    })  # fmt: skip
    scraps["03_evaluation"] |= {
        "eval_takes": takes, "eval_clip_losses": clips,
        "eval_settings": {"takes": TAKES, "reference_clips": ["wavs/train_000.wav"],
                          "bootstrap_seed": bootstrap_seed, "temperature": 0.65},
    }  # fmt: skip
    return scraps


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_twins_are_indistinguishable_on_every_measure_and_neither_is_preferred(seed):
    twins = {"base": {}, "phase1": {}}  # one checkpoint under two labels: the same takes
    scraps = scraps_with(twins, ["", "/x/phase1/run/best_model_400.pth"], seed, noise=0,
                         bootstrap_seed=seed)  # fmt: skip
    result = report.analyse_scraps("twins", scraps)
    d = result.decision
    assert d.winner == "base" and d.finetuning_beat_zero_shot is False
    assert {c["verdict"] for c in d.comparisons} == {stats.SAME}
    assert all(c["ci_low"] <= 0 <= c["ci_high"] for c in d.comparisons)
    assert {c["metric"] for c in d.comparisons} == {"mel_ce", "text_ce", "cer",
        "speaker_similarity", "mos", "rate_error", "failure"}  # fmt: skip
    assert any("indistinguishable on every measure" in r and "neither is preferred" in r
               for r in d.reasons)  # fmt: skip
    assert any(r.startswith("Fine-tuning did not beat zero-shot here") for r in d.reasons)


def test_a_clearly_better_fine_tune_wins_by_its_intervals():
    shifts = {"base": {}, "phase1": {"mel_ce": -1.7, "speaker_similarity": 0.1, "cer": -0.05}}
    result = report.analyse_scraps("better", scraps_with(shifts, ["", "/x/p1.pth"]))
    d = result.decision
    assert d.winner == "phase1" and d.finetuning_beat_zero_shot is True
    verdicts = {c["metric"]: c["verdict"] for c in d.comparisons if c["against"] == "base"}
    assert verdicts["mel_ce"] == verdicts["speaker_similarity"] == verdicts["cer"] == "better"
    mel = next(c for c in d.comparisons if c["metric"] == "mel_ce" and c["against"] == "base")
    assert mel["difference"] == pytest.approx(-1.7, abs=0.02) and mel["ci_high"] < 0
    assert mel["n"] == CLIPS and mel["unit"] == "clip"
    cer = next(c for c in d.comparisons if c["metric"] == "cer" and c["against"] == "base")
    assert (cer["n"], cer["takes"], cer["unit"]) == (SENTENCES, SENTENCES * TAKES, "sentence")
    assert any("better than base model" in r or "better than base" in r for r in d.reasons)


def test_when_fine_tuning_does_not_beat_zero_shot_the_base_ships_with_its_best_voice():
    shifts = {
        "base": {},
        "phase1": {"mel_ce": -1.7, "speaker_similarity": -0.1},  # lower Mel CE, worse voice
        "base-voice": {"speaker_similarity": 0.08},  # a searched voice on the base
    }
    scraps = scraps_with(shifts, ["", "/x/p1.pth", ""])
    d = report.analyse_scraps("zero-shot", scraps).decision
    assert d.finetuning_beat_zero_shot is False and d.winner == "base-voice"
    said = next(r for r in d.reasons if r.startswith("Fine-tuning did not beat zero-shot here"))
    assert "Recommend base-voice, the base with its best voice." in said
    assert any("distinguishably worse than base model on speaker similarity" in r or
               "distinguishably worse than base on speaker similarity" in r
               for r in d.reasons)  # fmt: skip


def test_without_takes_the_old_rules_decide_and_nothing_is_claimed():
    d = report.analyse_scraps("old", fake_scraps()).decision
    assert d.comparisons == [] and d.finetuning_beat_zero_shot is None
    assert Paired.from_evaluation(checked(fake_scraps()).evaluation) is None


def test_comparisons_are_against_the_base_and_the_winner():
    shifts = {"base": {}, "phase1": {"mel_ce": -1.7}, "other": {"mel_ce": -1.6}}
    d = report.analyse_scraps("lead", scraps_with(shifts, ["", "/x/p1.pth", "/x/o.pth"])).decision
    pairs = {(c["candidate"], c["against"]) for c in d.comparisons}
    assert pairs == {("phase1", "base"), ("other", "base"), ("base", d.winner),
                     ("other" if d.winner == "phase1" else "phase1", d.winner)}  # fmt: skip


def test_the_report_shows_how_sure_and_decision_json_carries_comparisons(tmp_path):
    shifts = {"base": {}, "phase1": {"mel_ce": -1.7, "speaker_similarity": 0.1}}
    result = report.analyse_scraps("shown", scraps_with(shifts, ["", "/x/p1.pth"]))
    page = report.render_report(result)
    assert "<h2>How sure</h2>" in page and 'id="how-sure-forest"' in page
    assert f"{SENTENCES} test sentences × {TAKES} takes = {SENTENCES * TAKES} takes" in page
    assert "over 8 held-out clips" in page and "wavs/train_000.wav" in page
    assert "<h3>Failures per 100 takes</h3>" in page
    record = report.decision_record(result)
    assert record["takes"] == TAKES and record["references"] == ["wavs/train_000.wav"]
    first = record["comparisons"][0]
    assert list(first)[:9] == ["candidate", "against", "metric", "n", "difference", "ci_low",
                               "ci_high", "win_rate", "verdict"]  # fmt: skip
    assert json.loads(json.dumps(record))["comparisons"] == record["comparisons"]
    dm.comparison_table(result.candidates, result.decision)  # the table still renders


def test_a_decision_withheld_on_stale_evidence_still_renders_how_sure():
    from voicebook.decision import sureness

    shifts = {"base": {}, "phase1": {"mel_ce": -1.7}}
    result = report.analyse_scraps("stale", scraps_with(shifts, ["", "/x/p1.pth"]))
    result.decision = dm.withhold(result.decision, ["The dataset was replaced."], ["evaluation"])
    assert sureness.comparison_frame(result.decision).empty
    assert sureness.forest(sureness.comparison_frame(result.decision), "base") is None
    page = report.render_report(result)
    assert "<h2>How sure</h2>" in page and "<h3>Failures per 100 takes</h3>" in page
