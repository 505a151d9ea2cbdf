"""The ASR transcripts as a folder a person can correct and feed back as a metadata source.

``<experiment>/asr_review/<source>/`` holds each kept ASR clip (cut from the recording at the
dataset's sample rate, not yet trimmed or normalised: data prep does that when it reads them)
and ``metadata.csv`` (``audio_file|text|speaker_name`` plus the ASR's numbers, which data prep
ignores). Correct the text, then give the folder as a source:
``{"name": "interview", "path": "outputs/anna/asr_review/interview", "kind": "metadata"}``.

A table a person edited is never overwritten: the folder records the sha256 of the table it
wrote, and when the file no longer matches it, the folder is left as it is.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from voicebook.dataprep.audio import AudioProblem, decode, to_pcm16, write_wav
from voicebook.dataprep.segments import Cue, padded

REVIEW_DIR = "asr_review"
VOICES_DIR = "voices"  # <experiment>/asr_review/voices/<source>/voice_<n>.wav: one example each
MAJORITY_SHARE = 0.6  # below this share of a source's speech, no voice holds a clear majority
REVIEW_TABLE = "metadata.csv"
_WRITTEN = ".written.sha256"
REVIEW_COLUMNS = (
    "audio_file", "text", "speaker_name", "recording", "start", "end", "mean_logprob",
    "no_speech_prob", "speaker_similarity",
)  # fmt: skip


def edited_by_a_person(folder: Path) -> bool:
    table, mark = folder / REVIEW_TABLE, folder / _WRITTEN
    if not table.is_file():
        return False
    digest = hashlib.sha256(table.read_bytes()).hexdigest()
    return not mark.is_file() or mark.read_text(encoding="utf-8").strip() != digest


def write_review(
    folder: Path, source_path: Path, rows: list[dict], speaker: str, padding_s: float,
    sample_rate: int,
) -> str:  # fmt: skip
    """Write the kept rows' clips and table into ``folder``; say what was done (for the card)."""
    if edited_by_a_person(folder):
        return f"kept as it is: {folder / REVIEW_TABLE} was edited (it is yours now)"
    kept = [r for r in rows if r["status"] == "kept"]
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    (building / "wavs").mkdir(parents=True)
    lines = ["|".join(REVIEW_COLUMNS)]
    for recording in dict.fromkeys(r["recording"] for r in kept):
        mine = [r for r in kept if r["recording"] == recording]
        try:
            decoded = decode(source_path / recording, sample_rate)
        except AudioProblem:
            continue  # already listed as unreadable by the scan
        total = decoded.samples.size / sample_rate
        cues = padded([Cue(r["start"], r["end"], r["text"], ()) for r in mine], padding_s, total)
        stem = Path(recording).with_suffix("").as_posix().replace("/", "_")
        for k, (row, cue) in enumerate(zip(mine, cues), start=1):
            name = f"wavs/{stem}_{k:03d}.wav"
            a, b = int(cue.start * sample_rate), int(cue.end * sample_rate)
            write_wav(building / name, to_pcm16(decoded.samples[a:b]), sample_rate)
            values = [name, row["text"], speaker] + [row[c] for c in REVIEW_COLUMNS[3:]]
            lines.append("|".join("" if v is None else str(v) for v in values))
    table = "\n".join(lines) + "\n"
    (building / REVIEW_TABLE).write_text(table, encoding="utf-8")
    (building / _WRITTEN).write_text(hashlib.sha256(table.encode()).hexdigest(), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    return f"{len(kept)} clips written to {folder} for review"


def voice_shares(rows: list[dict]) -> list[dict]:
    """Each voice the speaker check told apart in a source's ASR rows (``voice`` 1 is the kept
    one): its share of the speech, minutes, clips, and its longest clip as the example."""
    told = [r for r in rows if r.get("voice")]
    total = sum(r["end"] - r["start"] for r in told)
    shares = []
    for voice in sorted({r["voice"] for r in told}):
        mine = [r for r in told if r["voice"] == voice]
        seconds = sum(r["end"] - r["start"] for r in mine)
        example = max(mine, key=lambda r: r["end"] - r["start"])
        shares.append({
            "voice": voice, "kept": voice == 1, "share": round(seconds / total, 3),
            "minutes": round(seconds / 60, 2), "clips": len(mine),
            "example": f"{example['recording']} {example['start']}-{example['end']} s",
            "example_span": [example["recording"], example["start"], example["end"]],
        })  # fmt: skip
    return shares


def write_voice_examples(folder: Path, source_path: Path, rows: list[dict], sample_rate: int):
    """When no voice holds a clear majority (``MAJORITY_SHARE``): each voice's example clip
    (``voice_shares``) as ``folder/voice_<n>.wav``, a file to listen to and to name in
    ``speaker_reference``. Returns {voice: path}; {} when one voice holds the majority."""
    shares = voice_shares(rows)
    if not shares or max(v["share"] for v in shares) >= MAJORITY_SHARE:
        return {}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = {}
    for voice in shares:
        recording, start, end = voice["example_span"]
        decoded = decode(source_path / recording, sample_rate)
        a, b = int(start * sample_rate), int(end * sample_rate)
        path = folder / f"voice_{voice['voice']}.wav"
        write_wav(path, to_pcm16(decoded.samples[a:b]), sample_rate)
        written[voice["voice"]] = str(path)
    return written
