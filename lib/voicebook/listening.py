"""The blind listening test: rating logic (pure Python), its summary, and a thin widget panel.

A ``ListeningSession`` shows one rater the synthesised samples with the candidates hidden behind
letters, in an order shuffled per rater and per item (seeded by rater name and item, so a rater
who returns sees the same letters). Every rating is appended to ``ratings.csv`` the moment it is
given (flushed and fsynced; the file is never rewritten), and a returning rater resumes with
what they have not rated yet. Two modes:

- ``scores``: each sample rated 1-10 for smoothness, naturalness, emotion and overall;
- ``ab``: two hidden candidates speaking the same sentence, and which one is preferred.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

SCALES = ("smoothness", "naturalness", "emotion", "overall")
LOWEST, HIGHEST = 1, 10
MODES = ("scores", "ab")
TIE = "tie"
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
SUMMARY_COLUMNS = ["candidate", "scale", "mean", "ci_low", "ci_high", "n"]
AB_COLUMNS = ["candidate", "comparisons", "wins", "losses", "ties", "win_rate"]


class RatingsFileError(ValueError):
    """A ratings file this code cannot append to safely; it is left untouched."""


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
    """Append one row to the ratings file, creating it with a header; flushed and fsynced."""
    path = Path(path)
    read_ratings(path)  # refuses a file of another layout
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    torn = not new and not _ends_with_newline(path)  # a crash mid-line: start a fresh line
    with path.open("a", encoding="utf-8", newline="") as f:
        if torn:
            f.write("\r\n")
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow([row.get(c, "") for c in COLUMNS])
        f.flush()
        os.fsync(f.fileno())


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
        rater = rater.strip()
        if not rater:
            raise ValueError("Enter a rater name first: ratings are kept per rater.")
        if mode not in MODES:
            raise ValueError(f"Unknown listening mode {mode!r}: use one of {MODES}.")
        if not samples:
            raise ValueError("No synthesised samples to rate: run the evaluation cells first.")
        self.path, self.rater, self.mode, self.seed = Path(ratings_path), rater, mode, seed
        self.trials = self._make_trials(samples)
        read_ratings(self.path)  # fail now, not at the first rating, on a foreign file

    def _make_trials(self, samples: list[Sample]) -> list[Trial]:
        by_sentence: dict[str, list[Sample]] = {}
        for s in samples:
            by_sentence.setdefault(s.sentence_id, []).append(s)
        trials = []
        for sentence_id, group in by_sentence.items():
            group = sorted(group, key=lambda s: s.candidate)
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
        table = read_ratings(self.path)
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
        bad = {s: v for s, v in scores.items() if not (LOWEST <= int(v) <= HIGHEST)}
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


# --- summaries -----------------------------------------------------------------------------


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = float(stats.sem(values))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def summarize(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per candidate and scale: mean, 95 % t-interval and count of the 1-10 ratings."""
    scores = ratings[ratings["mode"] == "scores"]
    rows = []
    for candidate, group in scores.groupby("candidate", sort=True):
        for scale in SCALES:
            values = group[scale].dropna().to_numpy(dtype=float)
            if len(values):
                rows.append([candidate, scale, *_mean_ci(values), len(values)])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize_ab(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: A/B comparisons, wins, losses, ties; win rate counts a tie as half."""
    ab = ratings[ratings["mode"] == "ab"]
    counts: dict[str, dict[str, int]] = {}
    for r in ab.itertuples():
        for me in (r.candidate, r.other_candidate):
            c = counts.setdefault(me, {"comparisons": 0, "wins": 0, "losses": 0, "ties": 0})
            c["comparisons"] += 1
            c["ties" if r.preferred == TIE else "wins" if r.preferred == me else "losses"] += 1
    rows = [
        [name, c["comparisons"], c["wins"], c["losses"], c["ties"],
         (c["wins"] + 0.5 * c["ties"]) / c["comparisons"]]
        for name, c in sorted(counts.items())
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=AB_COLUMNS)


def summary_figure(summary: pd.DataFrame):
    """Mean rating per candidate and scale with its 95 % interval (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for candidate, rows in summary.groupby("candidate", sort=True):
        fig.add_bar(
            x=rows["scale"],
            y=rows["mean"],
            name=f"{candidate}",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": rows["ci_high"] - rows["mean"],
                "arrayminus": rows["mean"] - rows["ci_low"],
            },
            customdata=rows["n"],
            hovertemplate="%{x}: %{y:.2f} (n=%{customdata})",
        )
    fig.update_layout(barmode="group", yaxis={"range": [0, HIGHEST], "title": "mean rating"})
    return fig.update_layout(height=380, title="Blind listening: mean rating, 95 % interval")


# --- the widget panel ----------------------------------------------------------------------


def listening_panel(ratings_path: str | Path, samples: list[Sample], seed: str = ""):
    """An ipywidgets panel over ``ListeningSession``: rater name, mode, blind samples, ratings.

    Candidate names are never shown; the summary below the panel refreshes after each rating.
    """
    import ipywidgets as w

    rater = w.Text(description="Rater", placeholder="your name")
    mode = w.ToggleButtons(options=[("1-10 scores", "scores"), ("A/B preference", "ab")])
    start = w.Button(description="Start / resume", button_style="primary")
    status = w.HTML()
    stage = w.VBox()
    summary = w.Output()
    sliders = {s: w.IntSlider(value=5, min=LOWEST, max=HIGHEST, description=s) for s in SCALES}
    state: dict[str, Any] = {}

    def show_summary() -> None:
        summary.clear_output()
        with summary:
            from IPython.display import display

            try:
                table = read_ratings(ratings_path)
            except RatingsFileError as exc:
                print(exc)
                return
            display(summarize(table))
            display(summarize_ab(table))

    def audio(sample: Sample):
        return w.Audio.from_file(str(sample.wav), autoplay=False)

    def show_next() -> None:
        session: ListeningSession = state["session"]
        done, total = session.progress()
        upcoming = session.next()
        state["current"] = upcoming
        if upcoming is None:
            status.value = f"<b>{session.rater}</b>: all {total} rated. Thank you!"
            stage.children = []
            return
        trial, code = upcoming
        status.value = f"{done} of {total} rated. Sentence: <i>{trial.text}</i>"
        if session.mode == "scores":
            save = w.Button(description="Save and next", button_style="success")
            save.on_click(lambda _: rate(trial, code))
            header = w.HTML(f"<b>Sample {code}</b>")
            stage.children = [header, audio(trial.blind[code]), *sliders.values(), save]
        else:
            choices = [w.Button(description=label) for label in ("A is better", "B is better")]
            choices.append(w.Button(description="No preference"))
            for button, choice in zip(choices, ("A", "B", TIE)):
                button.on_click(lambda _, c=choice: prefer(trial, c))
            pair = [w.VBox([w.HTML(f"<b>{c}</b>"), audio(s)]) for c, s in trial.blind.items()]
            stage.children = [w.HBox(pair), w.HBox(choices)]

    def rate(trial: Trial, code: str) -> None:
        state["session"].record_scores(trial, code, {s: sl.value for s, sl in sliders.items()})
        show_next()
        show_summary()

    def prefer(trial: Trial, choice: str) -> None:
        state["session"].record_preference(trial, choice)
        show_next()
        show_summary()

    def begin(_: Any) -> None:
        try:
            state["session"] = ListeningSession(
                ratings_path, rater.value, samples, mode.value, seed
            )
        except ValueError as exc:
            status.value = f"<span style='color:#b00'>{exc}</span>"
            return
        show_next()

    start.on_click(begin)
    if not samples:
        status.value = "No synthesised samples yet: run the evaluation cells above first."
        start.disabled = True
    panel = w.VBox([w.HBox([rater, mode, start]), status, stage, summary])
    panel.state = state  # for tests and power users: the live session and current trial
    show_summary()
    return panel
