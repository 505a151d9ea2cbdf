"""The blind listening test without a browser: blinding, persistence, resume, summaries, panel."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import stats

from voicebook.evaluation.listening import panel as lp
from voicebook.evaluation.listening import results as lr
from voicebook.evaluation.listening import session as ls

CANDIDATES = ("base", "phase1", "phase2")
SENTENCES = {"s01": "Első mondat.", "s02": "Második mondat.", "s03": "Harmadik mondat."}
GOOD = {"smoothness": 7, "naturalness": 6, "emotion": 5, "overall": 8}


@pytest.fixture
def samples(tmp_path) -> list[ls.Sample]:
    wav = tmp_path / "beep.wav"
    sf.write(wav, 0.1 * np.sin(np.linspace(0, 2000, 8000)), 16000)
    return [ls.Sample(c, sid, text, wav) for sid, text in SENTENCES.items() for c in CANDIDATES]


@pytest.fixture
def ratings(tmp_path):
    return tmp_path / "exp" / "ratings.csv"


def rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_every_item_is_blinded_with_letters_and_shuffled_per_rater(ratings, samples):
    ann = ls.ListeningSession(ratings, "ann", samples)
    assert len(ann.trials) == 3
    for trial in ann.trials:
        assert list(trial.blind) == ["A", "B", "C"]
        assert sorted(s.candidate for s in trial.blind.values()) == sorted(CANDIDATES)
        assert {s.text for s in trial.blind.values()} == {trial.text}

    def order(session):
        return {t.item: [s.candidate for s in t.blind.values()] for t in session.trials}

    # the same rater always gets the same letters (so a returning rater is not confused) ...
    assert order(ls.ListeningSession(ratings, "ann", samples)) == order(ann)
    # ... other raters get other orders, and the letter A is not always the same candidate
    others = [order(ls.ListeningSession(ratings, name, samples)) for name in ("bob", "cy", "di")]
    assert any(o != order(ann) for o in others)
    firsts = {o[item][0] for o in [order(ann), *others] for item in SENTENCES}
    assert len(firsts) > 1


def test_each_rating_is_on_disk_at_once_and_earlier_bytes_are_never_rewritten(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples)
    trial, code = session.next()
    session.record_scores(trial, code, GOOD)
    first = ratings.read_bytes()  # read while the session is still open: nothing buffered
    [row] = rows(ratings)
    assert row["rater"] == "ann" and row["mode"] == "scores" and row["blind_code"] == code
    assert row["candidate"] == trial.blind[code].candidate and row["sentence"] == trial.text
    assert {s: int(row[s]) for s in ls.SCALES} == GOOD

    trial, code = session.next()
    session.record_scores(trial, code, GOOD | {"overall": 2})
    assert ratings.read_bytes().startswith(first)
    assert [int(r["overall"]) for r in rows(ratings)] == [8, 2]


def test_a_returning_rater_resumes_where_they_stopped(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples)
    rated = []
    for _ in range(4):
        trial, code = session.next()
        session.record_scores(trial, code, GOOD)
        rated.append((trial.item, trial.blind[code].candidate))

    again = ls.ListeningSession(ratings, " ann ", samples)  # a new kernel, same name
    assert again.progress() == (4, 9)
    todo = [(t.item, t.blind[c].candidate) for t, c in again.pending()]
    assert len(todo) == 5 and not set(todo) & set(rated)
    assert ls.ListeningSession(ratings, "bob", samples).progress() == (0, 9)

    while (upcoming := again.next()) is not None:
        again.record_scores(*upcoming, GOOD)
    assert again.progress() == (9, 9)
    assert len(rows(ratings)) == 9  # nothing rated twice


def test_a_foreign_ratings_file_is_refused_and_left_untouched(ratings, samples):
    ratings.parent.mkdir(parents=True)
    ratings.write_text("who,score\nann,9\n", encoding="utf-8")
    with pytest.raises(ls.RatingsFileError, match="move it aside"):
        ls.ListeningSession(ratings, "ann", samples)
    with pytest.raises(ls.RatingsFileError):
        ls.append_rating(ratings, {"rater": "ann"})
    assert ratings.read_text(encoding="utf-8") == "who,score\nann,9\n"


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_rating(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples)
    session.record_scores(*session.next(), GOOD)
    with open(ratings, "a", encoding="utf-8") as f:
        f.write("2026-01-01T00:00:00+00:00,ann,scores,s0")  # the kernel died mid-line
    torn = ratings.read_bytes()
    session.record_scores(*session.next(), GOOD)
    assert ratings.read_bytes().startswith(torn)
    good = [r for r in rows(ratings) if r["overall"]]
    assert len(good) == 2


def test_bad_scores_are_refused_and_nothing_is_written(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples)
    trial, code = session.next()
    with pytest.raises(ValueError, match="1-10"):
        session.record_scores(trial, code, GOOD | {"overall": 11})
    with pytest.raises(ValueError, match="missing"):
        session.record_scores(trial, code, {"overall": 5})
    with pytest.raises(ValueError, match="rater name"):
        ls.ListeningSession(ratings, "  ", samples)
    assert not ratings.exists()


def test_summary_gives_means_t_intervals_and_counts(ratings, samples):
    table = pd.DataFrame(
        [
            {"mode": "scores", "candidate": "base", "overall": 6, "smoothness": 4},
            {"mode": "scores", "candidate": "base", "overall": 8, "smoothness": 4},
            {"mode": "scores", "candidate": "base", "overall": 7, "smoothness": 4},
            {"mode": "scores", "candidate": "phase1", "overall": 9, "smoothness": None},
            {"mode": "ab", "candidate": "base", "overall": None},
        ],
        columns=ls.COLUMNS,
    )
    summary = lr.summarize(table).set_index(["candidate", "scale"])
    base = summary.loc[("base", "overall")]
    half_width = stats.t.ppf(0.975, 2) * (1 / math.sqrt(3))  # values 6, 8, 7: sem = 1/sqrt(3)
    assert base["mean"] == 7 and base["n"] == 3 and not base["below_minimum"]
    assert base["ci_low"] == pytest.approx(7 - half_width)
    assert base["ci_high"] == pytest.approx(7 + half_width)
    assert tuple(summary.loc[("base", "smoothness"), ["mean", "ci_low", "ci_high"]]) == (4, 4, 4)
    one = summary.loc[("phase1", "overall")]
    assert one["mean"] == 9 and one["n"] == 1 and math.isnan(one["ci_low"])
    assert one["below_minimum"]  # n=1 < 3: shown, marked, not used to decide
    two = pd.DataFrame(
        [{"mode": "scores", "candidate": "phase2", "overall": v} for v in (2, 10)],
        columns=ls.COLUMNS,
    )
    wide = lr.summarize(two).set_index(["candidate", "scale"]).loc[("phase2", "overall")]
    assert (wide["mean"], wide["ci_low"], wide["ci_high"]) == (6, 1, 10)  # t: -44.8 to 56.8
    assert ("phase1", "smoothness") not in summary.index
    assert list(lr.summarize(table).columns) == lr.SUMMARY_COLUMNS


def test_ab_mode_hides_pairs_and_records_preferences(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples, mode="ab")
    assert len(session.trials) == 9  # 3 sentences x 3 pairs
    assert all(list(t.blind) == ["A", "B"] for t in session.trials)
    trial, _ = session.next()
    session.record_preference(trial, "B")
    [row] = rows(ratings)
    assert row["preferred"] == trial.blind["B"].candidate
    assert {row["candidate"], row["other_candidate"]} == {s.candidate for s in trial.blind.values()}
    with pytest.raises(ValueError, match="Choose one of"):
        session.record_preference(session.next()[0], "C")
    while (upcoming := session.next()) is not None:
        session.record_preference(upcoming[0], "tie")
    assert ls.ListeningSession(ratings, "ann", samples, mode="ab").progress() == (9, 9)

    ab = lr.summarize_ab(ls.read_ratings(ratings)).set_index("candidate")
    winner, loser = trial.blind["B"].candidate, trial.blind["A"].candidate
    assert ab["comparisons"].tolist() == [6, 6, 6]
    assert ab.loc[winner, "wins"] == 1 and ab.loc[loser, "losses"] == 1
    assert ab.loc[winner, "win_rate"] == pytest.approx((1 + 0.5 * 5) / 6)
    assert lr.summarize(ls.read_ratings(ratings)).empty  # preferences are not 1-10 scores
    pair = lr.ab_pairs(ls.read_ratings(ratings))
    assert len(pair) == 3 and pair["comparisons"].tolist() == [3, 3, 3]
    won = pair[(pair["first"] == min(winner, loser)) & (pair["second"] == max(winner, loser))]
    wins = won[["first_wins", "second_wins"]].to_numpy().ravel().tolist()
    assert sorted(wins) == [0, 1] and won["ties"].item() == 2
    assert won["p_value"].item() == pytest.approx(1.0)  # one non-tied answer proves nothing


def _widgets(root, kind: str) -> list:
    """Every widget of class ``kind`` under ``root``, in display order."""
    found = [root] if root.__class__.__name__ == kind else []
    for child in getattr(root, "children", ()):
        found += _widgets(child, kind)
    return found


def _shown_text(panel) -> str:
    texts = []
    for kind in ("HTML", "Button", "ToggleButtons", "Audio", "Text"):
        for w in _widgets(panel, kind):
            texts += [getattr(w, k, "") for k in ("value", "description", "tooltip")]
            texts += list(getattr(w, "tooltips", ()) or ())
    shown = " ".join(t for t in texts if isinstance(t, str))
    return re.sub(r"src='data:[^']*'", "", shown)  # the audio itself, base64-encoded


def names_a_candidate(text: str) -> bool:
    return bool(re.search(rf"\b({'|'.join(CANDIDATES)})\b", text))


def test_panel_is_blind_unanchored_confirms_saves_and_acts_on_name_and_mode_at_once(
    ratings, samples
):
    panel = lp.listening_panel(ratings, samples)
    rater, mode = _widgets(panel, "Text")[0], _widgets(panel, "ToggleButtons")[0]
    _widgets(panel, "Button")[0].click()  # Start without a name
    assert "rater name" in _shown_text(panel) and not ratings.exists()
    rater.value = "ann"  # the name alone starts the session (Enter / leaving the field)
    scales = _widgets(panel, "ToggleButtons")[1:]
    assert [s.description for s in scales] == list(ls.SCALES)
    assert all(s.value is None for s in scales)  # unrated: nothing pre-set
    assert "1</b> = very poor" in _shown_text(panel) and "10</b> = excellent" in _shown_text(panel)
    save = next(b for b in _widgets(panel, "Button") if b.description == "Save and next")
    assert save.disabled
    for scale, value in zip(scales[:3], (3, 4, 5)):
        scale.value = value
    assert save.disabled and "overall left" in _shown_text(panel)
    scales[3].value = 6
    assert not save.disabled
    save.click()
    [row] = rows(ratings)
    assert row["rater"] == "ann" and [int(row[s]) for s in ls.SCALES] == [3, 4, 5, 6]
    shown = _shown_text(panel)
    assert "Saved at" in shown and "1 of 9 rated" in shown
    assert not names_a_candidate(shown)  # nothing names a candidate, no results
    assert all(s.value is None for s in _widgets(panel, "ToggleButtons")[1:])  # next: unrated
    players = [w.value for w in _widgets(panel, "HTML") if "<audio" in w.value]
    assert len(players) == 1 and "aria-label='Sample " in players[0]  # a named player

    rater.value = "bob"  # a new name acts at once: the next rating is bob's
    assert "Rating as <b>bob</b>" in _shown_text(panel) and "0 of 9 rated" in _shown_text(panel)
    stale = save  # a button of ann's sample, clicked after the name changed, saves nothing
    stale.click()
    assert len(rows(ratings)) == 1 and "Not saved" in _shown_text(panel)

    mode.value = "ab"  # so does the mode: the A/B pair is on screen without pressing Start
    better = next(b for b in _widgets(panel, "Button") if b.description == "B is better")
    better.click()
    assert [(r["rater"], r["mode"]) for r in rows(ratings)] == [("ann", "scores"), ("bob", "ab")]
    assert "Saved at" in _shown_text(panel) and "B is better" in _shown_text(panel)
    assert not names_a_candidate(_shown_text(panel))


def test_panel_without_samples_renders_and_says_what_to_do(ratings):
    panel = lp.listening_panel(ratings, [])
    assert _widgets(panel, "Button")[0].disabled and "run the evaluation" in _shown_text(panel)


def _chunks(data: bytes) -> list[bytes]:
    """The RIFF chunk ids of a WAV file's bytes."""
    ids, at = [], 12
    while at + 8 <= len(data):
        ids.append(data[at : at + 4])
        at += 8 + int.from_bytes(data[at + 4 : at + 8], "little") + (data[at + 4] & 1)
    return ids


