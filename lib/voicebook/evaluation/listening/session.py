"""The blind listening test: rating sessions and the ratings file (pure Python).

``listening_panel`` draws a session as widgets; ``listening_results`` summarises the ratings.

A ``ListeningSession`` shows one rater the synthesised samples with the candidates hidden behind
letters, in an order shuffled per rater and per item (seeded by rater name and item, so a rater
who returns sees the same letters). Every rating is appended to ``ratings.csv`` the moment it is
given (flushed and fsynced; the file is never rewritten), and a returning rater resumes with
what they have not rated yet.

The store is that CSV behind a file lock (``ratings.csv.lock``), so that many raters' kernels
(``voicebook listen`` starts one per page) append to it at once: a row is written whole under
the lock, and a reader takes the lock too, so it never sees half a row. Chosen over SQLite
because the CSV stays the one file the results, the report and a person read (no export to
keep in step), old experiments' files need no migration, and a few hundred appended rows need
nothing a database adds. A rater may go back and change a rating: that appends a row, and
the latest row counts. Two modes:

- ``scores``: each sample rated 1-10 for smoothness, naturalness, emotion and overall;
- ``ab``: two hidden candidates speaking the same sentence, and which one is preferred.

A hidden reference, as in MUSHRA (ITU-R BS.1534): where a test sentence is the transcript of a
held-out clip, the evaluation stage registers that real recording as the sample of candidate
``reference``; it hides behind a letter like any candidate. A rater who scores the real voice
below a synthesis of the same sentence slipped there (``listening_results`` says what follows).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import os
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

SCALES = ("smoothness", "naturalness", "emotion", "overall")
LOWEST, HIGHEST = 1, 10
MODES = ("scores", "ab")
TIE = "tie"
MIN_RATINGS = 3  # a listening mean from fewer ratings is shown, marked, and not used to decide
REFERENCE = "reference"  # the candidate name of a hidden real recording (see evaluation.py)
ANCHORS = {LOWEST: "very poor", HIGHEST: "excellent, like a real recording"}
COLUMNS = [
    "timestamp",
    "rater",
    "mode",
    "item",
    "sentence",
    "blind_code",
    "candidate",
    *SCALES,
    "other_candidate",
    "preferred",
    "audio",  # sha1 of the rated wav(s): which synthesis, hence which checkpoint, was heard
]


RATER_NAME = re.compile(r"^\w[\w .'-]{0,39}$")  # letters of any script, digits, space . ' - _
LOCK_TIMEOUT_S = 30.0
LOCK_POLL_S = 0.005  # filelock's default 0.05 s would make eight busy raters queue for seconds


class RatingsFileError(ValueError):
    """A ratings file this code cannot append to safely; it is left untouched."""


class ParametersNotRun(RuntimeError):
    """The notebook's parameters cell has not run in this kernel: which experiment is unknown."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the sentence is all a person needs."""
        return [f"\x1b[1;31m{self}\x1b[0m"]


PARAMETERS_FIRST = (
    "Run the first code cell (parameters) first: this kernel does not know the experiment yet "
    "(it was restarted or has just started). Then run this cell again. Nothing was read or saved."
)


def experiment_path(namespace: dict[str, Any]) -> Path:
    """The experiment folder the notebook's parameters cell named (``namespace``: its globals).

    Raises ``ParametersNotRun`` when that cell has not run in this kernel: falling back to a
    default experiment would show another experiment's samples and write to it.
    """
    from voicebook.core.paths import experiment_dir

    if "experiment" not in namespace:
        raise ParametersNotRun(PARAMETERS_FIRST)
    return experiment_dir(namespace["experiment"], namespace.get("outputs_dir") or None)


def check_rater_name(name: str) -> str:
    """``name`` stripped, or ValueError when it is empty or could be read as a path."""
    name = (name or "").strip()
    if not name:
        raise ValueError("Enter a rater name first: ratings are kept per rater.")
    if not RATER_NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"The rater name {name!r} cannot be used: use up to 40 letters, digits, spaces, "
            "'.', \"'\", '-' or '_' (no '/', '\\' or other symbols), starting with a letter."
        )
    return name


