"""How sure a difference is: Wilson intervals for rates, a paired bootstrap for differences, and
the one rule that turns an interval into a verdict.

- ``wilson_interval(k, n)``: the 95 % Wilson score interval of a rate (failures per take); it
  stays inside [0, 1] and is honest at 0 of n, where the normal approximation says "0 ± 0".
- ``paired_bootstrap(...)``: the mean difference between two candidates on the same units
  (sentences, each with its takes kept together; or clips), a percentile interval from
  resampling the units with replacement, and the win rate. Seeded (``BOOTSTRAP_SEED`` unless
  given), so a report is reproducible to the digit.
- ``verdict(...)``: ``better`` only when the whole interval lies beyond the metric's practical
  floor in the candidate's favour, ``worse`` when it lies beyond it against, else
  ``indistinguishable``.

Pure numpy: the evaluation stage, the decision and the training stage's choice among checkpoints
share it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_SEED = 20261206  # fixed: the same data gives the same interval every time
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
BETTER, WORSE, SAME = "better", "worse", "indistinguishable"

# +1: higher is better; -1: lower is better.
DIRECTION = {
    "mel_ce": -1,
    "text_ce": -1,
    "voice_mel_ce": -1,
    "cer": -1,
    "speaker_similarity": +1,
    "mos": +1,
    "rate_error": -1,
    "failure": -1,
    "runaway": -1,
    "truncated": -1,
    "skipped_or_repeated": -1,
}
# The practical floor of each metric: a difference whose whole interval is beyond zero but not
# beyond this is still called indistinguishable, because nobody would hear or act on it. These
# are the only fixed margins left in the decision; they are deliberately small (a fraction of
# the spread between takes of one sentence) so that the intervals, not judgment, decide.
PRACTICAL_FLOOR = {
    "mel_ce": 0.01,  # nats per audio token: ~0.3 % of a typical Mel CE near 3
    "text_ce": 0.0001,  # as the trainer logs it (x0.01): 1 % of the 0.01 tier step
    "voice_mel_ce": 0.01,
    "cer": 0.005,  # half a character in a hundred
    "speaker_similarity": 0.005,  # a quarter of resemblyzer's spread between takes of one voice
    "mos": 0.02,  # Distill-MOS points (1 to 5)
    "rate_error": 0.01,  # |log(seconds per character / the speaker's)|: 1 % tempo
}


@dataclass(frozen=True)
class Interval:
    """A paired difference (candidate minus against) with its interval and win rate."""

    n: int  # units resampled (sentences or clips)
    difference: float  # mean over units of the per-unit mean difference
    ci_low: float
    ci_high: float
    win_rate: float  # share of paired values where the candidate is better (ties count half)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie between 0 and n={n}.")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges, no rounding dust
    return low, 1.0 if k == n else min(1.0, centre + half)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def paired_bootstrap(
    candidate: np.ndarray,
    against: np.ndarray,
    units: np.ndarray,
    *,
    direction: int = 1,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The paired difference ``candidate - against`` with a percentile bootstrap interval.

    ``candidate[i]`` and ``against[i]`` are one pair (the same sentence and take, or the same
    clip); ``units[i]`` names the unit resampled (a sentence: its takes stay together). Each
    unit's pairs are averaged first, so every unit weighs the same. ``direction`` (+1 higher is
    better) only orients the win rate. NaN pairs are left out.
    """
    a, b = np.asarray(candidate, float), np.asarray(against, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    diff, groups = (a - b)[keep], np.asarray(units)[keep]
    if len(diff) == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    _, index = np.unique(groups, return_inverse=True)
    per_unit = np.bincount(index, weights=diff) / np.bincount(index)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_unit), size=(resamples, len(per_unit)))
    means = per_unit[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    signed = direction * diff
    wins = float(np.mean((signed > 0) + 0.5 * (signed == 0)))
    return Interval(len(per_unit), float(per_unit.mean()), float(low), float(high), wins)


def verdict(interval: Interval, direction: int, floor: float = 0.0) -> str:
    """``better`` / ``worse`` / ``indistinguishable`` from the candidate's side: better only when
    the whole interval lies beyond ``floor`` in its favour (``direction`` +1: higher is
    better), worse when it lies beyond it against; NaN is indistinguishable."""
    low, high = direction * interval.ci_low, direction * interval.ci_high
    low, high = min(low, high), max(low, high)
    if low > floor:
        return BETTER
    if high < -floor:
        return WORSE
    return SAME


def floor_of(metric: str) -> float:
    """The practical floor of ``metric`` (0 for a rate of failures or an unknown metric)."""
    return PRACTICAL_FLOOR.get(metric, 0.0)
