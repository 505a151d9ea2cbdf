"""Read a source folder into jobs (files to decode, with their transcript) and early rejections.

Every input a source holds -- a metadata line, an audio file without a line, a subtitle cue, a
subtitle file without a recording, a recording without transcript -- gets an id in the
source's ``inventory``; every job and rejection names the inputs it stands for, so the stage
can prove that each input ended in train, eval or ``rejected.csv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voicebook.core.subtitles import parse_subtitles
from voicebook.dataprep.audio import AUDIO_EXTENSIONS, AudioProblem, decode
from voicebook.dataprep.config import DataPrepConfig, SourceSpec
from voicebook.dataprep.segments import Cue, clock, merge_short, speech_segments
from voicebook.dataprep.text import normalise_text
from voicebook.dataprep.transcribe import Heard, Transcriber, heard_rows

SUBTITLE_EXTENSIONS = (".srt", ".vtt")
_HEADER_FILE = {"audio_file", "file", "filename", "wav", "path"}


class SourceError(FileNotFoundError):
    """A source that cannot be used at all; the message names the path and the fix."""


@dataclass
class Rejection:
    """One row of ``rejected.csv`` (``kind`` groups reasons in the card)."""

    source: str
    item: str
    reason: str
    kind: str
    inputs: tuple[str, ...]
    order: tuple[int, ...]
    split: bool = False


@dataclass
class Job:
    """One file to decode: a clip with its text, or a recording with its cues."""

    source: str
    item: str
    path: Path
    stem: str  # output name stem, unique in the dataset
    speaker: str
    order: tuple[int, ...]
    inputs: tuple[str, ...] = ()
    text: str | None = None
    cues: list[Cue] | None = None


@dataclass
class ScannedSource:
    spec: SourceSpec
    kind: str
    inventory: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)  # what the folder holds, for the card
    asr_rows: list[dict] = field(default_factory=list)  # untranscribed sources: what ASR heard


def scan_source(
    spec: SourceSpec,
    index: int,
    config: DataPrepConfig,
    asr: Transcriber | None = None,
) -> ScannedSource:
    """Read one source folder; raise ``SourceError`` only if it cannot be used at all."""
    kind = detect_kind(spec)
    scanned = ScannedSource(spec, kind)
    speaker = spec.speaker or config.speaker_name
    if kind == "metadata":
        _scan_metadata(scanned, index, speaker)
    elif kind == "subtitles":
        _scan_subtitles(scanned, index, speaker)
    else:
        _scan_untranscribed(scanned, index, speaker, config, asr)
    return scanned


def detect_kind(spec: SourceSpec) -> str:
    """The source's kind: as given, or for "auto" from what the folder holds."""
    if not spec.path.is_dir():
        raise SourceError(
            f"Source {spec.name!r}: folder {spec.path} does not exist. Fix the 'path' of this "
            "source (relative paths are relative to the repository) or remove the source."
        )
    if spec.kind != "auto":
        return spec.kind
    if (spec.path / spec.metadata).is_file():
        return "metadata"
    if _files(spec.path, SUBTITLE_EXTENSIONS):
        return "subtitles"
    if _files(spec.path, AUDIO_EXTENSIONS):
        return "untranscribed"  # transcribed by speech recognition (asr_model)
    raise SourceError(
        f"Source {spec.name!r}: {spec.path} holds no audio ({', '.join(AUDIO_EXTENSIONS)}), "
        f"no {spec.metadata} and no .srt/.vtt subtitles. Point 'path' at the folder of "
        "recordings or clips."
    )


def describe_sources(config: DataPrepConfig) -> list[dict[str, object]]:
    """One row per source -- kind, files found, or the problem that stops it -- cheaply,
    before anything is decoded."""
    rows = []
    for spec in config.source_specs():
        row: dict[str, object] = {"source": spec.name, "path": str(spec.path)}
        try:
            row["kind"] = detect_kind(spec)
        except SourceError as exc:
            rows.append(
                row | {"kind": "", "audio files": 0, "transcripts": "", "problem": str(exc)}
            )
            continue
        audio = _files(spec.path, AUDIO_EXTENSIONS)
        if row["kind"] == "metadata":
            table = spec.path / spec.metadata
            n = len(table.read_bytes().splitlines()) if table.is_file() else 0
            transcripts = f"{spec.metadata}: {n} lines" if n else f"no {spec.metadata}"
        elif row["kind"] == "subtitles":
            transcripts = f"{len(_files(spec.path, SUBTITLE_EXTENSIONS))} subtitle files"
        elif config.asr_model:
            transcripts = f"none: speech recognition ({config.asr_model})"
        else:
            transcripts = "none, and asr_model is empty: listed as rejected"
        rows.append(row | {"audio files": len(audio), "transcripts": transcripts, "problem": ""})
    return rows


