"""The data-prep stage's settings (``DataPrepConfig``) and XTTS's hard limits on training clips."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voicebook.coqui.limits import MAX_WAV_SAMPLES as XTTS_MAX_WAV_SAMPLES
from voicebook.coqui.limits import MIN_SECONDS as XTTS_MIN_SECONDS
from voicebook.coqui.limits import SAMPLE_RATE as XTTS_SAMPLE_RATE
from voicebook.core.paths import REPO_ROOT

# XTTSDataset silently skips clips outside XTTS's limits (voicebook.coqui.limits, imported under
# the names data prep has always used): every kept clip is checked against them, so nothing
# is skipped later without a word.

# Duration bands (seconds, lower edge inclusive). A clip whose text ends with "?" is in the
# "question" category whatever its length; its band is still recorded.
DURATION_BANDS = {"short": (0.0, 4.0), "medium": (4.0, 7.0), "long": (7.0, float("inf"))}
CATEGORIES = ("short", "medium", "long", "question")

DEFAULT_SOURCES = (
    {"name": "quiz", "path": "data/demo/quiz"},
    {"name": "interview", "path": "data/demo/interview"},
)
SOURCE_KINDS = ("auto", "metadata", "subtitles", "untranscribed")
SOURCE_OPTIONS = {"name", "path", "kind", "speaker", "metadata"}


@dataclass
class SourceSpec:
    """One input source: a folder of clips with ``metadata.csv``, or of long recordings.

    ``kind``: ``"metadata"`` (clips + ``metadata.csv``), ``"subtitles"`` (long recordings with
    same-named ``.srt``/``.vtt``), ``"untranscribed"`` (long recordings transcribed and cut by
    speech recognition, ``DataPrepConfig.asr_model``) or ``"auto"`` (the metadata file if
    present, else subtitles if any, else untranscribed recordings).
    """

    name: str
    path: Path
    kind: str = "auto"
    speaker: str | None = None  # speaker_name column; default DataPrepConfig.speaker_name
    metadata: str = "metadata.csv"

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | SourceSpec) -> SourceSpec:
        """Build from a notebook dict; relative paths are relative to the repository."""
        if isinstance(spec, SourceSpec):
            return spec
        unknown = set(spec) - SOURCE_OPTIONS
        if unknown or "name" not in spec or "path" not in spec:
            raise ValueError(
                f"Source {spec!r}: give 'name' and 'path' (optional: 'kind', 'speaker', "
                f"'metadata'); unknown keys: {sorted(unknown) or 'none'}."
            )
        name = str(spec["name"])
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"Source name {name!r}: use letters, digits, '-' or '_'.")
        kind = spec.get("kind", "auto")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"Source {name!r}: kind {kind!r} is not one of {SOURCE_KINDS}.")
        path = Path(os.path.expanduser(str(spec["path"])))
        if not path.is_absolute():
            path = REPO_ROOT / path
        return cls(
            name=name,
            path=path,
            kind=kind,
            speaker=spec.get("speaker"),
            metadata=spec.get("metadata", "metadata.csv"),
        )


@dataclass
class DataPrepConfig:
    """Everything the data-prep stage needs; mirrored by ``00_data_prep.ipynb``'s parameters."""

    sources: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(s) for s in DEFAULT_SOURCES]
    )
    language: str = "hu"
    sample_rate: int = XTTS_SAMPLE_RATE
    # Clips under 2 s give XTTS under 1 s of conditioning audio (it conditions on half of a
    # short clip) and sit below the "short" band: rejected by default, merged where possible.
    min_seconds: float = 2.0
    max_seconds: float = 10.0  # after trimming; XTTS's own ceiling is ~11.6 s
    eval_fraction: float = 0.02  # the validation split: what the phases select on
    min_eval: int = 4
    test_fraction: float = 0.02  # the test split: what the evaluation reports
    min_test: int = 4
    seed: int = 0
    speaker_name: str = "speaker"
    target_lufs: float = -23.0  # EBU R128; leaves headroom so few clips hit the peak ceiling
    peak_ceiling_dbfs: float = -1.0  # gain is lowered (never limited) to keep peaks below this
    trim_top_db: float = 40.0  # silence = this far below the clip's loudest frame
    trim_margin_s: float = 0.05  # kept before and after the speech
    silence_lufs: float = -50.0  # quieter than this is "near-silent"
    max_clipped_fraction: float = 0.001  # share of samples at full scale
    chars_per_second: tuple[float, float] = (2.0, 30.0)  # text/audio fit, outside = mismatch
    max_merge_gap_s: float = 1.0  # subtitle cues closer than this may merge into one clip
    min_split_pause_s: float = 0.15  # shortest pause an over-long cue may be split at
    cue_padding_s: float = 0.2  # widen subtitle cues by this (not past neighbours)
    # Speech recognition for untranscribed recordings (voicebook.asr): "base" (offline, shipped
    # in the lock), a faster-whisper size name (downloaded: "large-v3" on a GPU host), a local
    # CTranslate2 folder, or "" to list untranscribed audio as rejected.
    asr_model: str = "base"
    asr_cut_pause_s: float = 0.5  # a clip always ends at a pause this long (a turn change)
    # Whisper's own thresholds for a failed decode (logprob_threshold, no_speech_threshold);
    # here the log-probability is the mean over the clip's words.
    asr_min_logprob: float = -1.0
    asr_max_no_speech: float = 0.6
    # Only the speaker: an ASR clip whose resemblyzer embedding is less similar than this to the
    # speaker's centroid is another voice (tests' espeak-ng interviews: the speaker 0.95-0.97,
    # the interviewer 0.57-0.60 in English, 0.66-0.72 in Hungarian).
    # 0 turns the check off.
    min_speaker_similarity: float = 0.75
    speaker_reference: list[str] = field(default_factory=list)  # clips of the voice; [] = centroid
    device: str = "auto"  # where speech recognition runs: auto | cpu | cuda
    workers: int = 0  # processes; 0 = one per CPU core, at most 8

    def __post_init__(self) -> None:
        if not XTTS_MIN_SECONDS <= self.min_seconds < self.max_seconds:
            raise ValueError(
                f"min_seconds={self.min_seconds} must be at least {XTTS_MIN_SECONDS} "
                f"(XTTS drops shorter clips) and below max_seconds={self.max_seconds}."
            )
        xtts_max = XTTS_MAX_WAV_SAMPLES / XTTS_SAMPLE_RATE
        if self.max_seconds > xtts_max:
            raise ValueError(
                f"max_seconds={self.max_seconds} is above XTTS's limit of {xtts_max:.2f} s "
                f"(max_wav_length {XTTS_MAX_WAV_SAMPLES} samples): XTTS would skip those clips. Use "
                "10 or less."
            )
        if self.sample_rate != XTTS_SAMPLE_RATE:
            raise ValueError(f"sample_rate={self.sample_rate}: XTTS v2 trains on 22050 Hz audio.")
        if not 0.0 <= self.eval_fraction < 0.5 or self.min_eval < 1:
            raise ValueError(
                f"eval_fraction={self.eval_fraction} must be in [0, 0.5) and "
                f"min_eval={self.min_eval} at least 1."
            )
        if not 0.0 <= self.test_fraction < 0.34 or self.min_test < 0:
            raise ValueError(
                f"test_fraction={self.test_fraction} must be in [0, 0.34) and "
                f"min_test={self.min_test} at least 0 (0 and 0.0: no test split)."
            )
        self.chars_per_second = tuple(self.chars_per_second)
        if not -1.0 < self.min_speaker_similarity < 1.0:
            raise ValueError(
                f"min_speaker_similarity={self.min_speaker_similarity}: a cosine similarity "
                "below 1 (0 turns the speaker check off; 0.75 separates voices well)."
            )

    def speaker_reference_files(self) -> list[Path]:
        """``speaker_reference`` as paths (relative ones from the repository); missing: error."""
        files = []
        for name in self.speaker_reference:
            path = Path(os.path.expanduser(str(name)))
            path = path if path.is_absolute() else REPO_ROOT / path
            if not path.is_file():
                raise FileNotFoundError(
                    f"speaker_reference {name!r}: no file {path}. Name clips of the speaker's "
                    "voice, or give [] to take the voice from each source's own clips."
                )
            files.append(path)
        return files

    def source_specs(self) -> list[SourceSpec]:
        specs = [SourceSpec.from_dict(s) for s in self.sources]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"Source names must be unique; got {names}.")
        if not specs:
            raise ValueError("No sources given: pass at least one {'name': ..., 'path': ...}.")
        return specs

    def max_samples(self) -> int:
        return min(int(self.max_seconds * self.sample_rate), XTTS_MAX_WAV_SAMPLES)

    def worker_count(self) -> int:
        return self.workers or max(1, min(8, os.cpu_count() or 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings that shape the data (for the card; not ``workers``)."""
        out = asdict(self)
        del out["workers"]
        out["sources"] = [
            {**s, "path": str(s["path"])} if isinstance(s, dict) else str(s) for s in self.sources
        ]
        out["chars_per_second"] = list(self.chars_per_second)
        return out


def duration_band(seconds: float) -> str:
    """``short`` / ``medium`` / ``long`` by ``DURATION_BANDS``."""
    return next(name for name, (lo, hi) in DURATION_BANDS.items() if lo <= seconds < hi)
