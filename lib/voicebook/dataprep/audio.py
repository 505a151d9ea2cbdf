"""Audio steps: decode and check a file, resample, trim, measure and normalise loudness, hash.

Problems a person can fix raise ``AudioProblem`` with a plain-words reason; the pipeline turns
it into a row of ``rejected.csv``.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
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
    full_scale_times: np.ndarray  # seconds of every sample at full scale (clipping) in any channel

    def clipped_fraction(self, start_s: float, end_s: float) -> float:
        """Share of the original samples between ``start_s`` and ``end_s`` at full scale."""
        lo, hi = np.searchsorted(self.full_scale_times, [start_s, end_s])
        return float(hi - lo) / max(1.0, (end_s - start_s) * self.original_rate)


_BLOCK = 1 << 20  # frames per read: short clips in one go, long recordings without a big copy


def decode(path: Path, sample_rate: int) -> Decoded:
    """Read ``path`` as mono float32 at ``sample_rate``; stereo and other rates are converted.

    Raises ``AudioProblem`` for empty, unreadable, truncated or NaN-holding files.
    """
    if path.stat().st_size == 0:
        raise AudioProblem("empty file (0 bytes): re-export or remove it")
    chunks, hits, read = [], [], 0
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, promised = f.samplerate, f.channels, f.frames
            truncated = _TRUNCATED_WAV.search(f.extra_info or "")
            if truncated:  # libsndfile reads what is there and only notes it in its log
                promised = int(truncated.group(1)) // (channels * _sample_bytes(f.subtype))
            stream = None
            if rate != sample_rate:
                stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
            while True:
                block = f.read(_BLOCK, dtype="float32", always_2d=True)
                last = len(block) < _BLOCK
                low, high = float(block.min(initial=0.0)), float(block.max(initial=0.0))
                if not (np.isfinite(low) and np.isfinite(high)):  # min/max propagate NaN
                    raise AudioProblem(
                        "contains NaN or infinite samples (corrupt float audio); re-export it"
                    )
                if max(-low, high) >= _FULL_SCALE:
                    loud = np.flatnonzero((np.abs(block) >= _FULL_SCALE).any(axis=1))
                    hits.append((loud + read) / rate)
                read += len(block)
                mono = block[:, 0].copy()
                for channel in range(1, channels):  # faster than block.mean(axis=1)
                    mono += block[:, channel]
                if channels > 1:
                    mono *= np.float32(1 / channels)
                chunks.append(stream.resample_chunk(mono, last=last) if stream else mono)
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
        detail = str(exc).split(": ", 1)[-1].strip() or "the data is corrupt or cut short"
        raise AudioProblem(
            f"not readable as audio ({detail}); convert it to WAV or FLAC, or remove it"
        ) from exc
    if read == 0:
        raise AudioProblem("no audio samples in the file")
    if read < 0.99 * promised:
        raise AudioProblem(
            f"truncated: the header promises {promised / rate:.2f} s but only "
            f"{read / rate:.2f} s could be read; re-export the file"
        )
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    return Decoded(samples, sample_rate, rate, channels, np.concatenate([np.zeros(0), *hits]))


def _sample_bytes(subtype: str) -> int:
    digits = re.findall(r"\d+", subtype)
    return max(1, int(digits[0]) // 8) if digits else 2


def trim_bounds(
    samples: np.ndarray, sample_rate: int, top_db: float, margin_s: float
) -> tuple[int, int]:
    """Start and end sample of the speech, with ``margin_s`` kept either side."""
    import librosa  # imported here: it is slow to import and only this function needs it

    if not np.any(samples):
        return 0, 0
    _, (start, end) = librosa.effects.trim(
        samples, top_db=top_db, frame_length=1024, hop_length=256
    )
    margin = int(margin_s * sample_rate)
    return max(0, int(start) - margin), min(samples.size, int(end) + margin)


def pauses(
    samples: np.ndarray, sample_rate: int, top_db: float, min_pause_s: float
) -> list[tuple[int, int]]:
    """Silent stretches (start, end sample) inside ``samples``, at least ``min_pause_s`` long."""
    import librosa

    voiced = librosa.effects.split(samples, top_db=top_db, frame_length=1024, hop_length=256)
    gaps = [(int(a[1]), int(b[0])) for a, b in pairwise(voiced)]
    return [(a, b) for a, b in gaps if b - a >= min_pause_s * sample_rate]


@lru_cache(maxsize=4)
def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """pyloudnorm's BS.1770 K-weighting filters for ``sample_rate``: (b, a, passband gain)."""
    meter = pyloudnorm.Meter(sample_rate)
    return [(f.b, f.a, f.passband_gain) for f in meter._filters.values()]


def loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of mono audio in LUFS (ITU-R BS.1770-4); -inf for silence.

    The same computation as ``pyloudnorm.Meter(rate).integrated_loudness`` -- its filters, its
    400 ms blocks at 75 % overlap, its gates -- with the block energies taken from a cumulative
    sum instead of pyloudnorm's per-block Python loop (a third of this stage's time otherwise).
    The tests check both agree.
    """
    from scipy.signal import lfilter

    x = samples.astype(np.float64)
    for b, a, gain in _k_weighting(sample_rate):
        x = gain * lfilter(b, a, x)
    block, step = 0.4, 0.25
    n_blocks = int(np.round((x.size / sample_rate - block) / (block * step))) + 1
    if n_blocks < 1:
        raise AudioProblem(f"shorter than one {block} s loudness block")
    j = np.arange(n_blocks)
    lower = np.minimum((block * (j * step) * sample_rate).astype(np.int64), x.size)
    upper = np.minimum((block * (j * step + 1) * sample_rate).astype(np.int64), x.size)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    z = (energy[upper] - energy[lower]) / (block * sample_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        block_lufs = -0.691 + 10 * np.log10(z)
        absolute = z[block_lufs >= -70.0]
        if absolute.size == 0:
            return float("-inf")
        relative_gate = -0.691 + 10 * np.log10(absolute.mean()) - 10
        gated = z[(block_lufs > relative_gate) & (block_lufs > -70.0)]
        return float(-0.691 + 10 * np.log10(gated.mean())) if gated.size else float("-inf")


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
    return hashlib.blake2b(np.ascontiguousarray(pcm16 >> 4), digest_size=12).hexdigest()


def write_wav(path: Path, pcm16: np.ndarray, sample_rate: int) -> None:
    """PCM16 WAV, byte-identical for identical samples. Encoded in memory: soundfile's close()
    fsyncs every file it writes, which costs more than the encoding itself."""
    buffer = io.BytesIO()
    sf.write(buffer, pcm16, sample_rate, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())
