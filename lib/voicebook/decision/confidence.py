"""How sure the decision is: the evaluation's paired evidence (every candidate's takes of the
same sentences, every candidate's loss on the same held-out clips), compared pair by pair with
``voicebook.measures`` (seeded paired bootstrap, verdicts beyond the practical floors).

:class:`Paired` answers "is A better than B on this metric?" for any two candidates, computed
once per pair; the decision asks it instead of comparing point values against fixed margins.
"""

from __future__ import annotations

import pandas as pd

from voicebook.core.stages import EvaluationScraps
from voicebook.measures import paired as mp
from voicebook.measures import stats

# The measures the decision weighs, in the order a tie is broken (after Mel CE).
TIE_BREAKERS = ("speaker_similarity", "cer", "mos")
WORDS = {"mel_ce": "Mel CE", "text_ce": "Text CE", "cer": "CER", "mos": "Distill-MOS",
         "speaker_similarity": "speaker similarity", "rate_error": "tempo error",
         "failure": "failure rate"}  # fmt: skip


class Paired:
    """Comparisons between candidates from the evaluation's takes and per-clip losses."""

    def __init__(self, takes: pd.DataFrame | None, clips: pd.DataFrame | None,
                 seed: int = stats.BOOTSTRAP_SEED) -> None:  # fmt: skip
        self.takes, self.clips, self.seed = takes, clips, seed
        self._cache: dict[tuple[str, str], dict[str, mp.Comparison]] = {}

    @classmethod
    def from_evaluation(cls, evaluation: EvaluationScraps) -> Paired | None:
        """From the evaluation stage's scraps; None when it recorded no takes (an older run)."""
        takes, clips = evaluation.eval_takes, evaluation.eval_clip_losses
        if not isinstance(takes, pd.DataFrame) or takes.empty:
            return None
        settings = evaluation.eval_settings or {}
        return cls(takes, clips, int(settings.get("bootstrap_seed", stats.BOOTSTRAP_SEED)))

    def names(self) -> set[str]:
        return set(self.takes["candidate"].astype(str))

    def between(self, candidate: str, against: str) -> dict[str, mp.Comparison]:
        """``{metric: Comparison}`` of ``candidate`` against ``against`` (empty when either
        has no takes)."""
        key = (candidate, against)
        if key not in self._cache:
            found = mp.comparisons(self.takes, self.clips, [candidate], [against], seed=self.seed)
            self._cache[key] = {c.metric: c for c in found}
        return self._cache[key]

    def verdict(self, candidate: str, against: str, metric: str) -> str | None:
        """``better`` / ``worse`` / ``indistinguishable``, or None when unmeasured."""
        found = self.between(candidate, against).get(metric)
        return found.verdict if found is not None else None

    def beats(self, candidate: str, against: str) -> bool:
        """Distinguishably better on at least one measure and worse on none."""
        return mp.beats(self.between(candidate, against).values())

    def alike(self, candidate: str, against: str) -> bool:
        """Measured, and indistinguishable on every measure."""
        verdicts = [c.verdict for c in self.between(candidate, against).values()]
        return bool(verdicts) and set(verdicts) == {stats.SAME}

    def every(self, candidates: list[str], against: list[str]) -> list[mp.Comparison]:
        """Every candidate against each of ``against`` (itself skipped), in that order."""
        return [c for other in dict.fromkeys(against) for name in candidates if name != other
                for c in self.between(name, other).values()]  # fmt: skip


def said(c: mp.Comparison) -> str:
    """One comparison in words: the difference, its interval and what it rests on."""
    unit = "clips" if c.unit == "clip" else "sentences"
    return (
        f"{WORDS.get(c.metric, c.metric)} {c.difference:+.3g} (95 % interval {c.ci_low:+.3g} to "
        f"{c.ci_high:+.3g}, {c.n} {unit}{'' if c.unit == 'clip' else f', {c.takes} takes'})"
    )


def verdict_words(found: dict[str, mp.Comparison]) -> str:
    """``better on ..., worse on ..., indistinguishable on ...`` in one phrase."""
    parts = []
    for v in (stats.BETTER, stats.WORSE, stats.SAME):
        metrics = [WORDS.get(m, m) for m, c in found.items() if c.verdict == v]
        if metrics:
            parts.append(f"{v} on {', '.join(metrics)}" if v != stats.SAME else
                         f"indistinguishable on {', '.join(metrics)}")  # fmt: skip
    return "; ".join(parts)
