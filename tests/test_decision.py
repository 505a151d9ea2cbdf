"""The decision matrix: band edges, tiers, Text CE alarm, health blocking, listening tie-break,
missing evidence, and evidence gathered from stage scraps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from voicebook.decision.matrix import (
    CandidateEvidence,
    Thresholds,
    comparison_table,
    decide,
    gather_candidates,
    mel_band,
    missing_evidence,
    relative_gain,
    tier,
)

T = Thresholds()


def cand(name: str, mel: float | None, text: float | None = 0.02, **kw) -> CandidateEvidence:
    return CandidateEvidence(name, mel_ce=mel, text_ce=text, source="evaluation", **kw)


def curves(start: int, mel: list[float]) -> pd.DataFrame:
    """Eval and train curves, one row per split and step (steps continue from ``start``)."""
    rows = []
    for i, m in enumerate(mel):
        step = start + 100 * i
        rows.append([step, "eval", m, 0.02, m + 0.02, 2e-6, None])
        rows.append([step, "train", m - 0.3, 0.019, m - 0.28, 2e-6, 1.5])
    cols = ["step", "split", "loss_mel_ce", "loss_text_ce", "loss", "lr", "grad_norm"]
    return pd.DataFrame(rows, columns=cols)


def fake_scraps(
    *, phase2: bool = True, evaluation: bool = True, ratings: bool = True
) -> dict[str, dict]:
    """Scraps of an experiment as ``read_experiment`` returns them (see docs/stages.md)."""
    scraps = {
        "00_data_prep": {
            "dataset_card": {
                "minutes_total": 40.5,
                "n_train": 180,
                "n_eval": 20,
                "sources": {"quiz": {"clips": 80, "minutes": 15.2}, "interview": {"clips": 120}},
            },
            "n_train": 180,
            "n_eval": 20,
        },
        "01_phase1": {
            "stage": "phase1",
            "best_mel_ce": 2.9,
            "best_text_ce": 0.021,
            "best_step": 400,
            "best_checkpoint": "/x/phase1/run/best_model_400.pth",
            "curves": curves(100, [3.6, 3.2, 2.9]),
            "health": [{"step": 300, "kind": "lr", "severity": "info", "message": "lr ok"}],
        },
    }
    if phase2:
        scraps["02_phase2"] = {
            "stage": "phase2",
            "best_mel_ce": 2.6,
            "best_text_ce": 0.022,
            "best_step": 700,
            "best_checkpoint": "/x/phase2/run/best_model_700.pth",
            "parent_checkpoint": "/x/phase1/run/best_model_400.pth",
            "curves": curves(400, [2.8, 2.6, 2.7]),
            "health": [],
        }
    if evaluation:
        rows = [
            ["base", "base model", "", 4.0, 0.02, 0.71],
            ["phase1", "phase 1", "/x/phase1/run/best_model_400.pth", 2.8, 0.021, 0.82],
        ]
        if phase2:
            rows.append(["phase2", "phase 2", "/x/phase2/run/best_model_700.pth", 2.4, 0.022, 0.86])
        table = pd.DataFrame(
            rows,
            columns=["candidate", "label", "checkpoint", "mel_ce", "text_ce", "speaker_similarity"],
        ).assign(rtf=0.3, cer=None, n_sentences=5)
        listening = pd.DataFrame(columns=["candidate", "scale", "mean", "ci_low", "ci_high", "n"])
        if ratings:
            listening = pd.DataFrame(
                [
                    ["base", "overall", 3.0, 2.5, 3.5, 6],
                    ["phase1", "overall", 3.6, 3.1, 4.1, 6],
                    ["phase1", "naturalness", 1.0, 0.5, 1.5, 6],  # only "overall" counts
                    ["phase2", "overall", 4.1, 3.7, 4.5, 6],
                ],
                columns=listening.columns,
            )
        scraps["03_evaluation"] = {
            "eval_table": table,
            "codebook": {},
            "listening_summary": listening,
        }
    return scraps


# --- bands and tiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mel", "band"),
    [
        (1.0, "excellent"),
        (2.4999, "excellent"),
        (2.5, "improved"),  # every edge belongs to the worse band
        (2.9999, "improved"),
        (3.0, "marginal"),
        (3.4999, "marginal"),
        (3.5, "no improvement"),
        (9.0, "no improvement"),
        (None, None),
    ],
)
def test_mel_band_edges(mel, band):
    assert mel_band(mel, T) == band


@pytest.mark.parametrize(
    ("mel", "winner", "word"),
    [
        (2.4999, "phase1", "excellent"),
        (2.5, "phase1", "improved"),
        (2.9999, "phase1", "improved"),
        (3.0, "base", "marginal gain"),
        (3.4999, "base", "marginal gain"),
        (3.5, "base", "no improvement"),
    ],
)
def test_newer_phase_used_only_in_adopting_bands(mel, winner, word):
    d = decide([cand("base", 4.0), cand("phase1", mel)])
    assert d.winner == winner
    assert any(word in r for r in d.reasons)
    assert [v.status for v in d.verdicts] == (
        ["not chosen", "ship"] if winner == "phase1" else ["ship", "not chosen"]
    )


def test_newer_phase_in_good_band_but_worse_than_earlier_is_not_used():
    d = decide([cand("base", 4.0), cand("phase1", 2.2), cand("phase2", 2.45)])
    assert d.winner == "phase1"
    assert any("not lower than phase1" in r for r in d.reasons)


@pytest.mark.parametrize(
    ("mel", "text", "expected"),
    [
        (1.9999, 0.0249, "exceptional"),
        (2.0, 0.0249, "target"),
        (1.9999, 0.025, "target"),
        (2.4999, 0.0299, "target"),
        (2.5, 0.02, "minimum"),
        (2.9999, 0.0299, "minimum"),
        (3.0, 0.02, "below minimum"),
        (2.0, 0.03, "below minimum"),
        (2.0, None, None),
        (None, 0.02, None),
    ],
)
def test_tier_edges(mel, text, expected):
    assert tier(cand("c", mel, text), T) == expected


def test_overfitting_is_below_every_tier():
    assert tier(cand("c", 1.5, 0.01, overfitting=True), T) == "below minimum"


def test_winner_tier_and_checkpoint_reported():
    d = decide([cand("base", 4.0), cand("phase1", 1.8, 0.02, checkpoint="/m/best.pth")])
    assert (d.winner, d.tier, d.winner_checkpoint) == ("phase1", "exceptional", "/m/best.pth")
    assert d.reasons[-1] == "Recommendation: ship phase1 (/m/best.pth); tier: exceptional."


def test_relative_gain_over_previous_candidate():
    d = decide([cand("base", 4.0), cand("phase1", 3.0), cand("phase2", 2.7), cand("x", None)])
    gains = [v.gain for v in d.verdicts]
    assert gains[0] is None and gains[3] is None
    assert gains[1:3] == pytest.approx([0.25, 0.1])
    assert relative_gain(None, 2.0) is None and relative_gain(0.0, 2.0) is None


# --- Text CE, health, listening --------------------------------------------------------------


def test_text_ce_alarm_disqualifies():
    d = decide([cand("base", 4.0), cand("phase1", 2.0, text=0.04)])
    assert d.winner == "base"
    assert d.verdicts[1].status == "disqualified"
    assert any("disqualified" in r and "0.04" in r for r in d.reasons)


def test_when_even_the_fallback_fails_the_text_ce_alarm_nothing_is_ready_to_ship():
    d = decide([cand("base", 7.1, text=0.065), cand("phase1", 5.3, text=0.041)])
    # the least bad is the one best on the evidence (lower Mel CE and Text CE), not the fallback
    assert (d.winner, d.ready) == ("phase1", False)
    assert d.reasons[-1].startswith("Recommendation: ship nothing yet; the least bad option is")
    assert any("nothing here is ready to ship" in r and "0.065" in r for r in d.reasons)
    assert decide([cand("base", 4.0), cand("phase1", 2.0)]).ready is True


def test_text_ce_just_below_alarm_can_win_but_misses_every_tier():
    d = decide([cand("base", 4.0), cand("phase1", 2.0, text=0.0399)])
    assert (d.winner, d.tier) == ("phase1", "below minimum")
    assert d.verdicts[1].notes == ["Text CE 0.0399 is not below 0.03."]


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        ({"overfitting": True}, "flagged for overfitting"),
        ({"alarms": ["step 500: grad norm exploded"]}, "grad norm exploded"),
    ],
)
def test_flagged_candidate_cannot_win_on_mel_ce_alone(flags, phrase):
    d = decide([cand("base", 4.0), cand("phase1", 2.0, **flags)])
    assert d.winner == "base"
    assert any(phrase in r and "cannot win on Mel CE alone" in r for r in d.reasons)


@pytest.mark.parametrize(
    ("base_ears", "phase1_ears", "n", "winner"),
    [
        (3.0, 3.5, 3, "phase1"),  # listeners back it
        (3.0, 3.0, 3, "phase1"),  # heard as good as the earlier one: backed
        (3.5, 3.0, 3, "base"),  # listeners prefer the earlier one
        (3.0, 4.0, 2, "base"),  # too few ratings to count
    ],
)
def test_flagged_candidate_needs_listening_scores(base_ears, phase1_ears, n, winner):
    d = decide(
        [
            cand("base", 4.0, listening_mean=base_ears, listening_n=n),
            cand("phase1", 2.0, overfitting=True, listening_mean=phase1_ears, listening_n=n),
        ]
    )
    assert d.winner == winner


@pytest.mark.parametrize(
    ("ears1", "ears2", "winner"),
    [(4.0, 3.5, "phase1"), (3.5, 4.0, "phase2"), (4.0, 4.0, "phase2")],  # equal: numbers decide
)
def test_listening_breaks_ties_within_margin(ears1, ears2, winner):
    d = decide(
        [
            cand("base", 4.0),
            cand("phase1", 2.7, listening_mean=ears1, listening_n=5),
            cand("phase2", 2.65, listening_mean=ears2, listening_n=5),
        ]
    )
    assert d.winner == winner


@pytest.mark.parametrize(("phase2_mel", "winner"), [(2.5, "phase1"), (2.4375, "phase2")])
def test_listening_margin_edge_is_inclusive(phase2_mel, winner):
    """Mel CE 0.25 apart (exactly the margin) is a tie the ears break; 0.3125 apart is not."""
    t = Thresholds.from_dict({"listening_margin": 0.25})
    d = decide(
        [
            cand("base", 4.0),
            cand("phase1", 2.75, listening_mean=4.5, listening_n=5),
            cand("phase2", phase2_mel, listening_mean=3.0, listening_n=5),
        ],
        t,
    )
    assert d.winner == winner


def test_listening_can_lift_flagged_candidate_in_a_tie():
    d = decide(
        [
            cand("base", 4.0),
            cand("phase1", 2.7, listening_mean=3.0, listening_n=5),
            cand("phase2", 2.75, overfitting=True, listening_mean=4.0, listening_n=5),
        ]
    )
    assert (d.winner, d.tier) == ("phase2", "below minimum")
    assert any("only the listening scores can carry it" in r for r in d.reasons)


# --- speaker similarity and CER: tie-breakers and alarms -------------------------------------


def tie(sim1=None, sim2=None, cer1=None, cer2=None, **kw):
    """Phase 1 and phase 2 within the 0.1 Mel CE tie; phase 2 lower, in the 'improved' band."""
    return decide(
        [
            cand("base", 4.0, speaker_similarity=0.78, cer=0.13),
            cand("phase1", 2.65, speaker_similarity=sim1, cer=cer1),
            cand("phase2", 2.6, speaker_similarity=sim2, cer=cer2, **kw),
        ]
    )


def test_speaker_similarity_breaks_a_mel_ce_tie():
    d = tie(0.80, 0.84)
    assert d.winner == "phase2"
    assert d.reasons[-2] == (
        "phase2 and phase1 are within 0.1 Mel CE of each other (2.6 vs 2.65) and no listening "
        "scores separate them, so speaker similarity breaks the tie: phase2 0.84 vs phase1 0.8 "
        "(more than the 0.02 margin; higher is closer to the speaker) → use phase2."
    )
    worse = tie(0.80, 0.77)  # lower Mel CE, but further from the voice: keep phase 1
    assert worse.winner == "phase1" and worse.reasons[-2].endswith("→ keep phase1.")


def test_cer_breaks_the_tie_when_similarity_is_within_its_margin():
    d = tie(0.80, 0.81, cer1=0.12, cer2=0.08)
    assert d.winner == "phase2"
    assert "speaker similarity is within 0.02, so the character error rate breaks the tie: " \
        "phase2 0.08 vs phase1 0.12" in d.reasons[-2]  # fmt: skip
    assert tie(0.80, 0.81, cer1=0.12, cer2=0.15).winner == "phase1"
    assert tie(cer1=0.12, cer2=0.15).winner == "phase1"  # no similarity: CER alone


@pytest.mark.parametrize(
    ("sims", "cers"),
    [((0.80, 0.82), (None, None)), ((0.80, 0.78), (0.12, 0.14)), ((None, None), (None, None))],
)
def test_within_both_margins_mel_ce_decides_as_before(sims, cers):
    d = tie(*sims, *cers)  # 0.02 apart is not more than the margin
    assert d.winner == "phase2"
    assert d.reasons[-2].startswith("phase2 (eval Mel CE 2.6) is in the 'improved' band")


def test_listening_scores_come_before_similarity():
    d = decide(
        [
            cand("base", 4.0),
            cand("phase1", 2.65, speaker_similarity=0.90, listening_mean=3.0, listening_n=5),
            cand("phase2", 2.6, speaker_similarity=0.80, listening_mean=4.0, listening_n=5),
        ]
    )
    assert d.winner == "phase2" and "so the listening scores decide" in d.reasons[-2]


@pytest.mark.parametrize(
    ("similarity", "cer", "winner"),
    [
        (0.74, 0.10, "base"),  # 0.06 below the base's 0.80: alarm
        (0.75, 0.10, "phase1"),  # exactly 0.05 below: no alarm
        (0.80, 0.16, "base"),  # CER 0.06 above the base's 0.10: alarm
        (0.80, 0.15, "phase1"),  # exactly 0.05 above: no alarm
    ],
)
def test_a_similarity_drop_or_cer_rise_against_the_base_is_an_alarm(similarity, cer, winner):
    d = decide(
        [
            cand("base", 4.0, speaker_similarity=0.80, cer=0.10),
            cand("phase1", 2.4, speaker_similarity=similarity, cer=cer),
        ]
    )
    assert d.winner == winner
    alarms = [r for r in d.reasons if "(alarm above" in r]
    assert len(alarms) == (winner == "base")
    if winner == "base":
        assert "cannot win on Mel CE alone" in d.reasons[-2]
        assert alarms[0] in d.verdicts[1].notes


def test_alarm_sentences_name_the_numbers():
    d = decide(
        [
            cand("base", 4.0, speaker_similarity=0.80, cer=0.10),
            cand("phase1", 2.4, speaker_similarity=0.71, cer=0.18,
                 listening_mean=4.0, listening_n=5),
        ]
    )  # fmt: skip
    assert d.reasons[2] == (
        "phase1's speaker similarity 0.71 is 0.09 below base's 0.8 (alarm above a drop of "
        "0.05): its voice may have drifted from the speaker's."
    )
    assert d.reasons[3] == (
        "phase1's character error rate 0.18 is 0.08 above base's 0.1 (alarm above a rise of "
        "0.05): it reads the text less accurately."
    )
    assert d.winner == "base"  # the base has no listening scores: nothing backs phase 1


def test_margins_are_thresholds_and_cannot_be_negative():
    t = Thresholds.from_dict({"similarity_margin": 0.05, "cer_rise_alarm": 0.1})
    assert (t.similarity_margin, t.cer_margin, t.similarity_drop_alarm) == (0.05, 0.02, 0.05)
    with pytest.raises(ValueError, match="must be >= 0"):
        Thresholds(cer_margin=-0.01)


# --- thresholds ------------------------------------------------------------------------------


def test_thresholds_overrides_and_unknown_keys():
    t = Thresholds.from_dict({"mel_ce_excellent": "2.4", "min_ratings": 5})
    assert (t.mel_ce_excellent, t.min_ratings, t.mel_ce_improved) == (2.4, 5, 3.0)
    assert mel_band(2.45, t) == "improved"
    with pytest.raises(ValueError, match="valid keys are: mel_ce_excellent") as err:
        Thresholds.from_dict({"mel_excellent": 2.4})
    assert "'mel_excellent'" in str(err.value)
    with pytest.raises(ValueError, match="must be ordered"):
        Thresholds.from_dict({"mel_ce_excellent": 3.2})
    with pytest.raises(ValueError, match="must be numbers"):
        Thresholds.from_dict({"text_ce_max": "low"})


def test_decide_needs_unique_candidates():
    with pytest.raises(ValueError, match="at least one candidate"):
        decide([])
    with pytest.raises(ValueError, match="must be unique"):
        decide([cand("base", 4.0), cand("base", 3.0)])


def test_reasons_show_edge_values_unrounded():
    d = decide([cand("base", 4.0), cand("phase1", 2.4999)])
    assert "phase1 (eval Mel CE 2.4999) is in the 'excellent' band (below 2.5)" in d.reasons[2]


# --- evidence from scraps and missing data ---------------------------------------------------


def test_gather_prefers_evaluation_numbers():
    cs = gather_candidates(fake_scraps())
    assert [c.name for c in cs] == ["base", "phase1", "phase2"]
    assert [(c.mel_ce, c.source) for c in cs] == [
        (4.0, "evaluation"),
        (2.8, "evaluation"),
        (2.4, "evaluation"),
    ]
    assert [c.best_step for c in cs] == [None, 400, 700]
    assert [(c.listening_mean, c.listening_n) for c in cs] == [(3.0, 6), (3.6, 6), (4.1, 6)]
    d = decide(cs)
    assert (d.winner, d.tier) == ("phase2", "target")
    assert "same held-out set" in d.reasons[0]
    assert [c.cer for c in cs] == [None] * 3  # no ASR: no CER
    scraps = fake_scraps(ratings=False)
    scraps["03_evaluation"]["eval_table"]["cer"] = [0.1, 0.12, 0.2]
    cs = gather_candidates(scraps)
    assert [c.cer for c in cs] == [0.1, 0.12, 0.2]
    d = decide(cs)  # phase 2's CER is 0.1 above the base's: an alarm, and no listener backs it
    assert d.winner == "phase1" and "0.1 above base model's 0.1" in " ".join(d.reasons)
    assert comparison_table(cs, d)["cer"].tolist() == [0.1, 0.12, 0.2]


def test_missing_phase2():
    scraps = fake_scraps(phase2=False)
    cs = gather_candidates(scraps)
    assert [c.name for c in cs] == ["base", "phase1"]
    assert decide(cs).winner == "phase1"
    assert missing_evidence(scraps) == ["No phase 2 yet (02_phase2 has not run)."]


def test_missing_ratings_numbers_decide():
    scraps = fake_scraps(ratings=False)
    scraps["03_evaluation"]["eval_table"].loc[2, "mel_ce"] = 2.75  # within margin of phase 1
    cs = gather_candidates(scraps)
    assert all(c.listening_mean is None and c.listening_n == 0 for c in cs)
    assert decide(cs).winner == "phase2"
    assert missing_evidence(scraps) == [
        "No listening ratings yet: run the blind listening test in 03_evaluation."
    ]


def test_missing_evaluation_falls_back_to_training_numbers():
    scraps = fake_scraps(evaluation=False)
    cs = gather_candidates(scraps)
    assert [(c.name, c.mel_ce, c.text_ce, c.source) for c in cs] == [
        ("base", None, None, "none"),
        ("phase1", 2.9, 0.021, "training"),
        ("phase2", 2.6, 0.022, "training"),
    ]
    assert cs[2].checkpoint == "/x/phase2/run/best_model_700.pth"
    d = decide(cs)
    assert (d.winner, d.tier) == ("phase2", "minimum")
    assert d.reasons[0].startswith("No evaluation yet")
    assert any("No evaluation yet" in m for m in missing_evidence(scraps))


def test_stage_missing_from_eval_table_uses_training_numbers_and_says_so():
    scraps = fake_scraps()
    table = scraps["03_evaluation"]["eval_table"]
    scraps["03_evaluation"]["eval_table"] = table[table["candidate"] != "phase2"]
    cs = gather_candidates(scraps)
    assert [(c.name, c.source) for c in cs][-1] == ("phase2", "training")
    d = decide(cs)
    assert d.reasons[0].startswith("Mixed sources: phase 2 not in the evaluation table")
    assert "Numbers from training" in d.verdicts[2].notes[0]
    notes = comparison_table(cs, d)["notes"].tolist()
    assert notes == ["", "", "Numbers from training, not from the shared evaluation set."]


def test_nothing_run_yet_keeps_base_and_lists_everything_missing():
    cs = gather_candidates({})
    d = decide(cs)
    assert (d.winner, d.tier) == ("base", None)
    assert d.reasons[0] == "No candidate has been measured yet (no training or evaluation results)."
    missing = missing_evidence({})
    assert len(missing) == 4
    assert [m.split(" (")[0] for m in missing[:3]] == [
        "No data-prep results",
        "No phase 1 yet",
        "No phase 2 yet",
    ]


def test_evaluated_checkpoints_map_to_their_stage_and_health():
    scraps = fake_scraps()
    scraps["02_phase2"]["health"] = [
        {"step": 900, "kind": "overfitting", "severity": "warning", "message": "eval rising"}
    ]
    extra = pd.DataFrame(
        [
            ["ckpt-a", "", "/x/phase2/run/checkpoint_600.pth", 2.5, 0.02, 0.8],
            ["external", "", "/elsewhere/model.pth", 3.1, 0.02, 0.8],
            ["phase1_step200", "", "/y/model.pth", 3.3, 0.02, 0.8],
        ],
        columns=["candidate", "label", "checkpoint", "mel_ce", "text_ce", "speaker_similarity"],
    )
    table = scraps["03_evaluation"]["eval_table"]
    scraps["03_evaluation"]["eval_table"] = pd.concat([extra, table], ignore_index=True)
    cs = gather_candidates(scraps)
    order = ["base", "phase1_step200", "phase1", "ckpt-a", "phase2", "external"]
    assert [c.name for c in cs] == order
    by_name = {c.name: c for c in cs}
    assert by_name["ckpt-a"].overfitting and by_name["phase2"].overfitting
    assert not by_name["phase1"].overfitting and not by_name["external"].overfitting
    assert by_name["ckpt-a"].best_step == 600


def test_comparison_table_and_json_ready_decision():
    cs = gather_candidates(fake_scraps())
    d = decide(cs)
    table = comparison_table(cs, d)
    assert list(table["candidate"]) == ["base", "phase1", "phase2"]
    assert list(table["status"]) == ["not chosen", "not chosen", "ship"]
    assert table["gain_vs_previous"].tolist()[1:] == pytest.approx([0.3, 2.8 / 2.8 - 2.4 / 2.8])
    assert list(table["tier"]) == ["below minimum", "minimum", "target"]
    record = json.loads(json.dumps(d.to_dict()))
    assert record["winner"] == "phase2" and record["thresholds"]["mel_ce_excellent"] == 2.5
    assert [v["band"] for v in record["verdicts"]] == ["no improvement", "improved", "excellent"]


def test_a_subset_without_the_base_never_ships_the_unmeasured_base():
    """Issue 36: 03 scored phase 1 and a twin checkpoint, not the base. Both fail the Text CE
    alarm: the base, never evaluated, is not shipped; the least bad measured one is named."""
    scraps = fake_scraps()
    table = scraps["03_evaluation"]["eval_table"]
    table = table[table["candidate"] != "base"].reset_index(drop=True)
    table.loc[:, "text_ce"] = [0.045, 0.05]
    scraps["03_evaluation"]["eval_table"] = table
    cs = gather_candidates(scraps)
    assert (cs[0].name, cs[0].mel_ce, cs[0].source) == ("base", None, "none")
    d = decide(cs)
    assert d.winner != "base" and d.ready is False
    assert {v.candidate: v.status for v in d.verdicts}["base"] == "not chosen"
    assert any("the base was not evaluated; add it to `candidates`" in r for r in d.reasons)
    assert d.reasons[-1].startswith("Recommendation: ship nothing yet; the least bad option is")
    # a measured candidate that earns its place still ships; the unmeasured base never does
    table.loc[:, "text_ce"] = [0.021, 0.022]
    d = decide(gather_candidates(scraps))
    assert d.ready and d.winner in ("phase1", "phase2")
    assert {v.candidate: v.status for v in d.verdicts}["base"] != "ship"


def test_a_row_scored_on_a_replaced_phase_run_takes_nothing_from_the_new_run(tmp_path):
    """Issue 36: phase 1 ran again after the evaluation. Its comparison row keeps the scored
    checkpoint's step and no health of the new run; the LoRA-against-full table keeps the row
    with the scored run's costs (its status moved to history/) and says why it is stale."""
    from voicebook.decision.finetune_compare import finetune_table

    scraps = fake_scraps()
    scraps["01_phase1"]["best_checkpoint"] = "/x/phase1/run2/best_model_10.pth"
    scraps["01_phase1"]["best_step"] = 10
    scraps["01_phase1"]["health"] = [
        {"step": 9, "kind": "overfitting", "severity": "warning", "message": "eval rising"}
    ]
    phase1 = gather_candidates(scraps)[1]
    assert (phase1.name, phase1.best_step, phase1.overfitting) == ("phase1", 400, False)
    phase = tmp_path / "phase1"
    old_run, new_run = phase / "phase1-run1", phase / "phase1-run2"
    old_run.mkdir(parents=True), new_run.mkdir()
    (phase / "history" / "1").mkdir(parents=True)
    status = {"run_dir": str(old_run), "train_seconds": 120.0, "trained_weights": 5}
    (phase / "history" / "1" / "status.json").write_text(json.dumps(status))
    (phase / "status.json").write_text(json.dumps({"run_dir": str(new_run), "train_seconds": 9}))
    table = pd.DataFrame([{"candidate": "phase1", "checkpoint": str(old_run / "best_model_4.pth"),
                           "mel_ce": 6.7}])  # fmt: skip
    row = finetune_table(table, {"phase1": "phase 1 re-ran"}).iloc[0]
    assert (row["candidate"], row["minutes"], row["stale"]) == ("phase1", 2.0, "phase 1 re-ran")


