"""The blind listening test: rating logic (pure Python), its summary, and a thin widget panel.

A ``ListeningSession`` shows one rater the synthesised samples with the candidates hidden behind
letters, in an order shuffled per rater and per item (seeded by rater name and item, so a rater
who returns sees the same letters). Every rating is appended to ``ratings.csv`` the moment it is
given (flushed and fsynced; the file is never rewritten), and a returning rater resumes with
what they have not rated yet. Two modes:

- ``scores``: each sample rated 1-10 for smoothness, naturalness, emotion and overall;
- ``ab``: two hidden candidates speaking the same sentence, and which one is preferred.

A hidden reference, as in MUSHRA (ITU-R BS.1534): where a test sentence is the transcript of a
held-out clip, the evaluation stage registers that real recording as the sample of candidate
``reference``; it hides behind a letter like any candidate. A rater who scores the real voice
below a synthesis of the same sentence is flagged (``reference_check``), and the summaries can
leave flagged raters out (``listening_results``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import html
import itertools
import math
import os
import random
from collections.abc import Iterable
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

REFERENCE_COLUMNS = [
    "rater", "sentences", "reference_overall", "candidates_overall", "below_a_candidate",
    "flagged",
]  # fmt: skip


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = float(stats.sem(values))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _without(ratings: pd.DataFrame, raters: Iterable[str]) -> pd.DataFrame:
    return ratings[~ratings["rater"].isin(set(raters))]


def summarize(ratings: pd.DataFrame, exclude_raters: Iterable[str] = ()) -> pd.DataFrame:
    """Per candidate and scale: mean, 95 % t-interval and count of the 1-10 ratings
    (``exclude_raters`` left out). The hidden reference appears as candidate ``reference``."""
    ratings = _without(ratings, exclude_raters)
    scores = ratings[ratings["mode"] == "scores"]
    rows = []
    for candidate, group in scores.groupby("candidate", sort=True):
        for scale in SCALES:
            values = group[scale].dropna().to_numpy(dtype=float)
            if len(values):
                rows.append([candidate, scale, *_mean_ci(values), len(values)])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize_ab(ratings: pd.DataFrame, exclude_raters: Iterable[str] = ()) -> pd.DataFrame:
    """Per candidate: A/B comparisons, wins, losses, ties; win rate counts a tie as half."""
    ratings = _without(ratings, exclude_raters)
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


def reference_check(ratings: pd.DataFrame) -> pd.DataFrame:
    """How each rater scored the hidden real recording, one row per rater who heard it.

    Over the sentences where the rater gave an ``overall`` score to both the reference and at
    least one candidate: the mean overall of each, and on how many of those sentences the real
    voice scored below a candidate. Such a rater is ``flagged``: they either did not listen
    closely or did not hear the difference, so their scores say little about the candidates
    (MUSHRA screens out assessors the same way).
    """
    scores = ratings[(ratings["mode"] == "scores") & ratings["overall"].notna()]
    # A sample re-rated (new audio) counts with its latest rating.
    scores = scores.drop_duplicates(["rater", "sentence", "candidate"], keep="last")
    rows = []
    for rater, mine in scores.groupby("rater", sort=True):
        refs = mine[mine["candidate"] == REFERENCE].set_index("sentence")["overall"]
        others = mine[(mine["candidate"] != REFERENCE) & mine["sentence"].isin(refs.index)]
        if others.empty:
            continue
        best = others.groupby("sentence")["overall"].max()
        below = int((refs.loc[best.index] < best).sum())
        rows.append(
            [rater, len(best), float(refs.loc[best.index].mean()),
             float(others["overall"].mean()), below, below > 0]
        )  # fmt: skip
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def flagged_raters(ratings: pd.DataFrame) -> list[str]:
    """Raters who scored the real recording below a candidate on the same sentence."""
    check = reference_check(ratings)
    return check.loc[check["flagged"], "rater"].tolist()


@dataclass
class ListeningResults:
    """What the summary cell shows and glues: every rating, the summaries, the reference check."""

    ratings: pd.DataFrame
    summary: pd.DataFrame  # per candidate and scale, flagged raters left out when asked
    ab: pd.DataFrame
    reference: pd.DataFrame  # reference_check: one row per rater who heard the real voice
    excluded: list[str]  # raters left out of summary and ab

    def headline(self) -> str:
        n, raters = len(self.ratings), self.ratings["rater"].nunique()
        text = f"{n} ratings from {raters} raters on disk."
        flagged = self.reference.loc[self.reference["flagged"], "rater"].tolist()
        if flagged:
            verb = "left out of the summaries" if self.excluded else "kept (exclusion is off)"
            text += (
                f" Scored the real recording below a candidate, so {verb}: {', '.join(flagged)}."
            )
        elif not self.reference.empty:
            text += " Every rater who heard the hidden real recording scored it at least as high."
        return text


def listening_results(ratings_path: str | Path, exclude_flagged: bool = True) -> ListeningResults:
    """Read ``ratings_path`` and summarise it; ``exclude_flagged`` leaves out flagged raters."""
    ratings = read_ratings(ratings_path)
    check = reference_check(ratings)
    excluded = check.loc[check["flagged"], "rater"].tolist() if exclude_flagged else []
    return ListeningResults(
        ratings, summarize(ratings, excluded), summarize_ab(ratings, excluded), check, excluded
    )


# The notebook's listening cells take their settings from the parameters cell when it ran, and
# fall back to its defaults otherwise: each cell then also runs alone after a kernel restart.
def _setting(namespace: dict[str, Any], name: str) -> Any:
    from voicebook.config import defaults
    from voicebook.evaluation import EvalConfig

    return namespace.get(name, defaults(EvalConfig)[name])


def experiment_path(namespace: dict[str, Any]) -> Path:
    """The experiment folder named in ``namespace`` (the notebook's globals, or the defaults)."""
    from voicebook.paths import experiment_dir

    return experiment_dir(_setting(namespace, "experiment"), _setting(namespace, "outputs_dir"))


def experiment_panel(namespace: dict[str, Any]):
    """The listening panel over the experiment named in ``namespace`` (the notebook's globals)."""
    exp = experiment_path(namespace)
    panel = listening_panel(exp / "ratings.csv", load_samples(exp / "eval"), seed=exp.name)
    panel.state["experiment"] = exp
    return panel


def experiment_results(namespace: dict[str, Any]) -> ListeningResults:
    """``listening_results`` of the experiment named in ``namespace`` (the notebook's globals)."""
    exclude = bool(_setting(namespace, "exclude_flagged_raters"))
    return listening_results(experiment_path(namespace) / "ratings.csv", exclude)


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

PANEL_CLASS = "vb-listening"
MIN_PLAYER_SECONDS = 1.0  # a browser shows a shorter clip as "0:00 / 0:00"
KERNEL_GONE = (
    "The kernel behind this panel is gone (restarted or shut down): clicks here are no longer "
    "saved. Run this cell again to go on rating; what you saved is kept."
)
# Widgets mark their views "jupyter-widgets-disconnected" when the kernel goes away; ipywidgets
# shows only a tiny icon for it. This style makes a dead panel say so, and stops its clicks.
PANEL_STYLE = f"""<style>
.{PANEL_CLASS}.jupyter-widgets-disconnected::before {{
  content: "{KERNEL_GONE}"; display: block; padding: .6em .9em; margin-bottom: .5em;
  font: 600 14px/1.4 var(--jp-ui-font-family, sans-serif); color: #fff; background: #b00020;
  border-radius: 4px;
}}
.{PANEL_CLASS}.jupyter-widgets-disconnected > * {{ opacity: .35; pointer-events: none; }}
.{PANEL_CLASS} .widget-toggle-buttons {{ display: flex; align-items: center; }}
</style>"""
SCALE_HELP = {
    "smoothness": "no clicks, jumps, stutter or sudden changes",
    "naturalness": "sounds like a person speaking, not a machine",
    "emotion": "the tone fits the sentence",
    "overall": "how good the sample is, all in all",
}


def player_bytes(wav: Path) -> tuple[bytes, float]:
    """The wav to play and its duration in seconds; a clip under ``MIN_PLAYER_SECONDS`` gets
    trailing silence so that the player shows a real length instead of 0:00."""
    import io

    import soundfile as sf

    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    seconds = len(audio) / rate
    if seconds >= MIN_PLAYER_SECONDS:
        return Path(wav).read_bytes(), seconds
    padded = np.zeros((math.ceil(MIN_PLAYER_SECONDS * rate), audio.shape[1]), np.float32)
    padded[: len(audio)] = audio
    buffer = io.BytesIO()
    sf.write(buffer, padded, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), seconds


def _player(sample: Sample, code: str):
    """An audio player named "Sample X" for screen readers, with the clip's length beside it.

    Plain HTML rather than ``ipywidgets.Audio``: that widget cannot carry a name (its tooltip
    breaks the view in ipywidgets 8.1), and the data URL keeps the file's name off the page.
    """
    import base64

    data, seconds = player_bytes(sample.wav)
    src = "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")
    name = f"Sample {code}"
    return _html(
        f"<div style='display:flex;align-items:center;gap:.6em'>"
        f"<audio controls preload='metadata' aria-label='{name}' title='{name}' src='{src}'>"
        f"</audio><span title='length of {name}'>{seconds:.1f} s</span></div>"
    )