def _lock(path: Path) -> FileLock:
    """The lock every reader and writer of ``path`` holds (beside it: ``<name>.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S, poll_interval=LOCK_POLL_S)


@dataclass(frozen=True)
class Sample:
    """One synthesised clip: ``candidate`` speaking sentence ``sentence_id``."""

    candidate: str
    sentence_id: str
    text: str
    wav: Path


@dataclass(frozen=True)
class Trial:
    """What a rater is shown: one sentence, its samples behind letters (blind code -> sample)."""

    mode: str
    item: str
    text: str
    blind: dict[str, Sample]


def load_samples(eval_dir: str | Path) -> list[Sample]:
    """The samples the evaluation stage wrote (``eval/samples.csv``; wav paths relative to it)."""
    table_file = Path(eval_dir) / "samples.csv"
    if not table_file.is_file():
        return []
    table = pd.read_csv(table_file, dtype=str)
    return [
        Sample(r.candidate, r.sentence_id, r.text, Path(eval_dir) / r.wav)
        for r in table.itertuples()
    ]


def read_ratings(path: str | Path) -> pd.DataFrame:
    """Every rating in ``path`` (an empty table when there is none yet).

    Raises ``RatingsFileError`` when the header is not this code's, so nothing gets appended
    to a file of another layout.
    """
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    with _lock(path):
        return _read_locked(path)


def _read_locked(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    with path.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    if header != COLUMNS:
        raise RatingsFileError(
            f"{path} has the columns {header}, not the expected {COLUMNS}. It was left "
            "untouched: move it aside (or use another experiment) to start a new ratings file."
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    for scale in SCALES:
        table[scale] = pd.to_numeric(table[scale], errors="coerce")
    return table


def append_rating(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row to the ratings file, creating it with a header; flushed and fsynced,
    whole, under the lock (other raters' kernels append to the same file)."""
    path = Path(path)
    with _lock(path):
        _read_locked(path)  # refuses a file of another layout
        _append_locked(path, row)


