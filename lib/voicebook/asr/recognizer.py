"""One speech recogniser (faster-whisper) for data prep's transcripts and the evaluation's CER.

Device and precision follow the stage's ``device``: int8 on a CPU, float16 on CUDA. A model is
loaded once per process and (folder, device, compute type), so data prep and every candidate of
the evaluation share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicebook.asr.models import resolve_model

SAMPLE_RATE = 16000  # Whisper's input rate
COMPUTE_TYPES = {"cpu": "int8", "cuda": "float16"}
BEAM_SIZE = 5  # faster-whisper's default; greedy (1) is ~1.5x faster and a little worse


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str  # as Whisper writes it: a leading space, punctuation attached
    probability: float


@dataclass(frozen=True)
class Segment:
    """One Whisper segment: seconds in the whole recording, text, confidence, words."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


class Recognizer:
    """A loaded Whisper model for one language."""

    def __init__(
        self, model, name: str, language: str, device: str, beam_size: int = BEAM_SIZE
    ) -> None:
        self.model, self.name, self.language, self.device = model, name, language, device
        self.beam_size = beam_size

    def segments(self, samples_16k: np.ndarray, vad: bool = True) -> list[Segment]:
        """Segments with word timestamps of 16 kHz mono audio; ``vad`` skips non-speech first
        (silero-vad inside faster-whisper), which also keeps Whisper from inventing text in
        silences."""
        found, _info = self.model.transcribe(
            np.ascontiguousarray(samples_16k, dtype=np.float32),
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=vad,
            word_timestamps=True,
            condition_on_previous_text=False,  # one misheard line must not derail the next
        )
        return [
            Segment(
                s.start, s.end, s.text.strip(), s.avg_logprob, s.no_speech_prob,
                tuple(Word(w.start, w.end, w.word, w.probability) for w in s.words or ()),
            )
            for s in found
        ]  # fmt: skip

    def _decode(self, audio: np.ndarray | str | Path, words: bool) -> list:
        """Whisper's segments of a clip (a 16 kHz array or an audio file), greedy on one
        temperature; ``words``: with word timestamps."""
        if not isinstance(audio, np.ndarray):
            audio = decode_16k(audio)
        # VAD: audio that is not speech (an untrained model's noise) comes back empty, CER 1,
        # instead of Whisper inventing text; one temperature: no slow fallback re-decodes
        found, _ = self.model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32), language=self.language,
            beam_size=self.beam_size, vad_filter=True, temperature=0.0,
            without_timestamps=not words, word_timestamps=words,
            condition_on_previous_text=False,
        )  # fmt: skip
        return list(found)

    def text(self, audio: np.ndarray | str | Path) -> str:
        """The transcript of a clip (a 16 kHz array or an audio file), for CER."""
        return " ".join(s.text.strip() for s in self._decode(audio, words=False)).strip()

    __call__ = text

    def transcript(self, audio: np.ndarray | str | Path) -> tuple[str, list[Word]]:
        """The transcript of a clip and its words with their times (the evaluation's failure
        flags read them), decoded as ``text`` decodes it."""
        segments = self._decode(audio, words=True)
        words = [
            Word(w.start, w.end, w.word, w.probability) for s in segments for w in s.words or ()
        ]
        return " ".join(s.text.strip() for s in segments).strip(), words


def decode_16k(path: str | Path) -> np.ndarray:
    """An audio file as Whisper's input: mono float32 at 16 kHz, exactly as faster-whisper's
    ``decode_audio`` makes it (its own frame helpers), without its ``gc.collect()`` per file,
    which walks every object of a process that holds torch models (the evaluation transcribes
    every take). The resampler's reference cycles are left to Python's own collector."""
    import av
    from faster_whisper.audio import _group_frames, _ignore_invalid_frames, _resample_frames

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        frames = _group_frames(_ignore_invalid_frames(container.decode(audio=0)), 500_000)
        chunks = [frame.to_ndarray() for frame in _resample_frames(frames, resampler)]
    pcm = np.concatenate(chunks, axis=None) if chunks else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0


_LOADED: dict[tuple[str, str, str, int], object] = {}


def load_recognizer(
    asr_model: str, language: str, device: str = "auto", cpu_threads: int = 0
) -> Recognizer | None:
    """The recogniser ``asr_model`` names (see ``voicebook.asr.models``), or None when it is
    ``""``. ``device``: auto | cpu | cuda, as every stage takes it; ``cpu_threads`` 0: the
    cores (or ``OMP_NUM_THREADS``)."""
    target = resolve_model(asr_model)
    if target is None:
        return None
    from voicebook.core.device import resolve_device, thread_count

    kind = resolve_device(device).type
    compute = COMPUTE_TYPES[kind]
    threads = cpu_threads or thread_count()  # CTranslate2's own default ignores the cores
    key = (target, kind, compute, threads)
    if key not in _LOADED:
        from faster_whisper import WhisperModel

        _LOADED[key] = WhisperModel(target, device=kind, compute_type=compute, cpu_threads=threads)
    return Recognizer(_LOADED[key], asr_model, language, kind)


def mean_logprob(words: list[Word] | tuple[Word, ...]) -> float:
    """Mean log-probability of a stretch's words (Whisper's word probabilities)."""
    if not words:
        return -math.inf
    return float(np.mean([math.log(max(w.probability, 1e-12)) for w in words]))
