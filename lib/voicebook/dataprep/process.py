"""Turn one job (a clip, or a recording with cues) into finished clips and rejections.

This is the part that runs in the worker processes: decode once, cut, trim, check, normalise
loudness and write a PCM16 WAV. Nothing here reads or writes anything but the job's own file
and its own clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicebook.dataprep.audio import (
    AudioProblem,
    Decoded,
    audio_hash,
    decode,
    loudness,
    normalise,
    to_pcm16,
    trim_bounds,
    write_wav,
)
from voicebook.dataprep.config import DataPrepConfig, duration_band
from voicebook.dataprep.segments import Cue, clock, merge_short, padded, split_long
from voicebook.dataprep.sources import Job, Rejection
from voicebook.dataprep.text import TextChecker, is_question


@dataclass
class Clip:
    """A clip that made it into the dataset (before duplicate removal and the split)."""

    source: str
    item: str
    audio_file: str  # relative to the dataset folder: wavs/<stem>.wav
    text: str
    speaker: str
    duration: float
    band: str
    category: str
    n_tokens: int
    input_lufs: float
    gain_db: float
    peak_limited: bool
    audio_hash: str
    inputs: tuple[str, ...]
    order: tuple[int, ...]
    split: bool = False


class Worker:
    """Processes jobs for one dataset build; writes WAVs into ``wav_dir``."""

    def __init__(self, config: DataPrepConfig, checker: TextChecker, wav_dir: Path) -> None:
        self.config, self.checker, self.wav_dir = config, checker, wav_dir

    def run(self, job: Job) -> list[Clip | Rejection]:
        """The job's clips and rejections. An unexpected error rejects the job, never the run."""
        try:
            return self._run(job)
        except Exception as exc:  # noqa: BLE001 -- one bad item must not stop the stage
            pattern = f"{job.stem}.wav" if job.cues is None else f"{job.stem}_[0-9][0-9][0-9].wav"
            for wav in self.wav_dir.glob(pattern):  # what this job already wrote
                wav.unlink()
            inputs = job.inputs or tuple(i for c in job.cues or [] for i in c.inputs)
            reason = f"could not be processed ({type(exc).__name__}: {exc}); please report this"
            return [Rejection(job.source, job.item, reason, "error", inputs, job.order)]

    def _run(self, job: Job) -> list[Clip | Rejection]:
        n_tokens = 0
        if job.cues is None:
            kind, problem, n_tokens = self.checker.check(job.text or "")
            if kind:
                return [Rejection(job.source, job.item, problem, kind, job.inputs, job.order)]
        try:
            decoded = decode(job.path, self.config.sample_rate)
        except AudioProblem as exc:
            inputs = job.inputs or tuple(i for c in job.cues or [] for i in c.inputs)
            return [
                Rejection(job.source, job.item, str(exc), "unreadable_audio", inputs, job.order)
            ]
        if job.cues is None:
            end = decoded.samples.size
            return [self._clip(job, decoded, 0, end, job.text or "", n_tokens, job.inputs)]
        return self._recording(job, decoded)

    def _recording(self, job: Job, decoded: Decoded) -> list[Clip | Rejection]:
        """Cut a recording at its cues: merge short ones, split long ones at a pause."""
        cfg, sr = self.config, decoded.sample_rate
        total = decoded.samples.size / sr
        cues = merge_short(job.cues or [], cfg.min_seconds, cfg.max_seconds, cfg.max_merge_gap_s)
        planned: list[tuple[Cue, bool]] = []  # (cue, at most max_seconds long)
        for cue in cues:
            parts = split_long(
                cue, decoded.samples, sr, cfg.min_seconds, cfg.max_seconds, cfg.trim_top_db,
                cfg.min_split_pause_s,
            )  # fmt: skip
            planned.extend([(p, True) for p in parts] if parts else [(cue, False)])
        widened = padded([c for c, _ in planned], cfg.cue_padding_s, total)
        out: list[Clip | Rejection] = []
        for k, ((cue, usable), wide) in enumerate(zip(planned, widened), start=1):
            item = f"{job.item} {clock(cue.start)}-{clock(cue.end)} ({_label(cue)})"
            order = (*job.order, k)
            sub = Job(job.source, item, job.path, f"{job.stem}_{k:03d}", job.speaker, order,
                      cue.inputs, cue.text)  # fmt: skip
            if not usable:
                reason = (
                    f"too long: {cue.duration:.1f} s (maximum {cfg.max_seconds:g} s) with no "
                    f"pause of {cfg.min_split_pause_s:g} s or more to cut at (or no place to cut "
                    "its text); shorten the subtitle cue"
                )
                out.append(Rejection(job.source, item, reason, "too_long", cue.inputs, order))
                continue
            if cue.start >= total:
                reason = (
                    f"the cue starts at {clock(cue.start)}, after the recording ends "
                    f"({clock(total)}): do these subtitles belong to this recording?"
                )
                out.append(
                    Rejection(job.source, item, reason, "beyond_recording", cue.inputs, order)
                )
                continue
            kind, problem, n_tokens = self.checker.check(cue.text)
            if kind:
                out.append(Rejection(job.source, item, problem, kind, cue.inputs, order, cue.split))
                continue
            a, b = int(wide.start * sr), int(wide.end * sr)
            out.append(self._clip(sub, decoded, a, b, cue.text, n_tokens, cue.inputs, cue.split))
        return out

    def _clip(
        self,
        job: Job,
        decoded: Decoded,
        start: int,
        end: int,
        text: str,
        n_tokens: int,
        inputs: tuple[str, ...],
        split: bool = False,
    ) -> Clip | Rejection:
        """Trim, check and normalise ``decoded.samples[start:end]``; write it if it passes."""
        cfg, sr = self.config, decoded.sample_rate
        segment = decoded.samples[start:end]
        a, b = trim_bounds(segment, sr, cfg.trim_top_db, cfg.trim_margin_s)
        speech = segment[a:b]
        problem, lufs = self._length_problem(speech, sr), None
        if problem is None:  # loudness needs a clip of a sensible length
            lufs = loudness(speech, sr)
            clipped = decoded.clipped_fraction((start + a) / sr, (start + b) / sr)
            problem = self._content_problem(lufs, clipped, text, speech.size / sr)
        if problem is not None:
            return Rejection(job.source, job.item, *problem, inputs, job.order, split)
        return self._write_clip(job, speech, sr, lufs, text, n_tokens, inputs, split)

    def _length_problem(self, speech: np.ndarray, sr: int) -> tuple[str, str] | None:
        """(reason, kind) when the trimmed clip is silent, too short or too long."""
        cfg = self.config
        if not np.any(speech):
            return "silent: every sample is zero", "silent"
        duration = speech.size / sr
        if duration < cfg.min_seconds:
            return (
                (
                    f"too short: {duration:.2f} s after trimming silence "
                    f"(minimum {cfg.min_seconds:g} s)"
                ),
                "too_short",
            )
        if speech.size > cfg.max_samples():
            return (
                (
                    f"too long: {duration:.2f} s after trimming silence (maximum "
                    f"{cfg.max_seconds:g} s); cut it at a pause"
                ),
                "too_long",
            )
        return None

    def _content_problem(
        self, lufs: float, clipped: float, text: str, duration: float
    ) -> tuple[str, str] | None:
        """(reason, kind) when the clip is near-silent, clipped, or its text does not fit it."""
        cfg = self.config
        if not lufs >= cfg.silence_lufs:
            return (
                (
                    f"near-silent: {lufs:.0f} LUFS (speech is usually -35 to -15 LUFS); "
                    "check the recording"
                ),
                "near_silent",
            )
        if clipped > cfg.max_clipped_fraction:
            return (
                (
                    f"clipped: {clipped:.2%} of samples at full scale (limit "
                    f"{cfg.max_clipped_fraction:.1%}); use a recording made at a lower level"
                ),
                "clipped",
            )
        low, high = cfg.chars_per_second
        rate = len(text) / duration
        if not low <= rate <= high:
            return (
                (
                    f"text does not fit the audio: {len(text)} characters in {duration:.1f} s "
                    f"({rate:.0f}/s, expected {low:g}-{high:g}); is it another clip's transcript?"
                ),
                "text_audio_mismatch",
            )
        return None

    def _write_clip(
        self,
        job: Job,
        speech: np.ndarray,
        sr: int,
        lufs: float,
        text: str,
        n_tokens: int,
        inputs: tuple[str, ...],
        split: bool,
    ) -> Clip:
        """Normalise the loudness, write the wav and describe the clip."""
        cfg = self.config
        duration = speech.size / sr
        scaled, gain_db, limited = normalise(speech, lufs, cfg.target_lufs, cfg.peak_ceiling_dbfs)
        pcm = to_pcm16(scaled)
        write_wav(self.wav_dir / f"{job.stem}.wav", pcm, sr)
        band = duration_band(duration)
        return Clip(
            source=job.source,
            item=job.item,
            audio_file=f"wavs/{job.stem}.wav",
            text=text,
            speaker=job.speaker,
            duration=round(duration, 4),
            band=band,
            category="question" if is_question(text) else band,
            n_tokens=n_tokens,
            input_lufs=round(lufs, 2),
            gain_db=round(gain_db, 2),
            peak_limited=limited,
            audio_hash=audio_hash(pcm),
            inputs=inputs,
            order=job.order,
            split=split,
        )


def _label(cue: Cue) -> str:
    """'cue 5', 'cues 5-7', 'speech 3' or 'cue 9, part' from the cue's input ids."""
    found = [re.search(r"(\w+) (\d+)$", i) for i in cue.inputs]
    numbers = [int(m.group(2)) for m in found if m]
    word = found[0].group(1) if found and found[0] else "cue"
    label = (
        f"{word} {numbers[0]}" if len(set(numbers)) == 1 else f"{word}s {numbers[0]}-{numbers[-1]}"
    )
    return f"{label}, part" if cue.split else label


# --- process-pool plumbing: one Worker per process, set up once --------------------------------

_WORKER: Worker | None = None


def init_worker(config: DataPrepConfig, checker: TextChecker, wav_dir: Path) -> None:
    global _WORKER
    _WORKER = Worker(config, checker, wav_dir)


def run_job(job: Job) -> list[Clip | Rejection]:
    assert _WORKER is not None, "init_worker was not called in this process"
    return _WORKER.run(job)
