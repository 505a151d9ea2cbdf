"""Data prep: text and audio checks, subtitle cutting, the eval split, and whole builds from
small generated sources full of bad input (every item must land in train, eval or rejected)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from voicebook.core.html import esc
from voicebook.core.subtitles import parse_subtitles
from voicebook.dataprep import (
    DataPrepConfig,
    SourceError,
    SourceSpec,
    TextChecker,
    account,
    describe_sources,
    eval_split,
    normalise_text,
    prepare_dataset,
    rate_quality,
)
from voicebook.dataprep.audio import AudioProblem, decode, loudness
from voicebook.dataprep.card import card_page, show_voice_warnings, voice_warnings
from voicebook.dataprep.process import Clip
from voicebook.dataprep.segments import Cue, merge_short, split_long, split_text
from voicebook.dataprep.sources import Rejection, scan_source

SR = 22050
LETTERS = "abcdefghijklmnopqrstuvwxyzáéíóöőúüű0123456789.,?!-'"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small XTTS-style vocab: coqui's VoiceBpeTokenizer over a BPE with XTTS's specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=120,
        special_tokens=["[STOP]", "[UNK]", "[SPACE]", "[START]", "[hu]", "[en]"],
        initial_alphabet=list(LETTERS),
        show_progress=False,
    )
    bpe.train_from_iterator(["ez egy jó mondat", "kérdés és válasz"], trainer)
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    bpe.save(str(path))
    return VoiceBpeTokenizer(str(path))


def voice(seconds: float, sr: int = SR, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A speech-like tone (harmonics, gliding pitch, no inner pauses); ``seed`` varies it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr + rng.uniform(0, 6)
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (level * y / np.max(np.abs(y))).astype(np.float32)


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    return np.zeros(int(seconds * sr), np.float32)


def padded(y: np.ndarray, sr: int = SR) -> np.ndarray:
    return np.concatenate([silence(0.3, sr), y, silence(0.3, sr)])


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- text -------------------------------------------------------------------------------------


def test_normalise_text_composes_letters_and_drops_typography():
    decomposed = "Ko\u0308szo\u0308nto\u030b"  # "Köszöntő" with combining accents
    assert normalise_text(decomposed) == "Köszöntő"
    assert normalise_text("  „Jó  estét”\u00a0<i>kívánok</i>…\t") == "Jó estét kívánok..."
    assert normalise_text("a|b\u200bc") == "a b c"


def test_text_checker_reasons_and_token_count(tokenizer):
    checker = TextChecker(tokenizer, "hu")
    kind, problem, n = checker.check("Ez egy jó mondat.")
    assert kind is problem is None and n == len(tokenizer.encode("Ez egy jó mondat.", "hu"))
    assert checker.check("Ez жó mondat").kind == "unknown_characters"
    assert "empty" in checker.problem("")
    unknown = checker.problem("Ez жó mondat")
    assert "does not know" in unknown and "ж" in unknown
    assert "UTF-8" in checker.problem("K\ufffdrd\ufffds")
    long_text = "jó " * 80  # 240 characters: over XTTS's 224 for Hungarian
    assert "over XTTS's 224" in checker.problem(long_text)
    strict = TextChecker(tokenizer, "hu", max_tokens=5)
    assert "tokens, over XTTS's limit of 5" in strict.problem("Ez egy jó mondat.")


# --- subtitles and cutting ----------------------------------------------------------------------


def test_parse_srt_and_vtt():
    srt = (
        "1\n00:00:01,500 --> 00:00:03,250\nJó estét!\n\n2\n00:01:00,000 --> 00:01:02,5\nKét\nsor\n"
    )
    assert parse_subtitles(srt) == [(1.5, 3.25, "Jó estét!"), (60.0, 62.5, "Két sor")]
    vtt = (
        "WEBVTT\n\nNOTE egy megjegyzés\n\n"
        "intro\n00:01.000 --> 00:04.000 align:start\n<v Anna>Szia</v>\n\n"
        "01:00:00.000 --> 01:00:02.000\nVége\n"
    )
    assert parse_subtitles(vtt) == [(1.0, 4.0, "<v Anna>Szia</v>"), (3600.0, 3602.0, "Vége")]
    assert normalise_text(parse_subtitles(vtt)[0][2]) == "Szia"


def test_merge_short_joins_neighbours_within_gap_and_length():
    cues = [
        Cue(0.0, 1.0, "a", ("1",)),
        Cue(1.2, 2.0, "b", ("2",)),
        Cue(3.0, 8.0, "c", ("3",)),
        Cue(8.5, 9.0, "d", ("4",)),
        Cue(20.0, 21.0, "e", ("5",)),  # alone: 11 s from anything
    ]
    merged = merge_short(cues, min_seconds=2.0, max_seconds=10.0, max_gap=1.0)
    assert [(c.start, c.end, c.text, c.inputs) for c in merged] == [
        (0.0, 2.0, "a b", ("1", "2")),
        (3.0, 9.0, "c d", ("3", "4")),
        (20.0, 21.0, "e", ("5",)),
    ]


def test_split_text_prefers_sentence_end_near_the_pause():
    text = "Első mondat itt. Második mondat, és harmadik rész."
    assert split_text(text, 0.35) == ("Első mondat itt.", "Második mondat, és harmadik rész.")
    assert split_text("egyetlenszó", 0.5) is None


def test_split_long_cuts_at_the_longest_pause():
    y = np.concatenate([voice(4.0, seed=1), silence(0.2), voice(3.0, seed=2), silence(0.6),
                        voice(4.0, seed=3)])  # fmt: skip
    cue = Cue(0.0, y.size / SR, "Első rész, még első. Ez már a második rész.", ("cue 1",))
    parts = split_long(cue, y, SR, 2.0, 10.0, 40.0, 0.15)
    assert parts is not None and len(parts) == 2
    assert parts[0].end == pytest.approx(7.5, abs=0.05)  # middle of the 0.6 s pause
    assert [p.text for p in parts] == ["Első rész, még első.", "Ez már a második rész."]
    assert all(p.split and p.inputs == ("cue 1",) for p in parts)
    no_pause = voice(12.0)
    assert (
        split_long(Cue(0.0, 12.0, "Egy két három.", ("c",)), no_pause, SR, 2, 10, 40, 0.15) is None
    )


# --- audio ----------------------------------------------------------------------------------------


def test_decode_converts_stereo_and_rate(tmp_path):
    stereo = np.stack([voice(2.0, 44100), voice(2.0, 44100, seed=5)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 44100, subtype="PCM_16")
    decoded = decode(tmp_path / "s.wav", SR)
    assert decoded.samples.ndim == 1 and decoded.samples.dtype == np.float32
    assert decoded.samples.size == pytest.approx(2.0 * SR, abs=2)
    assert (decoded.original_rate, decoded.channels) == (44100, 2)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not audio"), "not readable as audio"),
        (lambda p: sf.write(p, np.full(SR, np.nan, np.float32), SR, subtype="FLOAT"), "NaN"),
    ],
)
def test_decode_rejects_bad_files(tmp_path, make, expected):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioProblem, match=expected):
        decode(path, SR)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_decode_rejects_truncated_files(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(path, voice(3.0), SR, format=fmt, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioProblem, match="truncated|not readable"):
        decode(path, SR)


def test_loudness_matches_pyloudnorm():
    rng = np.random.default_rng(4)
    signals = [
        padded(voice(3.0, seed=1)),
        np.concatenate([voice(2.0, seed=2, level=0.05), silence(1.5), voice(1.0, seed=3)]),
        rng.normal(0, 0.01, SR * 2).astype(np.float32),
        voice(0.55, seed=4),
    ]
    meter = pyloudnorm.Meter(SR)
    for y in signals:
        assert loudness(y, SR) == pytest.approx(
            meter.integrated_loudness(y.astype(float)), abs=1e-6
        )
    assert loudness(silence(1.0), SR) == float("-inf")


# --- split, accounting, rating --------------------------------------------------------------------


def clip(name: str, source: str = "s", category: str = "short", seconds: float = 3.0) -> Clip:
    return Clip(source, name, f"wavs/{name}.wav", name, "spk", seconds, "short", category, 5,
                -23.0, 0.0, False, name, (name,), (0,))  # fmt: skip


def test_eval_split_is_stratified_proportional_and_seeded():
    sizes = {"a": 50, "b": 30, "c": 15, "d": 5}
    clips = [clip(f"{k}{i}", category=k) for k, n in sizes.items() for i in range(n)]
    chosen = eval_split(clips, fraction=0.2, min_eval=4, seed=0)
    per_stratum = {k: sum(1 for name in chosen if name.startswith(f"wavs/{k}")) for k in sizes}
    assert per_stratum == {"a": 10, "b": 6, "c": 3, "d": 1}
    assert chosen == eval_split(list(reversed(clips)), 0.2, 4, seed=0)  # order-independent
    assert chosen != eval_split(clips, 0.2, 4, seed=1)


def test_eval_split_minimum_and_a_training_clip_per_stratum():
    clips = [clip(f"x{i}", source="quiz", category="question") for i in range(2)]
    clips += [clip(f"y{i}", source="talk", category="medium") for i in range(8)]
    chosen = eval_split(clips, fraction=0.02, min_eval=4, seed=3)
    assert len(chosen) == 4  # the minimum applies: 2 % of 10 rounds to 0
    assert sum(1 for name in chosen if "/x" in name) == 1  # one question clip stays in train
    assert eval_split(clips[:1], 0.02, 4, 0) == set()


def test_three_splits_are_disjoint_seeded_stratified_with_four_test_clips():
    from voicebook.dataprep.dataset import three_splits

    clips = [clip(f"q{i}", source="quiz", category="question") for i in range(20)]
    clips += [clip(f"t{i}", source="talk", category="medium") for i in range(80)]
    cfg = DataPrepConfig(workers=1)
    train, val, test = three_splits(clips, cfg)
    names = [{c.audio_file for c in part} for part in (train, val, test)]
    assert sum(map(len, names)) == len(set().union(*names)) == 100  # every clip once
    assert len(test) == 4 and len(val) == 4  # 2 % of 100 rounds to 2: the minimum, 4
    assert {c.source for c in test} == {c.source for c in val} == {"quiz", "talk"}
    again = three_splits(list(reversed(clips)), cfg)[2]
    assert {c.audio_file for c in again} == names[2]  # order-independent
    other = three_splits(clips, DataPrepConfig(workers=1, seed=5))[2]
    assert {c.audio_file for c in other} != names[2]
    few = three_splits(clips[:6], cfg)  # a tiny corpus: test takes at most a third
    assert [len(p) for p in few] == [2, 2, 2]


def test_account_finds_lost_and_doubled_inputs():
    train, evals = [clip("a")], [clip("b")]
    rejected = [Rejection("s", "c", "why", "kind", ("c",), (0,))]
    assert account(["a", "b", "c"], train, evals, rejected)["inputs"] == 3
    with pytest.raises(RuntimeError, match="not placed"):
        account(["a", "b", "c", "d"], train, evals, rejected)
    with pytest.raises(RuntimeError, match="placed twice"):
        account(["a", "b", "c"], train, evals + [clip("a")], rejected)


def test_quality_rating_applies_the_first_tier_that_holds():
    metrics = {
        "train_minutes": 12.0,
        "train_clips": 200,
        "eval_clips": 4,
        "question_share": 0.02,
        "categories_with_5pct": 3,
        "rejected_input_share": 0.05,
    }
    quality = rate_quality(metrics)
    assert quality["rating"] == "usable"
    failed = [r["metric"] for r in quality["tiers"][0]["rules"] if not r["passed"]]
    assert failed == ["train_minutes", "question_share", "categories_with_5pct"]
    assert rate_quality({**metrics, "train_clips": 0, "train_minutes": 0})["rating"] == "unusable"


# --- whole builds -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two small sources with every kind of bad input the stage must survive."""
    root = tmp_path_factory.mktemp("corpus")
    clips = root / "clips"
    clips.mkdir()
    write = lambda name, y, sr=SR, **kw: sf.write(clips / name, y, sr, **kw)
    ordinals = ["első", "második", "harmadik", "negyedik", "ötödik", "hatodik"]
    texts = {}
    for i, ordinal in enumerate(ordinals):
        texts[f"good_{i}.wav"] = f"Ez a {ordinal} jó mondat."
        write(f"good_{i}.wav", padded(voice(2.5 + i, seed=10 + i)))
    texts["good_5.wav"] = "Ez egy kérdés, ugye?"
    write("stereo.wav", np.stack([padded(voice(3.0, 44100, 20))] * 2, axis=1), 44100)
    write("low_rate.flac", padded(voice(3.5, 16000, 21)), 16000)
    write("float.wav", padded(voice(4.0, seed=22)), subtype="FLOAT")
    (clips / "zero.wav").write_bytes(b"")
    (clips / "notaudio.wav").write_text("hello")
    write("nan.wav", np.full(SR * 3, np.nan, np.float32), subtype="FLOAT")
    write("trunc.wav", padded(voice(3.0, seed=23)))
    (clips / "trunc.wav").write_bytes((clips / "trunc.wav").read_bytes()[:40000])
    write("orphan.wav", padded(voice(3.0, seed=24)))
    write("short.wav", padded(voice(1.0, seed=25)))
    write("long.wav", padded(voice(12.0, seed=26)))
    write("silent.wav", silence(3.0))
    write("hiss.wav", np.random.default_rng(0).normal(0, 1e-4, SR * 3).astype(np.float32))
    clipped = np.clip(padded(voice(3.0, seed=27, level=1.0)) * 4, -1, 1)
    write("clipped.wav", clipped)
    shutil.copy(clips / "good_1.wav", clips / "copy_of_good_1.wav")
    write("retake.wav", padded(voice(3.5, seed=28)))  # same text and length as good_1
    write("cyrillic.wav", padded(voice(3.0, seed=29)))
    write("mismatch.wav", padded(voice(6.0, seed=30)))
    write("no_text.wav", padded(voice(3.0, seed=31)))
    write("latin1.wav", padded(voice(3.0, seed=32)))
    write("wordy.wav", padded(voice(8.0, seed=33)))
    lines = ["audio_file|text|speaker_name"]
    lines += [f"{name}|{text}|anna" for name, text in texts.items()]
    lines += [
        "stereo.wav|Kétcsatornás felvétel.|",
        "low_rate|Kiterjesztés nélkül írt név.|",  # no extension: found as low_rate.flac
        "float.wav|Lebegőpontos minták.|",
        "zero.wav|Üres fájl.|",
        "notaudio.wav|Nem hang.|",
        "nan.wav|Hibás minták.|",
        "trunc.wav|Csonka fájl.|",
        "ghost.wav|Nincs ilyen fájl.|",
        "short.wav|Rövid.|",
        "long.wav|Ez a felvétel túl hosszú ahhoz, hogy egyben maradjon.|",
        "silent.wav|Csend.|",
        "hiss.wav|Csak zaj.|",
        "clipped.wav|Túlvezérelt hang.|",
        "copy_of_good_1.wav|Más szöveg, ugyanaz a hang.|",
        f"retake.wav|{texts['good_1.wav']}|",
        "cyrillic.wav|Ez жó mondat.|",
        "mismatch.wav|Igen.|",
        "no_text.wav||",
        "wordy.wav|" + "Ez egy nagyon hosszú mondat, " * 9 + "|",  # 260 characters once stripped
        "good_0.wav|Még egyszer.|",  # duplicate id
        "this line has no separator",
    ]
    raw = (
        "\n".join(lines).encode("utf-8") + b"\nlatin1.wav|K\xe9rd\xe9s latin-1 k\xf3dol\xe1sban.|\n"
    )
    (clips / "metadata.csv").write_bytes(raw)

    show = root / "show"
    show.mkdir()
    parts, cues, t = [silence(0.5)], [], 0.5

    def say(seconds: float, text: str, seed: int, gap: float = 0.5, y=None) -> None:
        nonlocal t
        y = voice(seconds, seed=seed) if y is None else y
        parts.extend([y, silence(gap)])
        cues.append((t, t + y.size / SR, text))
        t += y.size / SR + gap

    say(3.0, "Jó estét kívánok!", 40)
    say(1.0, "Szia.", 41, gap=0.3)  # short: merged with the next
    say(1.2, "Hogy vagy?", 42)
    say(4.0, "Melyik folyó a leghosszabb?", 43)
    with_pause = np.concatenate([voice(6.0, seed=44), silence(0.6), voice(5.0, seed=45)])
    say(0, "Ez egy hosszú rész az elején. Ez pedig a vége, ami még tart.", 0, y=with_pause)
    say(12.0, "Ez egy nagyon hosszú, szünet nélküli rész.", 46)
    say(3.0, "", 47)  # a cue without text
    sf.write(show / "ep1.flac", np.concatenate(parts), SR, format="FLAC")
    cues.append((t + 60, t + 63, "Ez a felirat a felvétel vége után jön."))
    vtt = "WEBVTT\n\n" + "\n".join(
        f"{a // 60:02.0f}:{a % 60:06.3f} --> {b // 60:02.0f}:{b % 60:06.3f}\n{text}\n"
        for a, b, text in cues
    )
    (show / "ep1.vtt").write_text(vtt, encoding="utf-8")
    sf.write(show / "ep2.flac", padded(voice(5.0, seed=48)), SR, format="FLAC")  # no subtitles
    (show / "ep3.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nSehol.\n", encoding="utf-8")
    return root


