"""Audio steps: decode and check a file, resample, trim, measure and normalise loudness, hash.

Problems a person can fix raise ``AudioProblem`` with a plain-words reason; the pipeline turns
it into a row of ``rejected.csv``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
_FULL_SCALE = 0.999  # samples at or above this magnitude count as clipped
_TRUNCATED_WAV = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioProblem(ValueError):
    """An audio file or clip that cannot become training data; the message says why."""


@dataclass
class Decoded:
    """A decoded recording: mono float32 at the target rate, plus what was found on the way."""

    samples: np.ndarray
    sample_rate: int
    original_rate: int
    channels: int


def decode(path: Path, sample_rate: int) -> Decoded:
    """Read ``path`` as mono float32 at ``sample_rate``; stereo and other rates are converted."""
    size = path.stat().st_size
    if size == 0:
        raise AudioProblem("empty file (0 bytes): re-export or remove it")
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        detail = str(exc).split(": ", 1)[-1].strip() or "the data is corrupt or cut short"
        raise AudioProblem(
            f"not readable as audio ({detail}); convert it to WAV or FLAC, or remove it"
        ) from exc
    truncated = _TRUNCATED_WAV.search(info.extra_info or "")
    promised = info.frames
    if truncated:  # libsndfile reads what is there and only notes the mismatch in its log
        promised = int(truncated.group(1)) // max(1, info.channels * _sample_bytes(info))
    if len(data) < promised:
        raise AudioProblem(
            f"truncated: the header promises {promised / rate:.2f} s but only "
            f"{len(data) / rate:.2f} s could be read; re-export the file"
        )
    if len(data) == 0:
        raise AudioProblem("no audio samples in the file")
    if not np.isfinite(data).all():
        raise AudioProblem("contains NaN or infinite samples (corrupt float audio); re-export it")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return Decoded(np.ascontiguousarray(mono, dtype=np.float32), sample_rate, rate, data.shape[1])


def _sample_bytes(info: sf._SoundFileInfo) -> int:
    digits = re.findall(r"\d+", info.subtype)
    return max(1, int(digits[0]) // 8) if digits else 2


def clipped_fraction(samples: np.ndarray) -> float:
    """Share of samples at (or within 0.1 % of) full scale."""
    return float(np.count_nonzero(np.abs(samples) >= _FULL_SCALE)) / max(1, samples.size)


def trim_bounds(
    samples: np.ndarray, sample_rate: int, top_db: float, margin_s: float
) -> tuple[int, int]:
    """Start and end sample of the speech, with ``margin_s`` kept either side."""
    import librosa  # imported here: it is slow to import and only this function needs it

    if not np.any(samples):
        return 0, 0
    _, (start, end) = librosa.effects.trim(samples, top_db=top_db, frame_length=1024, hop_length=256)
    margin = int(margin_s * sample_rate)
    return max(0, int(start) - margin), min(samples.size, int(end) + margin)


def pauses(
    samples: np.ndarray, sample_rate: int, top_db: float, min_pause_s: float
) -> list[tuple[int, int]]:
    """Silent stretches (start, end sample) inside ``samples``, at least ``min_pause_s`` long."""
    import librosa

    voiced = librosa.effects.split(samples, top_db=top_db, frame_length=1024, hop_length=256)
    gaps = [(int(a[1]), int(b[0])) for a, b in zip(voiced[:-1], voiced[1:])]
    return [(a, b) for a, b in gaps if b - a >= min_pause_s * sample_rate]


@lru_cache(maxsize=4)
def _meter(sample_rate: int) -> pyloudnorm.Meter:
    return pyloudnorm.Meter(sample_rate)


def loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, via pyloudnorm); -inf for silence."""
    return float(_meter(sample_rate).integrated_loudness(samples.astype(np.float64)))


def normalise(
    samples: np.ndarray, lufs: float, target_lufs: float, peak_ceiling_dbfs: float
) -> tuple[np.ndarray, float, bool]:
    """Scale to ``target_lufs``; lower the gain if peaks would pass the ceiling.

    Returns the scaled samples, the gain in dB, and whether the peak ceiling lowered it.
    """
    gain_db = target_lufs - lufs
    peak = float(np.max(np.abs(samples)))
    ceiling = 10 ** (peak_ceiling_dbfs / 20)
    limited = peak * 10 ** (gain_db / 20) > ceiling
    if limited:
        gain_db = 20 * np.log10(ceiling / peak)
    return (samples * np.float32(10 ** (gain_db / 20))).astype(np.float32), float(gain_db), limited


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


def audio_hash(pcm16: np.ndarray) -> str:
    """Hash of the clip at 12-bit resolution: equal for the same audio at other levels/formats
    once normalised, so copies of one recording are found."""
    coarse = (pcm16.astype(np.int32) >> 4).astype(np.int16)
    return hashlib.blake2b(coarse.tobytes(), digest_size=12).hexdigest()


def write_wav(path: Path, pcm16: np.ndarray, sample_rate: int) -> None:
    """PCM16 WAV: byte-identical for identical samples."""
    sf.write(str(path), pcm16, sample_rate, subtype="PCM_16", format="WAV")