def test_every_clip_of_a_sentence_plays_as_long_at_one_rate_without_tags(tmp_path):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, np.full(4000, 0.1, np.float32), 16000)  # 0.25 s
    with sf.SoundFile(long, "w", 22050, 2, format="WAV") as f:  # a real recording, tagged
        f.title, f.comment = "phase1_best_model_12", "/runs/phase1/best_model_12.pth"
        f.write(np.full((33075, 2), 0.2, np.float32))  # 1.5 s, stereo
    assert b"phase1" in long.read_bytes()
    data = [lp.player_bytes(w, 1.5) for w in (short, long)]
    for one in data:
        audio, rate = sf.read(io.BytesIO(one))
        assert (rate, audio.ndim, len(audio)) == (lp.PLAYER_RATE, 1, 1.5 * lp.PLAYER_RATE)
        assert _chunks(one) == [b"fmt ", b"data"] and b"phase1" not in one
    assert data[0][:44] == data[1][:44]  # one header: nothing in it tells the clips apart
    padded, _ = sf.read(io.BytesIO(data[0]))
    assert padded[:6000].mean() == pytest.approx(0.1, abs=2e-3) and not padded[6100:].any()
    alone, _ = sf.read(io.BytesIO(lp.player_bytes(short)))  # no length given: 1 s at least
    assert len(alone) == lp.PLAYER_RATE


