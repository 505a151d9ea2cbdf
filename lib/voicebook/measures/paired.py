"""Paired comparisons of candidates, measure by measure, with intervals and verdicts.

Two long tables carry the evidence (the evaluation stage publishes both; the training stage's
choice among checkpoints makes the same ones on the validation split):

- **takes**: one row per candidate, sentence and take (``candidate, sentence_id, take`` and a
  column per take measure: ``cer``, ``speaker_similarity``, ``mos``, ``rate_error`` and the
  failure flags). Every candidate spoke the same sentences with the same seeds and the same
  conditioning, so rows pair up on ``(sentence_id, take)``; the bootstrap resamples sentences,
  each with its takes.
- **clips**: one row per candidate and held-out clip (``candidate, audio_file, mel_ce,
  text_ce``); rows pair up on the clip, and the bootstrap resamples clips.

``compare(...)`` gives one :class:`Comparison` per measure; ``comparisons(...)`` every candidate
against one or more others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from voicebook.measures import stats

TAKE_METRICS = ("cer", "speaker_similarity", "mos", "rate_error", "failure")
FAILURE_METRICS = ("failure", "runaway", "truncated", "skipped_or_repeated")
CLIP_METRICS = ("mel_ce", "text_ce")
TAKE_KEYS = ["sentence_id", "take"]
CLIP_KEYS = ["audio_file"]


@dataclass(frozen=True)
class Comparison:
    """``candidate`` against ``against`` on one ``metric``: the mean paired difference
    (candidate minus against, in the metric's own units), its interval, and the verdict from
    the candidate's side."""

    candidate: str
    against: str
    metric: str
    n: int  # sentences (take measures) or clips (Mel CE, Text CE) resampled
    difference: float
    ci_low: float
    ci_high: float
    win_rate: float
    verdict: str  # better, worse or indistinguishable
    unit: str = "sentence"  # what was resampled: "sentence" (takes kept together) or "clip"
    takes: int = 0  # paired values behind it (sentences x takes, or clips)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _paired(table: pd.DataFrame, candidate: str, against: str, metric: str, keys: list[str]):
    mine = table[table["candidate"] == candidate].set_index(keys)[metric]
    theirs = table[table["candidate"] == against].set_index(keys)[metric]
    both = pd.concat([mine.rename("a"), theirs.rename("b")], axis=1, join="inner").dropna()
    return both


def compare(
    table: pd.DataFrame,
    candidate: str,
    against: str,
    metric: str,
    *,
    seed: int = stats.BOOTSTRAP_SEED,
    floor: float | None = None,
) -> Comparison:
    """``candidate`` against ``against`` on ``metric`` of ``table`` (a takes table or a clips
    table: the metric's name says which), paired bootstrap and verdict (``floor``: the metric's
    practical floor unless given)."""
    keys = CLIP_KEYS if metric in CLIP_METRICS else TAKE_KEYS
    unit = "clip" if metric in CLIP_METRICS else "sentence"
    direction = stats.DIRECTION[metric]
    empty = Comparison(candidate, against, metric, 0, math.nan, math.nan, math.nan, math.nan,
                       stats.SAME, unit)  # fmt: skip
    if table is None or table.empty or metric not in table:
        return empty
    both = _paired(table, candidate, against, metric, keys)
    if both.empty:
        return empty
    units = both.index.get_level_values(keys[0]).astype(str)
    found = stats.paired_bootstrap(
        both["a"].to_numpy(float), both["b"].to_numpy(float), np.asarray(units),
        direction=direction, seed=seed,
    )  # fmt: skip
    floor = stats.floor_of(metric) if floor is None else floor
    return Comparison(
        candidate, against, metric, found.n, found.difference, found.ci_low, found.ci_high,
        found.win_rate, stats.verdict(found, direction, floor), unit, len(both),
    )  # fmt: skip


def comparisons(
    takes: pd.DataFrame | None,
    clips: pd.DataFrame | None,
    candidates: Iterable[str],
    against: Iterable[str],
    *,
    take_metrics: Iterable[str] = TAKE_METRICS,
    clip_metrics: Iterable[str] = CLIP_METRICS,
    seed: int = stats.BOOTSTRAP_SEED,
) -> list[Comparison]:
    """Every candidate against every name in ``against`` (itself skipped), on each clip metric
    then each take metric that the tables hold; a metric no row measured is left out."""
    out = []
    for other in dict.fromkeys(against):
        for name in candidates:
            if name == other:
                continue
            for metric in clip_metrics:
                if clips is not None and metric in clips and clips[metric].notna().any():
                    out.append(compare(clips, name, other, metric, seed=seed))
            for metric in take_metrics:
                rows = takes_for(takes, metric)
                if rows is not None and metric in rows and rows[metric].notna().any():
                    out.append(compare(rows, name, other, metric, seed=seed))
    return [c for c in out if c.n > 0]


def takes_for(takes: pd.DataFrame | None, metric: str) -> pd.DataFrame | None:
    """The takes a metric is compared on: the failure flags on every take (the stress set is
    there to provoke them), the quality measures on the test sentences' (``set`` == "test")
    when the table marks a stress set."""
    if takes is None or metric in FAILURE_METRICS or "set" not in takes:
        return takes
    return takes[takes["set"] == "test"]


def as_table(found: Iterable[Comparison]) -> pd.DataFrame:
    """Comparisons as a table, one row each (the columns of :class:`Comparison`)."""
    rows = [c.to_dict() for c in found]
    columns = list(Comparison.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)


def summary(found: Iterable[Comparison], candidate: str, against: str) -> dict[str, list[str]]:
    """``{verdict: [metrics]}`` of ``candidate`` against ``against``."""
    out: dict[str, list[str]] = {stats.BETTER: [], stats.WORSE: [], stats.SAME: []}
    for c in found:
        if c.candidate == candidate and c.against == against:
            out[c.verdict].append(c.metric)
    return out


def beats(found: Iterable[Comparison]) -> bool:
    """The decision's rule for "distinguishably better overall": better on at least one measure
    and worse on none (``found``: one candidate against one other)."""
    verdicts = [c.verdict for c in found]
    return stats.BETTER in verdicts and stats.WORSE not in verdicts


def failure_rates(takes: pd.DataFrame, flags: Iterable[str]) -> pd.DataFrame:
    """Per candidate and flag: takes, failures, the rate per 100 takes and its 95 % Wilson
    interval (per 100 takes)."""
    rows = []
    for name, mine in takes.groupby("candidate", sort=False):
        for flag in flags:
            values = mine[flag].dropna().astype(bool) if flag in mine else pd.Series(dtype=bool)
            k, n = int(values.sum()), len(values)
            low, high = stats.wilson_interval(k, n)
            rows.append({"candidate": name, "failure": flag, "takes": n, "failures": k,
                         "per_100": 100 * k / n if n else math.nan,
                         "ci_low": 100 * low, "ci_high": 100 * high})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["candidate", "failure", "takes", "failures", "per_100", "ci_low", "ci_high"]
    )
