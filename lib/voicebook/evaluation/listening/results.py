"""What listeners said: the ratings that count, who and what was left out and why, and the
summaries the notebook shows, the decision weighs and the report prints.

- **The ratings that count.** ``ratings.csv`` is append-only: a rater who goes back and changes a
  rating adds a row. The latest row per rater, mode and sample counts (``current_ratings``);
  every earlier row stays on disk.
- **Post-screening with the hidden reference** (MUSHRA, ITU-R BS.1534-3 §4.1). A rater who scored
  the real recording below a synthesis of the same sentence *slipped* on that sentence: that
  sentence's ratings of that rater are left out, the rest are kept. MUSHRA leaves out an assessor
  who misses the hidden reference on more than 15 % of the items; here a test has a handful of
  sentences, where one slip would already be 20 %, so a rater is left out entirely only past
  ``MAX_SLIP_SHARE`` *and* with more than one slip.
- **Summaries.** Per candidate and scale: mean, 95 % t-interval, n, and whether n is below
  ``MIN_RATINGS`` (the decision does not use such a mean). A/B: per candidate, and per pair with a
  two-sided sign test over the non-tied answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from voicebook.core.stages import EvaluationScraps
from voicebook.evaluation.listening.session import (
    HIGHEST,
    LOWEST,
    MIN_RATINGS,
    REFERENCE,
    SCALES,
    TIE,
    experiment_path,
    read_ratings,
)

RATINGS_FILE = "ratings.csv"  # in the experiment folder: the store every rater appends to

MAX_SLIP_SHARE = 0.15
"""MUSHRA's post-screening share: past it (and past one slip) a rater is left out entirely."""

SUMMARY_COLUMNS = ["candidate", "scale", "mean", "ci_low", "ci_high", "n", "below_minimum"]
AB_COLUMNS = ["candidate", "comparisons", "wins", "losses", "ties", "win_rate"]
PAIR_COLUMNS = ["first", "second", "comparisons", "first_wins", "second_wins", "ties", "p_value"]
REFERENCE_COLUMNS = [
    "rater", "sentences", "reference_overall", "candidates_overall", "slips", "slip_share",
    "excluded",
]  # fmt: skip
LEFT_OUT_COLUMNS = ["rater", "sentence", "ratings", "reason"]
ALL_SENTENCES = "(all)"


def current_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """The latest row per rater and sample (scores) or rater and pair (A/B): a changed rating
    replaces the earlier one here, while both rows stay on disk."""
    if ratings.empty:
        return ratings
    columns = ["rater", "mode", "item", "sentence"]
    key = ratings[columns].astype(str).agg("\x1f".join, axis=1)
    key = key.where(ratings["mode"] == "ab", key + "\x1f" + ratings["candidate"])
    return ratings.loc[~key.duplicated(keep="last")]