def config(corpus: Path, **kw) -> DataPrepConfig:
    sources = [{"name": "clips", "path": str(corpus / "clips")},
               {"name": "show", "path": str(corpus / "show")}]  # fmt: skip
    return DataPrepConfig(sources=sources, **{"workers": 1, **kw})


@pytest.fixture(scope="module")
def built(corpus, tokenizer, tmp_path_factory):
    before = fingerprint(corpus)
    out = tmp_path_factory.mktemp("exp") / "dataset"
    result = prepare_dataset(config(corpus), out, tokenizer, progress=False)
    assert fingerprint(corpus) == before, "source files must never change"
    return result


EXPECTED_REJECTIONS = {  # item (start of) -> words of the reason
    "zero.wav": "empty file",
    "notaudio.wav": "not readable as audio",
    "nan.wav": "NaN",
    "trunc.wav": "truncated",
    "ghost.wav": "audio file not found",
    "orphan.wav": "no transcript",
    "short.wav": "too short",
    "long.wav": "too long",
    "silent.wav": "silent",
    "hiss.wav": "near-silent",
    "clipped.wav": "clipped",
    "copy_of_good_1.wav": "duplicate of clips: good_1.wav (metadata.csv line 3) (same audio)",
    "retake.wav": "(same text, duration within 0.1 s)",
    "cyrillic.wav": "does not know: 'ж'",
    "mismatch.wav": "text does not fit the audio",
    "no_text.wav": "empty transcript",
    "wordy.wav": "transcript is 260 characters, over XTTS's 224 for 'hu'",
    "good_0.wav (metadata.csv line 27)": "duplicate id: good_0.wav is already listed on line 2",
    "this line has no separator": "not 'file|text'",
    "latin1.wav": "not valid UTF-8 (byte 0xe9",
    "ep2.flac": "no transcript: no ep2.srt or ep2.vtt",
    "ep3.srt": "no recording named like this subtitle file",
}


