"""Untranscribed recordings into transcribed clips: Whisper's words cut at sentence ends and
pauses, low-confidence stretches and other voices set aside, and a transcript table a person
can correct and feed back.

The cut follows the subtitle path's rules (``min_seconds`` / ``max_seconds``): a clip ends at a
sentence end once it is long enough, always at a pause of ``asr_cut_pause_s`` (a turn change in
an interview is a pause), and before it would grow past ``max_seconds`` at its best inner
boundary. Short pieces are merged with their neighbours later, as subtitle cues are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voicebook.asr import Segment, Word, mean_logprob
from voicebook.dataprep.text import normalise_text

_SENTENCE_END = (".", "?", "!", "…")


@dataclass(frozen=True)
class Stretch:
    """A planned clip: seconds in the recording, its words' text and the ASR's confidence."""

    start: float
    end: float
    text: str
    mean_logprob: float  # mean log-probability of its words
    no_speech_prob: float  # the highest of the segments its words come from
    n_words: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def _ends_sentence(word: Word) -> bool:
    return word.text.strip().endswith(_SENTENCE_END)


def _stretch(words: list[tuple[Word, float]]) -> Stretch:
    only = [w for w, _ in words]
    return Stretch(
        float(only[0].start), float(only[-1].end), "".join(w.text for w in only).strip(),
        mean_logprob(only), max(p for _, p in words), len(only),
    )  # fmt: skip


def _best_cut(words: list[tuple[Word, float]], after: Word, min_seconds: float) -> int:
    """Where to cut a run that ``after`` would make too long (``words[:k]`` is one clip): at
    the last sentence end that leaves the clip ``min_seconds`` long, else at the longest pause
    that does (the latest of equal ones), else at the longest pause."""
    start = words[0][0].start
    nexts = [w for w, _ in words[1:]] + [after]

    def pause(k: int) -> float:
        return round(nexts[k - 1].start - words[k - 1][0].end, 2)

    cuts = range(1, len(words) + 1)
    long_enough = [k for k in cuts if words[k - 1][0].end - start >= min_seconds] or list(cuts)
    sentences = [k for k in long_enough if _ends_sentence(words[k - 1][0])]
    if sentences:
        return sentences[-1]
    return max(long_enough, key=lambda k: (pause(k), k))


def plan_stretches(
    segments: list[Segment], min_seconds: float, max_seconds: float, pause_s: float
) -> list[Stretch]:
    """Whisper's words regrouped into clips of at most ``max_seconds``, cut at sentence ends
    (once ``min_seconds`` long) and at pauses of ``pause_s`` or more."""
    words = [(w, s.no_speech_prob) for s in segments for w in s.words if w.text.strip()]
    out: list[Stretch] = []
    run: list[tuple[Word, float]] = []
    for i, (word, p) in enumerate(words):
        while run and word.end - run[0][0].start > max_seconds:
            k = _best_cut(run, word, min_seconds)
            out.append(_stretch(run[:k]))
            run = run[k:]
        run.append((word, p))
        gap = words[i + 1][0].start - word.end if i + 1 < len(words) else math.inf
        long_enough = word.end - run[0][0].start >= min_seconds
        if gap >= pause_s or (long_enough and _ends_sentence(word)):
            out.append(_stretch(run))
            run = []
    if run:
        out.append(_stretch(run))
    return out


def low_confidence(stretch: Stretch, min_logprob: float, max_no_speech: float) -> str | None:
    """Why the ASR's transcript of ``stretch`` is not trusted, or None."""
    if stretch.mean_logprob < min_logprob:
        return (
            f"low ASR confidence: mean word log-probability {stretch.mean_logprob:.2f} "
            f"(minimum {min_logprob:g}); check the transcript or the audio"
        )
    if stretch.no_speech_prob > max_no_speech:
        return (
            f"ASR thinks this may not be speech: no-speech probability "
            f"{stretch.no_speech_prob:.2f} (maximum {max_no_speech:g})"
        )
    return None


def centroid_similarities(
    embeddings: np.ndarray, reference: np.ndarray | None = None, rounds: int = 3
) -> np.ndarray:
    """Each clip's cosine similarity to the speaker's centroid.

    With ``reference`` embeddings (clips the user named), the centroid is their mean. Without,
    it is the source's own clips' mean, refined ``rounds`` times over the clips at or above the
    median similarity: the speaker of most of a source's speech pulls it their way, so an
    interviewer's turns do not drag it half-way between two voices.
    """

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    if len(embeddings) == 0:
        return np.zeros(0)
    if reference is not None and len(reference):
        return embeddings @ unit(reference.mean(axis=0))
    centroid = unit(embeddings.mean(axis=0))
    for _ in range(rounds):
        sims = embeddings @ centroid
        centroid = unit(embeddings[sims >= np.median(sims)].mean(axis=0))
    return embeddings @ centroid