def test_the_panel_shows_one_length_per_sentence_and_no_doubled_full_stop(tmp_path, ratings):
    wavs = [tmp_path / f"{i}.wav" for i in range(2)]
    for wav, frames in zip(wavs, (8000, 40000), strict=True):  # 0.5 s and 2.5 s of speech
        sf.write(wav, 0.1 * np.sin(np.linspace(0, 2000, frames)), 16000)
    samples = [ls.Sample(c, "s1", "Ki volt?", w) for c, w in zip(("a", "b"), wavs, strict=True)]
    panel = lp.listening_panel(ratings, samples, rater="ann")
    shown = []
    for _ in samples:
        html = " ".join(x.value for x in _widgets(panel, "HTML"))
        shown.append(re.findall(r"length of Sample \w'>([^<]*)<", html))
        assert re.search(r"Ki volt\?</i>( You|$)", panel.state.status.value)  # not "volt?."
        panel.state.rate(*panel.state.session.items()[panel.state.position], GOOD,
                         panel.state.render)  # fmt: skip
    assert shown == [["2.5 s"], ["2.5 s"]]
    assert lp.full_stop_after("Budapestet?") == lp.full_stop_after("volt.") == ""
    assert lp.full_stop_after("Szia") == "."


def _scores(rater, sentence, candidate, overall):
    return {"rater": rater, "mode": "scores", "sentence": sentence, "candidate": candidate,
            "smoothness": 5, "naturalness": 5, "emotion": 5, "overall": overall}  # fmt: skip