def test_every_bad_item_is_rejected_with_its_reason(built):
    reasons = {r.item: r.reason for r in built.rejected}
    for item, words in EXPECTED_REJECTIONS.items():
        match = [reason for name, reason in reasons.items() if name.startswith(item)]
        assert len(match) == 1 and words in match[0], (item, match)
    show = [r for r in built.rejected if r.source == "show"]
    assert any("too long" in r.reason and "no pause" in r.reason for r in show)
    assert any("has no text" in r.reason for r in show)
    assert any("after the recording ends" in r.reason for r in show)
    rows = (built.dataset_dir / "rejected.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "source,item,reason" and len(rows) == len(built.rejected) + 1


def test_usable_items_are_kept_converted_and_within_xtts_limits(built):
    kept = {c.item.split(" (")[0]: c for c in built.train + built.eval + built.test}
    for name in ["good_0.wav", "good_1.wav", "stereo.wav", "low_rate.flac", "float.wav"]:
        assert name in kept
    assert kept["good_0.wav"].speaker == "anna" and kept["stereo.wav"].speaker == "speaker"
    assert kept["good_5.wav"].category == "question" and kept["good_5.wav"].band == "long"
    meter = pyloudnorm.Meter(SR)
    for c in built.train + built.eval + built.test:
        y, sr = sf.read(built.dataset_dir / c.audio_file, dtype="float32")
        info = sf.info(built.dataset_dir / c.audio_file)
        assert (sr, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert 2.0 <= y.size / sr <= 10.0 and y.size <= 255995
        assert meter.integrated_loudness(y) == pytest.approx(-23.0, abs=0.5)
        assert np.max(np.abs(y)) <= 10 ** (-1 / 20) + 1e-3
        assert y.size / sr == pytest.approx(c.duration, abs=1e-3)
    # 0.3 s of silence either side trimmed to the 50 ms margins (+ up to a 1024-sample frame)
    assert kept["good_0.wav"].duration == pytest.approx(2.5 + 0.1, abs=0.08)


def test_subtitles_are_merged_and_split(built):
    show = {c.text: c for c in built.train + built.eval + built.test if c.source == "show"}
    assert "Szia. Hogy vagy?" in show  # two short cues merged
    assert show["Szia. Hogy vagy?"].category == "question"
    first, second = show["Ez egy hosszú rész az elején."], show["Ez pedig a vége, ami még tart."]
    assert first.split and second.split
    # each part: its speech plus the trim margins (0.05 s + up to a frame each side)
    assert first.duration == pytest.approx(6.0 + 0.1, abs=0.1)
    assert second.duration == pytest.approx(5.0 + 0.1, abs=0.1)


def test_every_input_lands_in_exactly_one_place(built):
    inventory = [i for s in built.sources for i in s.inventory]
    card = built.card
    acc = card["accounting"]
    assert acc["inputs"] == len(inventory) == len(set(inventory))
    placed = ("inputs_in_train", "inputs_in_eval", "inputs_in_test", "inputs_in_rejected")
    assert sum(acc[k] for k in placed) == len(inventory)
    assert acc["inputs_split_into_parts"] == 1  # the cue cut at its pause
    lines = [i for i in inventory if i.startswith("clips:metadata.csv line")]
    assert len(lines) == 28  # every non-empty, non-header line of metadata.csv
    assert "clips:orphan.wav" in inventory and "show:ep1.vtt cue 7" in inventory


def test_metadata_files_load_with_coqui_formatter(built):
    from TTS.tts.datasets.formatters import coqui

    root = str(built.dataset_dir)
    train = coqui(root, "metadata_train.csv")
    evals = coqui(root, "metadata_eval.csv")
    tests = coqui(root, "metadata_test.csv")
    assert len(train) == len(built.train) and len(evals) == len(built.eval) >= 4
    assert len(tests) == len(built.test) >= 4  # three splits, at least 4 test clips by default
    assert {Path(s["audio_file"]).name for s in train + evals + tests} == {
        p.name for p in (built.dataset_dir / "wavs").iterdir()
    }
    header = (built.dataset_dir / "metadata_train.csv").read_text().splitlines()[0]
    assert header == "audio_file|text|speaker_name"


def test_card_counts_agree_with_the_files(built):
    card = json.loads((built.dataset_dir / "card.json").read_text(encoding="utf-8"))
    assert card == json.loads(json.dumps(built.card))
    totals = card["totals"]
    assert totals["clips"] == len(built.train) + len(built.eval) + len(built.test)
    assert totals["test_clips"] == len(built.test) and card["test"]["min_test"] == 4
    assert totals["rejected"] == len(built.rejected)
    table = card["categories"]["table"]
    assert sum(r["clips"] for r in table) == totals["clips"]
    assert sum(r["eval"] for r in table) == totals["eval_clips"] == len(built.eval)
    assert card["rejections"]["by_kind"]["duplicate"] == 2
    assert card["quality"]["rating"] == "thin"  # under a minute of audio
    html = (built.dataset_dir / "card.html").read_text(encoding="utf-8")
    assert "Clip durations per source" in html and "plotly" in html and "ghost.wav" in html


def test_rebuild_is_byte_identical_and_parallel_matches(built, corpus, tokenizer):
    first = fingerprint(built.dataset_dir)
    again = prepare_dataset(config(corpus, workers=2), built.dataset_dir, tokenizer, progress=False)
    assert fingerprint(again.dataset_dir) == first


def test_unusable_sources_stop_with_the_path_and_fix(tmp_path, tokenizer):
    def build(sources):
        return prepare_dataset(
            DataPrepConfig(sources=sources, workers=1), tmp_path / "d", tokenizer, progress=False
        )

    with pytest.raises(SourceError, match=f"{tmp_path / 'nowhere'} does not exist"):
        build([{"name": "x", "path": str(tmp_path / "nowhere")}])
    (tmp_path / "bare").mkdir()
    with pytest.raises(SourceError, match="holds no audio .* no metadata.csv and no .srt/.vtt"):
        build([{"name": "x", "path": str(tmp_path / "bare")}])
    sf.write(tmp_path / "bare" / "a.wav", voice(3.0), SR)
    with pytest.raises(SourceError, match="no .*metadata.csv. Add it"):
        build([{"name": "x", "path": str(tmp_path / "bare"), "kind": "metadata"}])
    with pytest.raises(ValueError, match="unknown keys"):
        build([{"name": "x", "path": "y", "colour": "red"}])
    bare = str(tmp_path / "bare")
    sources = [{"name": "x", "path": bare}, {"name": "y", "path": str(tmp_path / "nowhere")}]
    shown = describe_sources(DataPrepConfig(sources=sources))
    assert "does not exist" in shown[1]["problem"] and shown[1]["kind"] == ""
    # audio alone is a source to transcribe ("auto" finds it)
    assert [shown[0][k] for k in ("kind", "audio files", "problem")] == ["untranscribed", 1, ""]
    assert shown[0]["transcripts"] == "none: speech recognition (base)"


def test_a_foreign_dataset_folder_is_never_deleted(tmp_path, corpus, tokenizer):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "my_notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not made by the data-prep stage"):
        prepare_dataset(config(corpus), target, tokenizer, progress=False)
    assert (target / "my_notes.txt").read_text() == "mine"


def _espeak(text: str) -> np.ndarray:
    cmd = ["espeak-ng", "-v", "hu", "--stdout", text]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    assert sr == SR
    return y


@pytest.mark.slow  # speech recognition of spoken audio
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for speech")
def test_untranscribed_audio_is_reported_or_transcribed(tmp_path, tokenizer):
    folder = tmp_path / "raw"
    folder.mkdir()
    y = np.concatenate([silence(0.5), _espeak("Jó estét kívánok mindenkinek, kedves nézők."),
                        silence(1.5), _espeak("Kezdjük is az első fordulóval, figyeljenek."),
                        silence(0.5)])  # fmt: skip
    sf.write(folder / "talk.flac", y, SR)
    sources = [{"name": "raw", "path": str(folder), "kind": "untranscribed"}]
    cfg = DataPrepConfig(sources=sources, workers=1, min_eval=1, asr_model="")
    report = prepare_dataset(cfg, tmp_path / "a", tokenizer, progress=False)
    assert report.train == [] and len(report.rejected) == 1
    assert "no transcript: 2 speech clips" in report.rejected[0].reason
    assert "set asr_model (e.g. 'base'" in report.rejected[0].reason
    heard = prepare_dataset(  # the default: Whisper base, offline
        replace(cfg, asr_model="base"), tmp_path / "b", tokenizer, progress=False
    )
    assert len(heard.train) + len(heard.eval) == 2 and heard.rejected == []
    assert heard.card["accounting"]["inputs"] == 2
    from voicebook.measures.text import character_error_rate

    said = "Jó estét kívánok mindenkinek, kedves nézők. Kezdjük is az első fordulóval, figyeljenek."
    texts = " ".join(c.text for c in sorted(heard.train + heard.eval, key=lambda c: c.order))
    # Whisper base (int8) on espeak-ng's Hungarian: 0.33 with Debian 12's espeak-ng 1.51; a
    # recogniser that hears nothing, or another language, scores near 1.
    assert character_error_rate(said, texts) < 0.4, texts


DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.mark.skipif(not (DEMO / "interview" / "metadata.csv").is_file(), reason="no demo corpus")
def test_demo_corpus_builds_with_every_clip_in_limits(tokenizer, tmp_path):
    result = prepare_dataset(DataPrepConfig(workers=2), tmp_path / "dataset", tokenizer,
                             progress=False)  # fmt: skip
    card = result.card
    assert card["accounting"]["every_input_placed"]
    assert {s["kind"] for s in card["sources"]} == {"metadata", "subtitles"}
    assert card["totals"]["eval_clips"] == 4  # the minimum: 2 % of the demo is ~2 clips
    assert all(2.0 <= c.duration <= 10.0 for c in result.train + result.eval)
    assert {c.source for c in result.eval} <= {"quiz", "interview"}
    assert all(r.reason.startswith("too short") for r in result.rejected)


def test_headerless_and_ljspeech_metadata_are_read(tmp_path):
    folder = tmp_path / "lj"
    (folder / "wavs").mkdir(parents=True)
    for name in ["a", "b"]:
        sf.write(folder / "wavs" / f"{name}.wav", voice(2.5), SR)
    (folder / "metadata.csv").write_text(
        "a|Első nyers szöveg|Első normalizált szöveg\r\nb|Második nyers|\r\n", encoding="utf-8"
    )
    spec = SourceSpec.from_dict({"name": "lj", "path": str(folder)})
    scanned = scan_source(spec, 0, DataPrepConfig(sources=[]))
    assert scanned.kind == "metadata" and scanned.rejections == []
    assert [(j.path.name, j.text) for j in scanned.jobs] == [
        ("a.wav", "Első normalizált szöveg"),  # LJSpeech: the normalized column
        ("b.wav", "Második nyers"),  # ... or the raw one when it is empty
    ]
    (folder / "metadata.csv").write_text("b.wav|Sima.\nwavs/a.wav|Egy | kettő\n", encoding="utf-8")
    scanned = scan_source(spec, 0, DataPrepConfig(sources=[]))
    # the first line makes it file|text: a later '|' belongs to the text
    assert [j.text for j in scanned.jobs] == ["Sima.", "Egy kettő"]


def test_an_unexpected_error_rejects_the_item_not_the_run(tmp_path, tokenizer, monkeypatch):
    from voicebook.dataprep import process

    folder = tmp_path / "c"
    folder.mkdir()
    for name in ["ok", "boom"]:
        sf.write(folder / f"{name}.wav", padded(voice(3.0, seed=len(name))), SR)
    (folder / "metadata.csv").write_text("ok.wav|Ez egy jó mondat.\nboom.wav|Kérdés és válasz.\n")
    real, calls = process.normalise, []

    def explode(*args):  # the first clip to be normalised fails
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("simulated")
        return real(*args)

    monkeypatch.setattr(process, "normalise", explode)
    cfg = DataPrepConfig(sources=[{"name": "c", "path": str(folder)}], workers=1, min_eval=1)
    result = prepare_dataset(cfg, tmp_path / "d", tokenizer, progress=False)
    assert len(result.train) + len(result.eval) == 1
    assert "could not be processed (FloatingPointError: simulated)" in result.rejected[0].reason
    assert len(list((tmp_path / "d" / "wavs").iterdir())) == 1


# --- speech recognition: untranscribed interviews -----------------------------------------------

# An interview in turns: the speaker's sentences (kept) and an interviewer's questions (another
# espeak-ng voice, rejected). Sentences are long enough (> 2 s) to be one clip each.
INTERVIEWS = {
    "en": {
        "voices": ("en+m3", "en+f2"),
        "speaker": [
            "The weather was lovely this morning, so we walked to the market.",
            "I bought fresh bread and a few apples for the week.",
            "Later we met some old friends near the river.",
            "They told us about their long trip across the mountains.",
        ],
        "interviewer": [
            "What did you buy there?",
            "And who did you meet after that?",
            "Where did they go?",
        ],
        "max_cer": 0.1,
    },
    "hu": {
        "voices": ("hu+m3", "hu+f2"),
        "speaker": [
            "Reggel szép idő volt, ezért elsétáltunk a piacra.",
            "Vettem friss kenyeret és néhány almát a hétre.",
            "Később régi barátokkal találkoztunk a folyó mellett.",
            "Meséltek nekünk a hosszú útjukról a hegyeken át.",
        ],
        "interviewer": ["Mit vettél ott?", "És kivel találkoztál utána?", "Hová utaztak?"],
        "max_cer": 0.3,
    },
}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for speech")
def test_two_voices_in_equal_shares_warn_with_each_share_and_an_example_clip(tmp_path, tokenizer):
    """Two recordings of the same sentences by two voices, as a new user tried it: one voice
    is kept, and the card and the notebook say that it was no majority, and how to choose."""
    spec = INTERVIEWS["en"]
    folder = tmp_path / "raw"
    folder.mkdir()
    # two clearly different espeak-ng voices (the interview's two are too alike once Whisper's
    # cuts add their pauses: all six clips pass the 0.75 threshold as one voice)
    for name, voice_name in zip(("one.wav", "two.wav"), ("en+m3", "en-us+f3")):
        parts = [silence(0.5)]
        for sentence in spec["speaker"][:3]:
            parts += [_say(voice_name, sentence), silence(0.8)]
        sf.write(folder / name, np.concatenate(parts), SR)
    cfg = DataPrepConfig(sources=[{"name": "pair", "path": str(folder)}], language="en",
                         workers=1, min_eval=1, min_test=1)  # fmt: skip
    result = prepare_dataset(cfg, tmp_path / "exp" / "dataset", tokenizer, progress=False)
    voices = result.card["asr"]["sources"]["pair"]["voices"]
    assert [v["clips"] for v in voices] == [3, 3]
    assert all(0.4 <= v["share"] <= 0.6 for v in voices)
    assert {v["example"].split()[0] for v in voices} == {"one.wav", "two.wav"}
    for v in voices:  # each example is a clip of its voice, ready for speaker_reference
        assert sf.info(v["example_file"]).duration > 1.5
    (warning,) = voice_warnings(result.card)
    assert "no voice holds a clear majority" in warning and "speaker_reference" in warning
    for v in voices:
        assert f"voice {v['voice']}" in warning and f"{v['share']:.0%}" in warning
        assert v["example_file"] in warning
    assert esc(warning) in card_page(result.card)  # the card shows it too
    shown = show_voice_warnings(result.card)  # and the notebook, with each example to play
    assert shown == [(warning, [v["example_file"] for v in voices])]
    # naming the rejected voice's example as the reference keeps that voice instead
    other = next(v for v in voices if not v["kept"])
    again = prepare_dataset(replace(cfg, speaker_reference=[other["example_file"]]),
                            tmp_path / "again" / "dataset", tokenizer, progress=False)  # fmt: skip
    kept = {c.inputs[0].split(":")[1].split()[0] for c in again.train + again.eval + again.test}
    assert kept == {other["example"].split()[0]}


def _say(voice_name: str, text: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice_name, "--stdout", text], check=True,
                         capture_output=True).stdout  # fmt: skip
    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    assert sr == SR
    return y