def _html(value: str = ""):
    """An HTML widget whose (hidden) label carries no "null" tooltip."""
    import ipywidgets as w

    return w.HTML(value, tooltip="")


def _scale(scale: str):
    import ipywidgets as w

    options = [(str(v), v) for v in range(LOWEST, HIGHEST + 1)]
    tips = [f"{scale}: {v} of {HIGHEST}" + (f" ({ANCHORS[v]})" if v in ANCHORS else "")
            for v in range(LOWEST, HIGHEST + 1)]  # fmt: skip
    return w.ToggleButtons(
        options=options,
        value=None,  # unrated: the rater must choose, nothing is pre-set
        description=scale,
        tooltip=f"{scale}: {SCALE_HELP[scale]}",
        tooltips=tips,
        style={"button_width": "3.2em", "description_width": "7em"},
        layout={"width": "auto"},  # ipywidgets' default 300 px would wrap the ten buttons
    )


def _anchor_legend() -> str:
    return (
        f"<div style='margin:.3em 0 .2em 7.5em'><b>{LOWEST}</b> = {ANCHORS[LOWEST]} · "
        f"<b>{HIGHEST}</b> = {ANCHORS[HIGHEST]}</div>"
    )


def listening_panel(ratings_path: str | Path, samples: list[Sample], seed: str = ""):
    """An ipywidgets panel over ``ListeningSession``: rater name, mode, blind samples, ratings.

    Blind: nothing in it names a candidate, and it shows no results (the summary cell does).
    A new name or mode takes effect at once; every sample starts unrated and is saved only when
    every scale is chosen; each save is confirmed; a panel whose kernel is gone says so.
    """
    import ipywidgets as w

    rater = w.Text(
        description="Rater",
        placeholder="your name, then Enter",
        tooltip="Your name: your ratings are saved under it",
        continuous_update=False,
    )
    mode = w.ToggleButtons(
        options=[("1-10 scores", "scores"), ("A/B preference", "ab")],
        description="Mode",
        tooltip="Rate samples one by one, or choose the better of two",
        tooltips=["Rate each sample 1-10 on four scales", "Choose the better of two samples"],
        layout={"width": "auto"},
    )
    start = w.Button(
        description="Start / resume", button_style="primary", tooltip="Rate as the name given"
    )
    status = _html()
    saved = _html()
    stage = w.VBox()
    state: dict[str, Any] = {"render": 0}

    def say(message: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#1b5e20"
        saved.value = (
            f"<div role='status' aria-live='polite' style='color:{colour}'>{message}</div>"
        )

    def begin(_: Any = None) -> None:
        state.pop("session", None)
        try:
            state["session"] = ListeningSession(
                ratings_path, rater.value, samples, mode.value, seed
            )
        except ValueError as exc:  # no name yet, no samples, a foreign ratings file
            stage.children, status.value = [], ""
            say(str(exc), error=True)
            return
        saved.value = ""
        show_next()

    def show_next() -> None:
        session: ListeningSession = state["session"]
        done, total = session.progress()
        upcoming = session.next()
        state["current"] = upcoming
        state["render"] += 1
        token = state["render"]
        who = f"Rating as <b>{html.escape(session.rater)}</b>"
        if upcoming is None:
            status.value = (
                f"{who}: all {total} rated. Thank you! The results are in the summary cell "
                "below (run it to refresh)."
            )
            stage.children = []
            return
        trial, code = upcoming
        if session.mode == "scores":  # the sample first, then the line that announces it
            stage.children = scores_stage(trial, code, token)
        else:
            stage.children = ab_stage(trial, token)
        status.value = f"{who}. {done} of {total} rated. Sentence: <i>{html.escape(trial.text)}</i>"

    def scores_stage(trial: Trial, code: str, token: int) -> list:
        scales = {s: _scale(s) for s in SCALES}
        save = w.Button(description="Save and next", button_style="success", disabled=True)
        hint = _html()

        def refresh(_: Any = None) -> None:
            left = [s for s, widget in scales.items() if widget.value is None]
            save.disabled = bool(left)
            hint.value = (
                f"Choose a value on every scale to save ({', '.join(left)} left)." if left else ""
            )
            save.tooltip = hint.value or f"Save the ratings of sample {code}"

        for widget in scales.values():
            widget.observe(refresh, "value")
        refresh()
        save.on_click(lambda _: rate(trial, code, {s: x.value for s, x in scales.items()}, token))
        header = _html(f"<b>Sample {code}</b>")
        legend = _html(_anchor_legend())
        return [
            header,
            _player(trial.blind[code], code),
            legend,
            *scales.values(),
            w.HBox([save, hint]),
        ]

    def ab_stage(trial: Trial, token: int) -> list:
        labels = {"A": "A is better", "B": "B is better", TIE: "No preference"}
        choices = []
        for choice, label in labels.items():
            button = w.Button(description=label, tooltip=f"Save: {label.lower()}")
            button.on_click(lambda _, c=choice: prefer(trial, c, token))
            choices.append(button)
        pair = [w.VBox([_html(f"<b>{c}</b>"), _player(s, c)]) for c, s in trial.blind.items()]
        return [w.HBox(pair), w.HBox(choices)]

    def current(token: int) -> bool:
        if token == state["render"] and "session" in state:
            return True
        say("Not saved: the panel changed (new name or mode) since that sample was shown.", True)
        return False

    def rate(trial: Trial, code: str, scores: dict[str, Any], token: int) -> None:
        if not current(token):
            return
        try:
            state["session"].record_scores(trial, code, scores)
        except (ValueError, OSError) as exc:
            say(f"Not saved: {html.escape(str(exc))}", error=True)
            return
        say(f"✓ Saved at {_now()}: sample {code}, overall {scores['overall']}.")
        show_next()

    def prefer(trial: Trial, choice: str, token: int) -> None:
        if not current(token):
            return
        try:
            state["session"].record_preference(trial, choice)
        except (ValueError, OSError) as exc:
            say(f"Not saved: {html.escape(str(exc))}", error=True)
            return
        said = "no preference" if choice == TIE else f"{choice} is better"
        say(f"✓ Saved at {_now()}: {said}.")
        show_next()

    def changed(_: Any) -> None:  # a new name or mode acts at once
        if rater.value.strip():
            begin()
        else:
            state.pop("session", None)
            stage.children, status.value = [], ""
            say("Enter a rater name first: ratings are kept per rater.", error=True)

    start.on_click(begin)
    rater.observe(changed, "value")
    mode.observe(changed, "value")
    if not samples:
        status.value = "No synthesised samples yet: run the evaluation cells above first."
        start.disabled = rater.disabled = mode.disabled = True
    else:
        status.value = "Enter your name (then Enter) to start or resume."
    header = w.HBox([rater, mode, start])
    panel = w.VBox([_html(PANEL_STYLE), header, status, saved, stage])
    panel.add_class(PANEL_CLASS)
    panel.state = state  # for tests and power users: the live session and current trial
    return panel


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")