def test_a_slip_on_the_hidden_reference_costs_that_sentence_not_the_rater(ratings):
    given = [
        _scores("ann", "s1", "reference", 9), _scores("ann", "s1", "base", 3),
        _scores("ann", "s1", "phase1", 9),  # a tie with the real voice is not a slip
        _scores("ann", "s2", "base", 2),  # no reference on s2: does not count
        _scores("bob", "s1", "reference", 4), _scores("bob", "s1", "base", 2),
        _scores("bob", "s1", "phase1", 6),  # below phase1: bob slipped on s1
        _scores("bob", "s2", "reference", 9), _scores("bob", "s2", "phase1", 5),
        _scores("bob", "s3", "reference", 9), _scores("bob", "s3", "phase1", 7),
        _scores("cy", "s1", "base", 7),  # never heard the reference: not judged
    ]  # fmt: skip
    for row in given:
        ls.append_rating(ratings, row)
    table = ls.read_ratings(ratings)
    check = lr.reference_check(table).set_index("rater")
    assert list(check.index) == ["ann", "bob"]
    assert check.loc["ann", "sentences"] == 1 and check.loc["ann", "reference_overall"] == 9
    assert check.loc["ann", "candidates_overall"] == 6 and check.loc["ann", "slips"] == 0
    assert check.loc["bob", "slips"] == 1 and check.loc["bob", "slip_share"] == pytest.approx(1 / 3)
    assert not check.loc["bob", "excluded"]  # one slip never excludes a rater

    results = lr.listening_results(ratings)
    kept = results.summary.set_index(["candidate", "scale"])["n"]
    # bob's s1 ratings (reference, base, phase1) are left out, his s2 and s3 ratings are kept
    assert kept[("phase1", "overall")] == 3 and kept[("base", "overall")] == 3  # ann x2, cy
    assert kept[("reference", "overall")] == 3  # ann s1, bob s2, bob s3
    [left] = results.left_out.to_dict("records")
    assert left["rater"] == "bob" and left["sentence"] == "s1" and left["ratings"] == 3
    assert "below a synthesis" in left["reason"] and results.excluded == []
    every = lr.listening_results(ratings, exclude_slips=False)
    assert every.left_out.empty
    assert every.summary.set_index(["candidate", "scale"]).loc[("phase1", "overall"), "n"] == 4
    assert "Left out: 1" in results.headline()