def interview(language: str) -> np.ndarray:
    """The speaker's sentences with the interviewer's questions between them, 0.8 s apart."""
    spec = INTERVIEWS[language]
    parts = [silence(0.5)]
    for i, sentence in enumerate(spec["speaker"]):
        parts += [_say(spec["voices"][0], sentence), silence(0.8)]
        if i < len(spec["interviewer"]):
            parts += [_say(spec["voices"][1], spec["interviewer"][i]), silence(0.8)]
    return np.concatenate(parts)


@pytest.mark.slow  # speech recognition of spoken audio
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for speech")
@pytest.mark.parametrize("language", ["en", "hu"])
def test_an_untranscribed_interview_becomes_the_speakers_clips(tmp_path, tokenizer, language):
    from voicebook.measures.text import character_error_rate

    spec = INTERVIEWS[language]
    folder = tmp_path / "raw"
    folder.mkdir()
    sf.write(folder / "talk.flac", interview(language), SR)
    sources = [{"name": "talk", "path": str(folder)}]  # auto: audio only -> speech recognition
    cfg = DataPrepConfig(sources=sources, language=language, workers=1, min_eval=1, min_test=1)
    result = prepare_dataset(cfg, tmp_path / "exp" / "dataset", tokenizer, progress=False)
    kept = sorted(result.train + result.eval + result.test, key=lambda c: c.order)
    assert result.card["sources"][0]["kind"] == "untranscribed"
    assert len(kept) == len(spec["speaker"])  # one clip per sentence of the speaker
    heard = " ".join(c.text for c in kept)
    cer = character_error_rate(" ".join(spec["speaker"]), heard)
    assert cer <= spec["max_cer"], (cer, heard)
    others = [r for r in result.rejected if "another voice" in r.reason]
    assert len(others) == len(spec["interviewer"]) == len(result.rejected)
    asr = result.card["asr"]["sources"]["talk"]
    sims = [c["speaker_similarity"] for c in asr["clips"]]
    assert sorted(sims)[len(others)] - sorted(sims)[len(others) - 1] > 0.2  # two clear groups
    assert asr["in_dataset_clips"] == len(kept) and asr["other_speaker"] == len(others)
    assert all(-1.0 <= c["mean_logprob"] <= 0 for c in asr["clips"] if c["in_dataset"])
    rejected_csv = (result.dataset_dir / "rejected.csv").read_text(encoding="utf-8")
    assert rejected_csv.count("another voice: speaker similarity 0.") == len(others)
    # the speaker holds a clear majority of the speech: no warning, no example clips
    voices = asr["voices"]
    assert voices[0]["voice"] == 1 and voices[0]["kept"] and len(voices) >= 2
    assert voices[0]["share"] >= 0.6 and voices[0]["clips"] == len(kept)
    assert voice_warnings(result.card) == []
    assert not (tmp_path / "exp" / "asr_review" / "voices" / "talk").exists()
    # the review folder reads back as a metadata source with the same clips and texts
    review = tmp_path / "exp" / "asr_review" / "talk"
    again = prepare_dataset(
        DataPrepConfig(sources=[{"name": "talk", "path": str(review)}], language=language,
                       workers=1, min_eval=1, min_test=1),
        tmp_path / "again" / "dataset", tokenizer, progress=False,
    )  # fmt: skip
    assert again.card["sources"][0]["kind"] == "metadata"
    again_texts = [c.text for c in again.train + again.eval + again.test]
    assert sorted(again_texts) == sorted(c.text for c in kept)