def test_an_export_parity_verdict_is_reused_while_what_it_rests_on_is_unchanged(
    tmp_path, monkeypatch
):
    """A decision re-run reuses a verdict whose export, takes, job and versions are unchanged;
    a changed export, or a verdict that failed, is checked again (in a fresh process)."""
    from voicebook.decision import parity

    export, take = tmp_path / "phase1" / "export", tmp_path / "eval" / "s01.wav"
    export.mkdir(parents=True), take.parent.mkdir()
    (export / "model.pth").write_bytes(b"weights"), take.write_bytes(b"take one")
    job = {"candidate": "phase1", "export": str(export), "takes": [str(take)], "references": []}
    monkeypatch.setattr(parity, "parity_jobs", lambda experiment, evaluation: [job])
    checked, status = [], {"phase1": "identical"}

    def check_jobs(jobs):
        checked.append([j["candidate"] for j in jobs])
        return {
            j["candidate"]: {"status": status[j["candidate"]], "run": len(checked)} for j in jobs
        }

    monkeypatch.setattr(parity, "check_jobs", check_jobs)
    first = parity.check_exports(tmp_path, evaluation={})
    assert parity.check_exports(tmp_path, evaluation={}) == first == {
        "phase1": {"status": "identical", "run": 1}}  # fmt: skip
    assert checked == [["phase1"], []]
    (export / "model.pth").write_bytes(b"other weights")  # a new export: checked again
    assert parity.check_exports(tmp_path, evaluation={})["phase1"]["run"] == 3
    status["phase1"] = "failed"
    (export / "model.pth").write_bytes(b"weights again")
    parity.check_exports(tmp_path, evaluation={}), parity.check_exports(tmp_path, evaluation={})
    assert checked[-2:] == [["phase1"], ["phase1"]]  # a failed check is never reused
    assert len(json.loads((tmp_path / parity.VERDICTS_FILE).read_text())) == 1  # current only