def test_a_rater_who_slips_on_more_than_15_percent_and_more_than_once_is_left_out(ratings):
    for sentence in ("s1", "s2", "s3", "s4", "s5"):
        ref = 3 if sentence in ("s1", "s2") else 9  # 2 slips of 5 sentences: 40 %
        ls.append_rating(ratings, _scores("dan", sentence, "reference", ref))
        ls.append_rating(ratings, _scores("dan", sentence, "phase1", 6))
    ls.append_rating(ratings, _scores("eve", "s1", "phase1", 5))
    results = lr.listening_results(ratings)
    assert results.excluded == ["dan"]
    [left] = results.left_out.to_dict("records")
    assert left["sentence"] == lr.ALL_SENTENCES and left["ratings"] == 10
    assert "2 of 5 sentences (40%" in left["reason"]
    assert results.summary.set_index(["candidate", "scale"]).loc[("phase1", "overall"), "n"] == 1


def test_a_changed_rating_is_a_new_row_and_the_latest_counts(ratings, samples):
    session = ls.ListeningSession(ratings, "ann", samples)
    trial, code = session.next()
    session.record_scores(trial, code, GOOD)
    session.record_scores(trial, code, GOOD | {"overall": 2})  # went back and changed it
    on_disk = rows(ratings)
    assert [int(r["overall"]) for r in on_disk] == [8, 2]  # both rows kept
    assert session.given(trial, code)["overall"] == 2 and session.progress()[0] == 1
    results = lr.listening_results(ratings)
    overall = results.summary.set_index(["candidate", "scale"]).loc[
        (trial.blind[code].candidate, "overall")
    ]
    assert overall["n"] == 1 and overall["mean"] == 2
    assert "1 changed later" in results.headline()


def test_sign_test_of_a_clear_preference(ratings):
    for i in range(10):
        preferred = "phase2" if i < 9 else "phase1"
        ls.append_rating(ratings, {"rater": f"r{i}", "mode": "ab", "item": "s1:phase1|phase2",
                                   "sentence": "s1", "candidate": "phase1",
                                   "other_candidate": "phase2", "preferred": preferred})  # fmt: skip
    [pair] = lr.ab_pairs(ls.read_ratings(ratings)).to_dict("records")
    assert (pair["first"], pair["first_wins"], pair["second_wins"]) == ("phase1", 1, 9)
    assert (
        pair["p_value"]
        == pytest.approx(stats.binomtest(1, 10).pvalue)
        == pytest.approx(0.0215, abs=1e-4)
    )