def test_audio_extensions_match_in_any_case(tmp_path):
    folder = tmp_path / "win"
    (folder / "wavs").mkdir(parents=True)
    sf.write(folder / "wavs" / "UPPER.WAV", voice(2.5), SR)
    sf.write(folder / "Mixed.Flac", voice(2.5, seed=1), SR, format="FLAC")
    (folder / "metadata.csv").write_text("UPPER|Első mondat.\nMixed|Második mondat.\n", "utf-8")
    scanned = scan_source(SourceSpec.from_dict({"name": "w", "path": str(folder)}), 0,
                          DataPrepConfig(sources=[]))  # fmt: skip
    assert scanned.rejections == []  # neither "audio file not found" nor "no transcript"
    assert [j.path.name for j in scanned.jobs] == ["UPPER.WAV", "Mixed.Flac"]


def test_a_table_name_matches_its_file_in_any_case_both_ways_and_two_matches_are_ambiguous(
    tmp_path,
):
    folder = tmp_path / "case"
    folder.mkdir()
    sf.write(folder / "a.WAV", voice(2.5), SR)  # the table says a.wav
    sf.write(folder / "b.wav", voice(2.5, seed=1), SR)  # the table says B.Wav
    sf.write(folder / "c.wav", voice(2.5, seed=2), SR)  # C.WAV and c.wav: which one?
    sf.write(folder / "C.WAV", voice(2.5, seed=3), SR)
    lines = "a.wav|Első mondat.\nB.Wav|Második mondat.\nc.Wav|Harmadik mondat.\n"
    (folder / "metadata.csv").write_text(lines, "utf-8")
    scanned = scan_source(SourceSpec.from_dict({"name": "c", "path": str(folder)}), 0,
                          DataPrepConfig(sources=[]))  # fmt: skip
    assert [j.path.name for j in scanned.jobs] == ["a.WAV", "b.wav"]
    reasons = {r.item: (r.kind, r.reason) for r in scanned.rejections}
    kind, reason = reasons["c.Wav (metadata.csv line 3)"]
    assert kind == "ambiguous_file" and "C.WAV, c.wav" in reason
    # neither candidate is claimed by line 3, so both are listed as without a transcript too
    assert {r.item for r in scanned.rejections if r.kind == "no_transcript"} == {"C.WAV", "c.wav"}