def _files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` with one of ``extensions``, sorted, hidden folders skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in extensions
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _stem(source: str, rel: str, taken: set[str]) -> str:
    """A unique, file-system-safe output name from a source name and a relative path."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{source}_{Path(rel).with_suffix('')}").strip("_")
    stem, n = base, 2
    while stem in taken:
        stem, n = f"{base}_{n}", n + 1
    taken.add(stem)
    return stem


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


# --- clips listed in metadata.csv -----------------------------------------------------------


def _scan_metadata(scanned: ScannedSource, index: int, speaker: str) -> None:
    _MetadataTable(scanned, index, speaker).scan()


class _MetadataTable:
    """A source's metadata.csv read line by line: every line becomes a job or a rejection, then
    every audio file that no line claimed is rejected too (nothing is dropped silently)."""

    def __init__(self, scanned: ScannedSource, index: int, speaker: str):
        spec = scanned.spec
        self.scanned, self.spec, self.index, self.speaker = scanned, spec, index, speaker
        self.folder, self.table = spec.path, spec.path / spec.metadata
        if not self.table.is_file():
            raise SourceError(
                f"Source {spec.name!r}: no {self.table}. Add it with one line per clip, "
                "'file|text' (optional header 'audio_file|text|speaker_name'), or point 'path' "
                "at the right folder."
            )
        self.audio = {_rel(p, self.folder): p for p in _files(self.folder, AUDIO_EXTENSIONS)}
        self.claimed: dict[str, int] = {}  # audio rel path -> line that claimed it
        self.listed: dict[str, int] = {}  # file field as written -> first line
        self.columns: dict[str, int] | None = None
        self.taken: set[str] = set()
        scanned.found = {"metadata_lines": 0, "audio_files": len(self.audio)}

    def scan(self) -> None:
        lines = self.table.read_bytes().split(b"\n")
        for number, raw in enumerate(lines, start=1):
            raw = raw.rstrip(b"\r")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():
                self._line(number, raw)
        self._reject_unclaimed(len(lines))

    def _line(self, number: int, raw: bytes) -> None:
        line, bad_bytes = _decode(raw)
        if self.columns is None:
            self.columns = _columns(line.split("|"))
            if self.columns.pop("header", 0):
                return
        spec, columns = self.spec, self.columns
        # as many fields as the first line has: a '|' inside the text stays in the text
        fields = [f.strip() for f in line.split("|", columns["count"] - 1)]
        self.scanned.found["metadata_lines"] += 1
        input_id = f"{spec.name}:{spec.metadata} line {number}"
        self.scanned.inventory.append(input_id)
        order, name = (self.index, number), fields[0]
        matches = _resolve(self.folder, name, self.audio)
        found = matches[0] if len(matches) == 1 else None
        item = f"{found or name or '?'} ({spec.metadata} line {number})"
        problem = _ambiguous(name, matches) or self._problem(number, fields, found, bad_bytes)
        if problem is not None:
            self.scanned.rejections.append(Rejection(spec.name, item, *problem, (input_id,), order))
            return
        line_speaker = _field(fields, columns, "speaker_name") or self.speaker
        stem = _stem(spec.name, found, self.taken)
        text = normalise_text(_field(fields, columns, "text"))
        self.scanned.jobs.append(
            Job(
                spec.name,
                item,
                self.audio[found],
                stem,
                line_speaker,
                order,
                (input_id,),
                text=text,
            )
        )

    def _problem(
        self, number: int, fields: list[str], found: str | None, bad_bytes: str | None
    ) -> tuple[str, str] | None:
        """(reason, kind) when the line cannot become a clip; claims its audio file first, so
        a later line naming the same file is the duplicate."""
        name, metadata = fields[0], self.spec.metadata
        if found and found not in self.claimed:
            self.claimed[found] = number
        elif found:
            return f"duplicate id: {found} is already listed on line {self.claimed[found]}", (
                "duplicate_id"
            )
        if bad_bytes:
            return (
                f"line {number} is not valid UTF-8 ({bad_bytes}): save {metadata} as UTF-8",
                "undecodable_text",
            )
        if len(fields) < 2 or not name:
            return (
                f"line {number} is not 'file|text' (no '|' separator or no file name)",
                "bad_metadata_line",
            )
        if name in self.listed and not found:
            return f"duplicate id: {name} is already listed on line {self.listed[name]}", (
                "duplicate_id"
            )
        self.listed.setdefault(name, number)
        if not found:
            return (
                (
                    f"audio file not found: no {name} (with or without an audio extension) in "
                    f"{self.folder}; fix the file name on line {number} or add the file"
                ),
                "missing_file",
            )
        return None

    def _reject_unclaimed(self, n_lines: int) -> None:
        spec = self.spec
        for n, rel in enumerate(sorted(self.audio), start=1):
            if rel not in self.claimed:
                input_id = f"{spec.name}:{rel}"
                self.scanned.inventory.append(input_id)
                self.scanned.rejections.append(
                    Rejection(
                        spec.name, rel,
                        f"no transcript: {rel} has no line in {spec.metadata}; add 'file|text' "
                        "or remove the file",
                        "no_transcript", (input_id,), (self.index, n_lines + n),
                    )
                )  # fmt: skip


def _ambiguous(name: str, matches: list[str]) -> tuple[str, str] | None:
    """(reason, kind) when a metadata name matches several files that differ only in case."""
    if len(matches) < 2:
        return None
    reason = (
        f"ambiguous file name: {name} matches {', '.join(matches)} (they differ only in "
        "case); rename one of them or write the name exactly"
    )
    return reason, "ambiguous_file"


def _decode(raw: bytes) -> tuple[str, str | None]:
    """A metadata line as text, and where its first invalid UTF-8 byte is (None when valid)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{raw[exc.start]:02x} at position {exc.start + 1}"
        return raw.decode("utf-8", errors="replace"), bad


def _columns(fields: list[str]) -> dict[str, int]:
    """Column positions from the first line: a header, or the shape of the data.

    Without a header, 2 columns are ``file|text``; 3 or more are LJSpeech's
    ``id|text|normalized text`` (the normalized text is used when present).
    """
    names = [f.strip().lower() for f in fields]
    if names and names[0] in _HEADER_FILE and "text" in names:
        cols = {"audio_file": 0, "text": names.index("text"), "header": 1, "count": len(names)}
        if "speaker_name" in names:
            cols["speaker_name"] = names.index("speaker_name")
        return cols
    if len(fields) >= 3:
        return {"audio_file": 0, "text": 2, "raw_text": 1, "count": 3}
    return {"audio_file": 0, "text": 1, "count": 2}


def _field(fields: list[str], columns: dict[str, int], name: str) -> str:
    i = columns.get(name)
    value = fields[i] if i is not None and i < len(fields) else ""
    if not value and name == "text" and "raw_text" in columns:  # LJSpeech: empty normalized
        value = fields[columns["raw_text"]] if len(fields) > 1 else ""
    return value


def _resolve(folder: Path, name: str, audio: dict[str, Path]) -> list[str]:
    """The audio files a metadata name may point at: as written, with an audio extension added,
    or under ``wavs/`` (LJSpeech layout); an exact match first, else every file whose name
    matches in any case (a table written on Windows names ``a.wav`` for ``A.WAV``). One match
    resolves the name; two or more make it ambiguous."""
    name = name.replace("\\", "/").removeprefix("./")
    folded: dict[str, list[str]] = {}  # casefolded path, and casefolded path sans extension
    for rel in audio:
        folded.setdefault(rel.casefold(), []).append(rel)
        folded.setdefault(rel[: -len(Path(rel).suffix)].casefold(), []).append(rel)
    for prefix in ("", "wavs/"):
        if prefix + name in audio:
            return [prefix + name]
    for prefix in ("", "wavs/"):
        base = (prefix + name).casefold()
        matches = sorted(set(folded.get(base, [])))
        if matches:
            return matches
    return []


# --- long recordings with subtitles ---------------------------------------------------------


def _scan_subtitles(scanned: ScannedSource, index: int, speaker: str) -> None:
    spec = scanned.spec
    folder = spec.path
    recordings = _files(folder, AUDIO_EXTENSIONS)
    subtitles: dict[str, list[Path]] = {}
    for path in _files(folder, SUBTITLE_EXTENSIONS):
        subtitles.setdefault(_rel(path.with_suffix(""), folder), []).append(path)
    scanned.found = {
        "recordings": len(recordings),
        "subtitle_files": sum(map(len, subtitles.values())),
    }
    taken: set[str] = set()
    used: set[str] = set()
    for n, recording in enumerate(recordings, start=1):
        rel = _rel(recording, folder)
        key = _rel(recording.with_suffix(""), folder)
        order = (index, n)

        def reject_recording(input_id: str, reason: str, kind: str) -> None:
            scanned.inventory.append(input_id)
            scanned.rejections.append(
                Rejection(spec.name, rel, reason, kind, (input_id,), order)  # noqa: B023
            )

        if key not in subtitles:
            reason = f"no transcript: no {key}.srt or {key}.vtt next to this recording"
            reject_recording(f"{spec.name}:{rel}", reason, "no_transcript")
            continue
        used.add(key)
        subtitle = min(subtitles[key], key=lambda p: p.suffix != ".srt")  # .srt first
        sub_rel = _rel(subtitle, folder)
        cues = parse_subtitles(subtitle.read_bytes().decode("utf-8-sig", errors="replace"))
        if not cues:
            reason = f"{sub_rel} has no cues (expected SRT/WebVTT 'start --> end' lines)"
            reject_recording(f"{spec.name}:{sub_rel}", reason, "bad_subtitles")
            continue
        job_cues = _checked_cues(scanned, rel, sub_rel, cues, order)
        if job_cues:
            scanned.jobs.append(
                Job(spec.name, rel, recording, _stem(spec.name, rel, taken), speaker, order,
                    cues=sorted(job_cues, key=lambda c: c.start))
            )  # fmt: skip
    _reject_unused_subtitles(scanned, subtitles, used, index)


def _checked_cues(
    scanned: ScannedSource, rel: str, sub_rel: str, cues: list, order: tuple[int, ...]
) -> list[Cue]:
    """The recording's cues that can be cut; a cue that ends before it starts or has no text is
    rejected, with its place in the recording."""
    spec, job_cues = scanned.spec, []
    for k, (start, end, raw_text) in enumerate(cues, start=1):
        input_id = f"{spec.name}:{sub_rel} cue {k}"
        scanned.inventory.append(input_id)
        text = normalise_text(raw_text)
        problem = None
        if end <= start:
            problem = f"cue {k} ends ({clock(end)}) before it starts ({clock(start)})"
        elif not text:
            problem = f"cue {k} has no text"
        if problem:
            item = f"{rel} {clock(start)}-{clock(end)} (cue {k})"
            scanned.rejections.append(
                Rejection(spec.name, item, problem, "bad_subtitles", (input_id,), (*order, k))
            )
        else:
            job_cues.append(Cue(start, end, text, (input_id,)))
    return job_cues


def _reject_unused_subtitles(
    scanned: ScannedSource, subtitles: dict[str, list[Path]], used: set[str], index: int
) -> None:
    """Subtitle files no recording used: a second file of the same name, or no recording."""
    spec, folder = scanned.spec, scanned.spec.path
    unused = [p for key, paths in subtitles.items() for p in paths if key not in used]
    for path in [p for key in sorted(used) for p in sorted(subtitles[key])[1:]] + unused:
        rel = _rel(path, folder)
        input_id = f"{spec.name}:{rel}"
        scanned.inventory.append(input_id)
        reason = (
            f"another subtitle file of the same name is used for {Path(rel).stem}"
            if path not in unused
            else "no recording named like this subtitle file"
        )
        scanned.rejections.append(
            Rejection(spec.name, rel, reason, "unused_subtitles", (input_id,), (index, 10**6))
        )


# --- long recordings without transcript -----------------------------------------------------


def _scan_untranscribed(
    scanned: ScannedSource,
    index: int,
    speaker: str,
    config: DataPrepConfig,
    asr: Transcriber | None,
) -> None:
    """Transcribe and cut with Whisper; without ASR, cut by voice activity and list as
    untranscribed."""
    spec = scanned.spec
    recordings = _files(spec.path, AUDIO_EXTENSIONS)
    scanned.found = {"recordings": len(recordings)}
    heard: list[tuple[str, np.ndarray, list, list[str]]] = []
    for n, recording in enumerate(recordings, start=1):
        rel = _rel(recording, spec.path)
        order = (index, n)
        try:
            audio = decode(recording, 16000).samples
        except AudioProblem as exc:
            input_id = f"{spec.name}:{rel}"
            scanned.inventory.append(input_id)
            scanned.rejections.append(
                Rejection(spec.name, rel, str(exc), "unreadable_audio", (input_id,), order)
            )
            continue
        if asr is None:
            _report_untranscribed(scanned, rel, audio, order, config)
            continue
        stretches = asr.hear(audio)
        ids = [f"{spec.name}:{rel} speech {k}" for k in range(1, len(stretches) + 1)]
        scanned.inventory.extend(ids or [f"{spec.name}:{rel}"])
        if not stretches:
            scanned.rejections.append(
                Rejection(spec.name, rel, "no speech recognised", "no_speech",
                          (f"{spec.name}:{rel}",), order)
            )  # fmt: skip
            continue
        heard.append((rel, audio, stretches, ids))
    if asr is not None:
        _keep_heard(scanned, index, speaker, asr.judge(heard), recordings)


def _keep_heard(
    scanned: ScannedSource, index: int, speaker: str, heard: list[Heard], recordings: list[Path]
) -> None:
    """Jobs of the clips that passed, rejections of those that did not, rows for the card."""
    spec = scanned.spec
    scanned.asr_rows = heard_rows(heard)
    numbers = {_rel(p, spec.path): n for n, p in enumerate(recordings, start=1)}
    taken: set[str] = set()
    for rel in dict.fromkeys(h.recording for h in heard):
        order = (index, numbers[rel])
        cues = []
        for k, h in enumerate([h for h in heard if h.recording == rel], start=1):
            s = h.stretch
            if h.problem:
                item = f"{rel} {clock(s.start)}-{clock(s.end)} (speech {k})"
                scanned.rejections.append(
                    Rejection(spec.name, item, h.problem, h.kind or "asr", (h.input_id,),
                              (*order, k))
                )  # fmt: skip
            else:
                cues.append(Cue(s.start, s.end, normalise_text(s.text), (h.input_id,)))
        if cues:
            path = spec.path / rel
            scanned.jobs.append(
                Job(spec.name, rel, path, _stem(spec.name, rel, taken), speaker, order, cues=cues)
            )


def _report_untranscribed(
    scanned: ScannedSource, rel: str, audio: np.ndarray, order: tuple[int, ...],
    config: DataPrepConfig,
) -> None:  # fmt: skip
    """Without ASR: the speech voice activity finds, listed as rejected with the way out."""
    spec = scanned.spec
    found = speech_segments(audio, config.max_seconds)
    ids = [f"{spec.name}:{rel} speech {k}" for k in range(1, len(found) + 1)]
    scanned.inventory.extend(ids or [f"{spec.name}:{rel}"])
    if not found:
        scanned.rejections.append(
            Rejection(
                spec.name, rel, "no speech found by voice activity detection", "no_speech",
                (f"{spec.name}:{rel}",), order,
            )
        )  # fmt: skip
        return
    cues = [Cue(a, b, "", (i,)) for (a, b), i in zip(found, ids)]
    cues = merge_short(cues, config.min_seconds, config.max_seconds, config.max_merge_gap_s)
    minutes = sum(c.duration for c in cues) / 60
    scanned.rejections.append(
        Rejection(
            spec.name, rel,
            f"no transcript: {len(cues)} speech clips ({minutes:.1f} min) found by voice "
            "activity; set asr_model (e.g. 'base', which works offline) to transcribe them, "
            "or add subtitles",
            "untranscribed", tuple(ids), order,
        )
    )  # fmt: skip