def reference_slips(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per (rater, sentence) where the rater scored both the hidden real recording and a
    synthesis ``overall``: the reference's score, the best synthesis's, and whether it slipped."""
    scores = current_ratings(ratings)
    scores = scores[(scores["mode"] == "scores") & scores["overall"].notna()]
    refs = scores[scores["candidate"] == REFERENCE].set_index(["rater", "sentence"])["overall"]
    others = scores[scores["candidate"] != REFERENCE]
    best = others.groupby(["rater", "sentence"])["overall"].max()
    both = refs.index.intersection(best.index)
    table = pd.DataFrame(
        {"reference_overall": refs.loc[both], "best_synthesis_overall": best.loc[both]}
    ).reset_index()
    table["slipped"] = table["reference_overall"] < table["best_synthesis_overall"]
    return table


def reference_check(ratings: pd.DataFrame) -> pd.DataFrame:
    """How each rater who heard the hidden real recording scored it: on how many sentences, the
    mean overall of the reference and of the syntheses there, slips, their share, and whether
    the rater is left out entirely."""
    slips = reference_slips(ratings)
    scores = current_ratings(ratings)
    rows = []
    for rater, mine in slips.groupby("rater", sort=True):
        heard = scores[
            (scores["rater"] == rater)
            & (scores["mode"] == "scores")
            & scores["sentence"].isin(mine["sentence"])
            & (scores["candidate"] != REFERENCE)
        ]
        n_slips, share = int(mine["slipped"].sum()), float(mine["slipped"].mean())
        rows.append(
            [rater, len(mine), float(mine["reference_overall"].mean()),
             float(heard["overall"].mean()), n_slips, share, _excluded(n_slips, share)]
        )  # fmt: skip
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def _excluded(slips: int, share: float) -> bool:
    return slips > 1 and share > MAX_SLIP_SHARE


def screen(ratings: pd.DataFrame, exclude: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the current ratings that count, what was left out with its reason).

    With ``exclude`` off nothing is left out: the slips still show in ``reference_check``.
    """
    current = current_ratings(ratings)
    left_out = pd.DataFrame(columns=LEFT_OUT_COLUMNS)
    if not exclude or current.empty:
        return current, left_out
    check = reference_check(ratings).set_index("rater")
    slips = reference_slips(ratings)
    drop = pd.Series(False, index=current.index)
    rows = []
    for rater, mine in slips[slips["slipped"]].groupby("rater", sort=True):
        n, heard = int(check.loc[rater, "slips"]), int(check.loc[rater, "sentences"])
        if check.loc[rater, "excluded"]:
            gone = current["rater"] == rater
            why = (
                f"scored the real recording below a synthesis on {n} of {heard} sentences "
                f"({n / heard:.0%}, more than {MAX_SLIP_SHARE:.0%}): every rating left out"
            )
            rows.append([rater, ALL_SENTENCES, int(gone.sum()), why])
            drop |= gone
            continue
        for sentence in mine["sentence"]:
            gone = (current["rater"] == rater) & (current["sentence"] == sentence)
            why = "scored the real recording below a synthesis of this sentence"
            rows.append([rater, sentence, int(gone.sum()), why])
            drop |= gone
    if rows:
        left_out = pd.DataFrame(rows, columns=LEFT_OUT_COLUMNS)
    return current.loc[~drop], left_out


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = float(stats.sem(values))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    # Cut to the scale: no mean lies outside 1-10, and from 2 ratings the t-interval can span
    # -44 to 57, which reads as a broken number rather than as "we know almost nothing".
    return mean, max(float(low), LOWEST), min(float(high), HIGHEST)


def summarize(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per candidate and scale: mean, 95 % t-interval, n and whether n < ``MIN_RATINGS``, over
    ``ratings`` as given (screen them first). The hidden reference appears as ``reference``."""
    scores = ratings[ratings["mode"] == "scores"]
    rows = []
    for candidate, group in scores.groupby("candidate", sort=True):
        for scale in SCALES:
            values = group[scale].dropna().to_numpy(dtype=float)
            if len(values):
                rows.append([candidate, scale, *_mean_ci(values), len(values),
                             len(values) < MIN_RATINGS])  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize_ab(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: A/B comparisons, wins, losses, ties; win rate counts a tie as half."""
    counts: dict[str, dict[str, int]] = {}
    for r in ratings[ratings["mode"] == "ab"].itertuples():
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


def ab_pairs(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per pair of candidates: how often each was preferred, ties, and the two-sided sign-test
    p-value of the non-tied answers (NaN when every answer was a tie)."""
    ab = ratings[ratings["mode"] == "ab"]
    rows = []
    pairs = ab.apply(lambda r: tuple(sorted((r.candidate, r.other_candidate))), axis=1)
    for (first, second), group in ab.groupby(pairs, sort=True) if not ab.empty else []:
        a, b = int((group["preferred"] == first).sum()), int((group["preferred"] == second).sum())
        p = stats.binomtest(a, a + b, 0.5).pvalue if a + b else float("nan")
        rows.append([first, second, len(group), a, b, len(group) - a - b, float(p)])
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


@dataclass
class ListeningResults:
    """What the summary cell shows and glues, and the decision reads."""

    ratings: pd.DataFrame  # every row on disk, changed ratings included
    summary: pd.DataFrame  # per candidate and scale, after screening
    ab: pd.DataFrame  # per candidate
    pairs: pd.DataFrame  # per pair, with a sign test
    reference: pd.DataFrame  # reference_check: one row per rater who heard the real voice
    left_out: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LEFT_OUT_COLUMNS))

    @property
    def excluded(self) -> list[str]:
        """Raters left out entirely."""
        whole = self.left_out[self.left_out["sentence"] == ALL_SENTENCES]
        return whole["rater"].tolist()

    def headline(self) -> str:
        current = current_ratings(self.ratings)
        changed = len(self.ratings) - len(current)
        raters = self.ratings["rater"].nunique()
        text = f"{_count(len(current), 'rating')} from {_count(raters, 'rater')} on disk"
        text += f" ({changed} changed later; the latest counts)." if changed else "."
        if not self.left_out.empty:
            text += f" Left out: {len(self.left_out)} (see the table of what was left out)."
        elif not self.reference.empty:
            text += " Every rater who heard the hidden real recording scored it at least as high."
        few = self.summary[self.summary["below_minimum"] & (self.summary["scale"] == "overall")]
        if not few.empty:
            text += (
                f" Below the minimum of {MIN_RATINGS} ratings, not used to decide: "
                f"{', '.join(few['candidate'])}."
            )
        return text

    def scraps(self) -> dict[str, Any]:
        """The scraps the evaluation stage glues (``stages.py`` declares them)."""
        return {
            "listening_summary": self.summary,
            "ab_summary": self.ab,
            "ab_pairs": self.pairs,
            "hidden_reference": self.reference,
            "listening_left_out": self.left_out,
        }


def listening_results(ratings_path: str | Path, exclude_slips: bool = True) -> ListeningResults:
    """Read ``ratings_path``, screen it (``exclude_slips``) and summarise it."""
    ratings = read_ratings(ratings_path)
    kept, left_out = screen(ratings, exclude_slips)
    return ListeningResults(
        ratings, summarize(kept), summarize_ab(kept), ab_pairs(kept), reference_check(ratings),
        left_out,
    )  # fmt: skip


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def experiment_results(namespace: dict[str, Any]) -> ListeningResults:
    """``listening_results`` of the experiment named in ``namespace`` (the notebook's globals).

    Raises ``ParametersNotRun`` when the parameters cell has not run in this kernel, rather
    than summarising (and publishing into) another experiment.
    """
    folder = experiment_path(namespace)
    exclude = bool(namespace.get("exclude_flagged_raters", True))
    return listening_results(folder / RATINGS_FILE, exclude)


def with_ratings_on_disk(
    evaluation: dict[str, Any], experiment: str | Path, params: dict[str, Any]
) -> dict[str, Any]:
    """The evaluation's scraps with its listening tables computed afresh from the ratings on
    disk, screened as the evaluation's ``params`` say (``exclude_flagged_raters``): the decision
    and the report count every rating given since the summary cell last ran (raters on
    ``voicebook listen`` pages never run it). Unchanged when there is no evaluation or no
    ratings file."""
    ratings = Path(experiment) / RATINGS_FILE
    if not evaluation or not ratings.is_file():
        return evaluation
    exclude = bool(params.get("exclude_flagged_raters", True))
    return {**evaluation, **listening_results(ratings, exclude).scraps()}


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


# --- what the report and decision.json show --------------------------------------------------


def _table(table: Any, columns: list[str]) -> pd.DataFrame:
    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(columns=columns)


def overall_by_candidate(evaluation: dict[str, Any], candidates: list[str]) -> pd.DataFrame:
    """The ``overall`` scale for every candidate, those nobody scored included (n 0)."""
    summary = _table(EvaluationScraps.of(evaluation).listening_summary, SUMMARY_COLUMNS)
    overall = summary[summary["scale"] == "overall"].set_index("candidate")
    names = list(dict.fromkeys([*candidates, *overall.index]))
    rows = []
    for name in names:
        if name in overall.index:
            r = overall.loc[name]
            n = int(r["n"])
            note = (
                f"below the minimum of {MIN_RATINGS}: not used to decide" if n < MIN_RATINGS else ""
            )
            rows.append([name, r["mean"], r["ci_low"], r["ci_high"], n, note])
        else:
            rows.append([name, None, None, None, 0, "no scores"])
    columns = ["candidate", "overall_mean", "ci_low", "ci_high", "n", "note"]
    return pd.DataFrame(rows, columns=columns)


def report_tables(evaluation: dict[str, Any], candidates: list[str]) -> dict[str, pd.DataFrame]:
    """The listening section's tables, titled, in reading order."""
    evaluation = EvaluationScraps.of(evaluation)
    return {
        f"Overall score per candidate (95 % interval; fewer than {MIN_RATINGS} ratings are "
        "shown, not used)": overall_by_candidate(evaluation, candidates),
        "Every scale": _table(evaluation.listening_summary, SUMMARY_COLUMNS),
        "A/B preferences per pair (two-sided sign test over the non-tied answers)": _table(
            evaluation.ab_pairs, PAIR_COLUMNS
        ),
        "Hidden-reference check per rater": _table(evaluation.hidden_reference, REFERENCE_COLUMNS),
        "Left out, and why": _table(evaluation.listening_left_out, LEFT_OUT_COLUMNS),
    }


def listening_facts(evaluation: dict[str, Any], candidates: list[str]) -> dict[str, Any]:
    """The same facts as plain JSON-ready lists, for ``decision.json``."""
    tables = report_tables(evaluation, candidates)
    keys = ["overall", "scales", "ab_pairs", "reference_check", "left_out"]
    facts = {
        key: [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]
        for key, table in zip(keys, tables.values(), strict=True)
    }
    return {"min_ratings": MIN_RATINGS, "max_slip_share": MAX_SLIP_SHARE, **facts}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value