def voice_labels(embeddings: np.ndarray, threshold: float, most: int = 5) -> np.ndarray:
    """Which voice each clip is (1, 2, ...), as the speaker check sees a source without
    ``speaker_reference``: voice 1 is the clips at or above ``threshold`` from the refined
    centroid (``centroid_similarities``: the voice that is kept), voice 2 the same among the
    rest, and so on; ``most`` voices at most (the last takes every clip left)."""
    labels = np.zeros(len(embeddings), dtype=int)
    for voice in range(1, most + 1):
        left = np.flatnonzero(labels == 0)
        if len(left) == 0:
            break
        sims = centroid_similarities(embeddings[left])
        members = left if voice == most else left[sims >= threshold]
        labels[members if len(members) else left[[int(np.argmax(sims))]]] = voice
    return labels


# --- one source's recordings: transcribe, judge, remember for the card and the review ----------


@dataclass
class Heard:
    """One planned clip of a recording with the verdicts on it (a row of the review table)."""

    recording: str  # relative to the source folder
    input_id: str
    stretch: Stretch
    speaker_similarity: float  # nan when the filter is off
    problem: str | None  # why it is rejected, or None
    kind: str | None  # rejection kind: low_confidence / other_speaker
    voice: int = 0  # which voice (1: the kept one; voice_labels), 0: not told apart


class Transcriber:
    """Whisper plus the speaker check, for every untranscribed source of one data-prep run."""

    def __init__(self, recognizer, config, reference_files: list | None = None) -> None:
        self.recognizer, self.config = recognizer, config
        self.scorer = None
        self.reference = None
        if config.min_speaker_similarity > 0:
            from voicebook.core.device import resolve_device
            from voicebook.speaker import SpeakerSimilarity

            self.scorer = SpeakerSimilarity.without_reference(device=resolve_device(config.device))
            if reference_files:
                self.reference = self.scorer.embed(reference_files)

    def hear(self, samples_16k: np.ndarray) -> list[Stretch]:
        cfg = self.config
        # padding widens each clip later: plan inside max_seconds with room for it
        room = cfg.max_seconds - 2 * cfg.cue_padding_s
        segments = self.recognizer.segments(samples_16k)
        return plan_stretches(segments, cfg.min_seconds, room, cfg.asr_cut_pause_s)

    def judge(
        self, source_audio: list[tuple[str, np.ndarray, list[Stretch], list[str]]]
    ) -> list[Heard]:
        """Confidence and speaker verdicts for every stretch of a source's recordings (the
        centroid is the whole source's: one voice across its recordings)."""
        cfg = self.config
        flat = [(rel, s, i, audio) for rel, audio, ss, ids in source_audio for s, i in zip(ss, ids)]
        sims, voices = np.full(len(flat), math.nan), np.zeros(len(flat), dtype=int)
        if self.scorer is not None and flat:
            from voicebook.speaker import SpeakerSimilarity

            waves = [
                SpeakerSimilarity.prepare(a[int(s.start * 16000) : int(s.end * 16000)])
                for _, s, _, a in flat
            ]
            embeddings = self.scorer.embed_waves(waves)
            sims = centroid_similarities(embeddings, self.reference)
            if self.reference is None:  # the voices the centroid chose among: for the card
                voices = voice_labels(embeddings, cfg.min_speaker_similarity)
        out = []
        for (rel, s, input_id, _), sim, voice in zip(flat, sims, voices):
            problem, kind = low_confidence(s, cfg.asr_min_logprob, cfg.asr_max_no_speech), None
            if problem:
                kind = "low_confidence"
            elif sim < cfg.min_speaker_similarity:
                kind = "other_speaker"
                problem = (
                    f"another voice: speaker similarity {sim:.2f} to the speaker's centroid "
                    f"(threshold {cfg.min_speaker_similarity:g})"
                )
            out.append(Heard(rel, input_id, s, float(sim), problem, kind, int(voice)))
        return out


def heard_rows(heard: list[Heard]) -> list[dict]:
    """The review / card table: one row per planned clip."""
    return [
        {
            "recording": h.recording,
            "input": h.input_id,
            "start": round(h.stretch.start, 2),
            "end": round(h.stretch.end, 2),
            "text": normalise_text(h.stretch.text),
            "mean_logprob": round(h.stretch.mean_logprob, 3),
            "no_speech_prob": round(h.stretch.no_speech_prob, 3),
            "speaker_similarity": None if math.isnan(h.speaker_similarity)
            else round(h.speaker_similarity, 3),
            "status": h.kind or "kept",
            "voice": h.voice,
        }
        for h in heard
    ]  # fmt: skip