def test_the_hidden_reference_is_scored_blind_but_kept_out_of_ab_pairs(ratings, samples):
    real = [ls.Sample(ls.REFERENCE, "s01", SENTENCES["s01"], samples[0].wav)]
    scores = ls.ListeningSession(ratings, "ann", samples + real)
    assert scores.progress() == (0, 10)
    trial = next(t for t in scores.trials if t.text == SENTENCES["s01"])
    assert list(trial.blind) == ["A", "B", "C", "D"]
    ab = ls.ListeningSession(ratings, "ann", samples + real, mode="ab")
    assert len(ab.trials) == 9  # the same 3 pairs per sentence as without it
    assert all(ls.REFERENCE not in t.item for t in ab.trials)


def test_listening_cells_refuse_until_the_parameters_cell_ran(tmp_path, monkeypatch):
    """A restarted kernel knows no experiment: the panel and the results cell say to run the
    parameters cell, open no other experiment and write nothing."""
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("VOICEBOOK_OUTPUTS", str(outputs))
    refused = lp.experiment_panel({})
    assert "Run the first code cell (parameters) first" in refused.value
    assert not hasattr(refused, "state")  # no panel, no samples, no session
    with pytest.raises(ls.ParametersNotRun, match="does not know the experiment"):
        lr.experiment_results({})
    assert not outputs.exists()
    panel = lp.experiment_panel({"experiment": "rt", "outputs_dir": ""})
    assert panel.state.ratings_path == outputs / "rt" / "ratings.csv"
    results = lr.experiment_results({"experiment": "other", "exclude_flagged_raters": True})
    assert results.ratings.empty and results.summary.empty and results.excluded == []


def test_ratings_record_which_audio_was_heard_and_new_audio_is_asked_again(tmp_path, ratings):
    wavs = {c: tmp_path / f"{c}.wav" for c in CANDIDATES}
    for i, wav in enumerate(wavs.values()):
        sf.write(wav, 0.1 * np.sin(np.linspace(0, 1000 * (i + 1), 8000)), 16000)
    samples = [ls.Sample(c, "s01", "Első mondat.", wavs[c]) for c in CANDIDATES]
    session = ls.ListeningSession(ratings, "ann", samples)
    while (step := session.next()) is not None:
        session.record_scores(*step, GOOD)
    heard = {r["candidate"]: r["audio"] for r in rows(ratings)}
    assert heard["phase1"] == ls.audio_id(wavs["phase1"]) and len(set(heard.values())) == 3
    # phase 1 re-trained and re-synthesised: only its new sample is pending again
    sf.write(wavs["phase1"], 0.2 * np.sin(np.linspace(0, 3000, 9000)), 16000)
    pending = ls.ListeningSession(ratings, "ann", samples).pending()
    assert [trial.blind[code].candidate for trial, code in pending] == ["phase1"]


def test_the_panel_goes_back_shows_what_was_given_and_saves_a_change_as_a_new_row(ratings, samples):
    panel = lp.listening_panel(ratings, samples)
    _widgets(panel, "Text")[0].value = "ann"

    def button(label):
        return next(b for b in _widgets(panel, "Button") if b.description == label)

    assert button("◀ Previous").disabled  # nothing before the first sample
    first = panel.state.position
    for scale, value in zip(_widgets(panel, "ToggleButtons")[1:], (3, 4, 5, 6)):
        scale.value = value
    button("Save and next").click()
    assert panel.state.position == first + 1 and "1 of 9 rated" in _shown_text(panel)
    button("◀ Previous").click()  # back to the rated sample: its values are shown
    assert panel.state.position == first
    scales = _widgets(panel, "ToggleButtons")[1:]
    assert [s.value for s in scales] == [3, 4, 5, 6] and "You rated this at" in _shown_text(panel)
    assert not names_a_candidate(_shown_text(panel))
    scales[3].value = 9
    button("Save and next").click()
    assert [int(r["overall"]) for r in rows(ratings)] == [6, 9]  # the change appended
    assert "1 of 9 rated" in _shown_text(panel)  # still one sample rated, now with 9
    while panel.state.position is not None:  # rate the rest; at the end, Previous still works
        for scale in _widgets(panel, "ToggleButtons")[1:]:
            scale.value = 5
        button("Save and next").click()
    assert "all 9 rated" in _shown_text(panel)
    button("◀ Previous").click()
    assert panel.state.position == 8