def _append_locked(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    torn = not new and not _ends_with_newline(path)  # a crash mid-line: start a fresh line
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if new:
        writer.writerow(COLUMNS)
    writer.writerow([row.get(c, "") for c in COLUMNS])
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(("\r\n" if torn else "") + buffer.getvalue())  # one write: the row is whole
        f.flush()
        os.fsync(f.fileno())


def _on_scale(value: Any) -> bool:
    """An integer from LOWEST to HIGHEST (not a bool, a float or a string): what a page sends
    is checked here, where it is saved, not only by the buttons it offers."""
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    return is_int and LOWEST <= int(value) <= HIGHEST


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


@functools.lru_cache(maxsize=4096)
def audio_id(wav: Path, mtime_ns: int = 0) -> str:
    """Short content hash of a sample's wav (``mtime_ns`` only refreshes the cache)."""
    return hashlib.sha1(Path(wav).read_bytes()).hexdigest()[:12]


def _audio(sample: Sample) -> str:
    return audio_id(sample.wav, sample.wav.stat().st_mtime_ns)


def _rng(*parts: str) -> random.Random:
    return random.Random("|".join(parts))  # str seeds are stable across runs and machines


def _pair_audio(trial: Trial) -> str:
    """A/B: the two wavs' hashes in a fixed (candidate) order."""
    return "+".join(_audio(s) for s in sorted(trial.blind.values(), key=lambda s: s.candidate))


class ListeningSession:
    """One rater's blind listening session over ``samples``, persisted in ``ratings_path``."""

    def __init__(
        self,
        ratings_path: str | Path,
        rater: str,
        samples: list[Sample],
        mode: str = "scores",
        seed: str = "",
    ):
        rater = check_rater_name(rater)
        if mode not in MODES:
            raise ValueError(f"Unknown listening mode {mode!r}: use one of {MODES}.")
        if not samples:
            raise ValueError("No synthesised samples to rate: run the evaluation cells first.")
        self.path, self.rater, self.mode, self.seed = Path(ratings_path), rater, mode, seed
        self.trials = self._make_trials(samples)
        self._read: tuple[tuple[int, int] | None, pd.DataFrame] | None = None
        self._table()  # fail now, not at the first rating, on a foreign file

    def _table(self) -> pd.DataFrame:
        """Every rating on disk, read again only when the file changed (its size and time)."""
        try:
            stat = self.path.stat()
            key = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            key = None
        if self._read is None or self._read[0] != key:  # read after the stat: never older
            self._read = (key, read_ratings(self.path))
        return self._read[1]

    def _make_trials(self, samples: list[Sample]) -> list[Trial]:
        by_sentence: dict[str, list[Sample]] = {}
        for s in samples:
            by_sentence.setdefault(s.sentence_id, []).append(s)
        trials = []
        for sentence_id, group in by_sentence.items():
            group = sorted(group, key=lambda s: s.candidate)
            if self.mode == "ab":  # preferences compare models; the real voice is for scores
                group = [s for s in group if s.candidate != REFERENCE]
            sets = [group] if self.mode == "scores" else itertools.combinations(group, 2)
            for shown in sets:
                item = sentence_id
                if self.mode == "ab":
                    item += ":" + "|".join(s.candidate for s in shown)
                shown = list(shown)
                _rng(self.seed, self.rater, self.mode, item).shuffle(shown)
                codes = [chr(ord("A") + i) for i in range(len(shown))]
                trials.append(Trial(self.mode, item, group[0].text, dict(zip(codes, shown))))
        _rng(self.seed, self.rater, self.mode, "order").shuffle(trials)
        return trials

    # -- progress ---------------------------------------------------------------------------

    def _done(self) -> set[tuple]:
        table = self._table()
        mine = table[(table["rater"] == self.rater) & (table["mode"] == self.mode)]
        if self.mode == "scores":
            complete = mine[list(SCALES)].notna().all(axis=1)
            return {(r.sentence, r.candidate, r.audio) for r in mine[complete].itertuples()}
        return {
            (r.sentence, frozenset((r.candidate, r.other_candidate)), r.audio)
            for r in mine.itertuples()
        }

    def pending(self) -> list[tuple[Trial, str | None]]:
        """What this rater has not rated yet, in their order: (trial, blind code) for scores,
        (trial, None) for A/B."""
        done = self._done()
        if self.mode == "ab":
            return [
                (t, None)
                for t in self.trials
                if (t.text, frozenset(s.candidate for s in t.blind.values()), _pair_audio(t))
                not in done
            ]
        return [
            (t, code)
            for t in self.trials
            for code, s in t.blind.items()
            if (t.text, s.candidate, _audio(s)) not in done
        ]

    def items(self) -> list[tuple[Trial, str | None]]:
        """Everything this rater rates, in their order: (trial, blind code) for scores,
        (trial, None) for A/B. The panel steps through it, back as well as forward."""
        if self.mode == "ab":
            return [(t, None) for t in self.trials]
        return [(t, code) for t in self.trials for code in t.blind]

    def given(self, trial: Trial, code: str | None) -> dict[str, Any] | None:
        """This rater's latest rating of that sample (its scales) or pair (``choice``: the blind
        code preferred, or "tie"), or None when not rated yet."""
        table = self._table()
        mine = table[
            (table["rater"] == self.rater) & (table["mode"] == self.mode)
            & (table["item"] == trial.item)
        ]  # fmt: skip
        if code is not None:
            mine = mine[mine["candidate"] == trial.blind[code].candidate]
        if mine.empty:
            return None
        last = mine.iloc[-1]
        if self.mode == "scores":
            return {s: int(last[s]) for s in SCALES} | {"timestamp": last["timestamp"]}
        by_candidate = {s.candidate: c for c, s in trial.blind.items()}
        choice = TIE if last["preferred"] == TIE else by_candidate[last["preferred"]]
        return {"choice": choice, "timestamp": last["timestamp"]}

    def next(self) -> tuple[Trial, str | None] | None:
        """The next (trial, blind code) to rate, or None when this rater has rated everything."""
        todo = self.pending()
        return todo[0] if todo else None

    def progress(self) -> tuple[int, int]:
        """(rated, total) for this rater in this mode."""
        total = (
            sum(len(t.blind) for t in self.trials) if self.mode == "scores" else len(self.trials)
        )
        return total - len(self.pending()), total

    # -- recording --------------------------------------------------------------------------

    def _row(self, trial: Trial) -> dict[str, Any]:
        return {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "rater": self.rater,
            "mode": self.mode,
            "item": trial.item,
            "sentence": trial.text,
        }

    def record_scores(self, trial: Trial, code: str, scores: dict[str, int]) -> None:
        """Append the 1-10 ratings of the sample behind ``code``."""
        if self.mode != "scores":
            raise ValueError("This session is in A/B mode: use record_preference.")
        missing = [s for s in SCALES if s not in scores]
        bad = {s: v for s, v in scores.items() if not _on_scale(v)}
        if missing or bad or set(scores) - set(SCALES):
            raise ValueError(
                f"Give an integer {LOWEST}-{HIGHEST} for each of {', '.join(SCALES)} "
                f"(missing: {missing or 'none'}, out of range: {bad or 'none'})."
            )
        sample = trial.blind[code]
        row = self._row(trial) | {
            "blind_code": code,
            "candidate": sample.candidate,
            "audio": _audio(sample),
        }
        append_rating(self.path, row | {s: int(scores[s]) for s in SCALES})

    def record_preference(self, trial: Trial, choice: str) -> None:
        """Append an A/B preference: ``choice`` is "A", "B" or "tie"."""
        if self.mode != "ab":
            raise ValueError("This session is in scores mode: use record_scores.")
        if choice not in (*trial.blind, TIE):
            raise ValueError(f"Choose one of {list(trial.blind)} or {TIE!r}, not {choice!r}.")
        a, b = trial.blind["A"].candidate, trial.blind["B"].candidate
        preferred = TIE if choice == TIE else trial.blind[choice].candidate
        row = {
            "blind_code": choice,
            "candidate": a,
            "other_candidate": b,
            "preferred": preferred,
            "audio": _pair_audio(trial),
        }
        append_rating(self.path, self._row(trial) | row)