def test_the_dead_panel_is_disabled_keeps_keys_from_jupyterlab_and_says_what_to_do(tmp_path):
    """The browser test checks the behaviour; here, the pieces: the shield is the panel's last
    child, hidden while the kernel lives, and it takes the focus with shortcuts suppressed."""
    panel = lp.listening_panel(tmp_path / "ratings.csv", [])
    shield = panel.children[-1]
    assert "vb-shield-view" in shield._dom_classes and shield.value == lp.SHIELD
    assert 'tabindex="0" data-lm-suppress-shortcuts="true"' in lp.SHIELD
    assert (
        lp.KERNEL_GONE in lp.SHIELD
        and "run the first code cell (parameters), then this cell" in lp.KERNEL_GONE
    )
    assert lp.SHIELD.startswith('<div class="vb-shield" tabindex="0"')  # all of it takes focus
    style = lp.PANEL_STYLE
    assert ".vb-listening .vb-shield { display: none; }" in style
    assert "disconnected > :not(.vb-shield-view) {\n  opacity: .35; pointer-events: none" in style


# --- many raters, served pages: names, scales, tokens ----------------------------------------


@pytest.mark.parametrize("name", ["../eve", "a/b", "c\\d", "<b>x</b>", "-x", " ", "x" * 41])
def test_a_rater_name_that_could_be_a_path_or_markup_is_refused(ratings, samples, name):
    with pytest.raises(ValueError, match="rater name"):
        ls.ListeningSession(ratings, name, samples)
    assert not ratings.exists()


def test_a_rater_name_in_any_script_is_accepted(ratings, samples):
    for name in ("Éva Kovács", "O'Neil", "li_wei.2"):
        assert ls.ListeningSession(ratings, name, samples).rater == name


@pytest.mark.parametrize("value", [0, 11, 5.5, True, "7", None, -3])
def test_a_rating_off_the_scale_is_refused_where_it_is_saved(ratings, samples, value):
    session = ls.ListeningSession(ratings, "ann", samples)
    trial, code = session.next()
    with pytest.raises(ValueError, match="out of range"):
        session.record_scores(trial, code, GOOD | {"overall": value})
    assert not ratings.exists()
    session.record_scores(trial, code, GOOD | {"overall": np.int64(10)})  # numpy ints are fine
    assert rows(ratings)[0]["overall"] == "10"


def test_appends_from_many_threads_are_whole_rows_none_lost(ratings):
    from concurrent.futures import ThreadPoolExecutor

    def append(i: int) -> None:
        ls.append_rating(ratings, _scores(f"r{i % 4}", f"a long sentence, {i}", "phase1", 5))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(append, range(40)))
    written = rows(ratings)
    assert len(written) == 40 and {r["sentence"] for r in written} == {
        f"a long sentence, {i}" for i in range(40)
    }
    assert ratings.with_name("ratings.csv.lock").exists()  # every writer took the lock


def test_the_report_reads_the_ratings_on_disk_and_escapes_rater_names(ratings):
    from voicebook.core import html as page_html

    evaluation = {"eval_table": pd.DataFrame(), "listening_summary": pd.DataFrame()}  # stale
    assert lr.with_ratings_on_disk(evaluation, ratings.parent, {}) is evaluation  # no file yet
    for sentence in ("s1", "s2", "s3"):
        ls.append_rating(ratings, _scores("<b>eve</b>", sentence, "reference", 9))
        ls.append_rating(ratings, _scores("<b>eve</b>", sentence, "phase1", 4))
    fresh = lr.with_ratings_on_disk(evaluation, ratings.parent, {"exclude_flagged_raters": True})
    overall = lr.overall_by_candidate(fresh, ["phase1"]).set_index("candidate")
    assert overall.loc["phase1", "n"] == 3 and overall.loc["phase1", "overall_mean"] == 4
    shown = page_html.table(fresh["hidden_reference"])
    assert "&lt;b&gt;eve&lt;/" in shown and "<b>eve" not in shown
    assert lr.listening_results(ratings).headline().startswith("6 ratings from 1 rater on disk")
