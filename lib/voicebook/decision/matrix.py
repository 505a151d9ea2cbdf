"""The decision matrix: which candidate model to ship, and why, from the stages' evidence.

Everything here is pure (plain values in, plain values out) so every rule is unit-tested:

- :class:`Thresholds` holds the configurable rules; the defaults are the practice the workbook grew
  from. Every threshold is an upper bound ("must be below"), so a value exactly on an edge falls in
  the worse band: Mel CE 2.5 is *improved* (not excellent), 3.0 is *marginal*, 3.5 is *no
  improvement*; Text CE 0.03 misses every tier and 0.04 is the alarm.
- :func:`gather_candidates` turns the scraps of an experiment (``read_experiment``) into one
  :class:`CandidateEvidence` per candidate, ordered base → phase 1 → phase 2 → others.
- :func:`decide` walks the candidates in order and keeps the newer one only when the rules say so;
  the base model (no fine-tune) is the fallback. It returns a :class:`Decision` whose reasons are
  plain sentences. Within a Mel CE tie (``listening_margin``) the listening scores decide, else
  speaker similarity, else CER (each only beyond its margin); a similarity drop or a CER rise
  against the base beyond its alarm margin blocks a candidate as a health alarm does.
- :func:`comparison_table` is the table of all candidates shown in the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core import stages as contract
from voicebook.core.thresholds import TEXT_CE_ALARM, text_ce_alarming
from voicebook.core.values import like
from voicebook.decision.confidence import TIE_BREAKERS, WORDS, Paired, said, verdict_words
from voicebook.evaluation.listening.session import MIN_RATINGS
from voicebook.measures.stats import BETTER, SAME, WORSE

# The stages whose results the decision reads (voicebook.core.stages: the one stage contract).
DATA_PREP, EVALUATION, DECISION = (
    contract.DATA_PREP.stem,
    contract.EVALUATION.stem,
    contract.DECISION.stem,
)
TRAINING_STAGES = {s.stem: s.short for s in contract.TRAINING}
BASE = "base"

BANDS = ("excellent", "improved", "marginal", "no improvement")
TIERS = ("exceptional", "target", "minimum", "below minimum")
ADOPTING_BANDS = ("excellent", "improved")  # bands in which a newer phase replaces the earlier one


@dataclass(frozen=True)
class Thresholds:
    """The rules of the decision matrix. Each value is an upper bound: a candidate is "below" it
    only when strictly smaller, so an exact edge belongs to the worse band."""

    mel_ce_excellent: float = 2.5
    """Eval Mel CE below this: *excellent*, use the newer phase; also needed for the target tier."""
    mel_ce_improved: float = 3.0
    """Below this (and not excellent): *improved*, use the newer phase; needed for the minimum
    tier."""
    mel_ce_marginal: float = 3.5
    """Below this (and not improved): *marginal* gain, keep the earlier phase. At or above it:
    *no improvement*, keep the earlier phase."""
    mel_ce_exceptional: float = 2.0
    """Eval Mel CE below this (with Text CE below ``text_ce_exceptional``): exceptional tier."""
    text_ce_max: float = 0.03
    """Text CE must stay below this for any tier (the scale the trainer logs, weight 0.01)."""
    text_ce_alarm: float = TEXT_CE_ALARM
    """Text CE at or above this disqualifies the candidate: it is forgetting how to read text."""
    text_ce_exceptional: float = 0.025
    """Text CE below this (with Mel CE below ``mel_ce_exceptional``): exceptional tier."""
    listening_margin: float = 0.1
    """Candidates whose Mel CE differ by at most this are a tie that the listening scores break.
    0.1 is about 3 % of a typical Mel CE near 3: below the noise of a small held-out set and below
    what listeners reliably hear, so the ears should decide there."""
    min_ratings: int = MIN_RATINGS
    """A listening mean from fewer ratings is shown but not used to decide."""
    similarity_margin: float = 0.02
    """In a Mel CE tie (within ``listening_margin``) that no listening scores decide, a speaker
    similarity higher by more than this breaks the tie. 0.02 is about the spread of resemblyzer
    similarity between takes of one speaker: less than that is not a different voice."""
    cer_margin: float = 0.02
    """Then (similarity within its margin or unmeasured) a CER lower by more than this breaks
    the tie: two characters in a hundred, about one word of ten-odd sentences."""
    similarity_drop_alarm: float = 0.05
    """Speaker similarity more than this below the base's: an alarm (the voice drifted), so the
    candidate cannot win on Mel CE alone, as with a health alarm."""
    cer_rise_alarm: float = 0.05
    """CER more than this above the base's: an alarm (it reads worse), as above."""

    @classmethod
    def from_dict(cls, overrides: dict[str, Any] | None = None) -> Thresholds:
        """The defaults with ``overrides`` applied (the notebook's ``thresholds = {}`` parameter)."""
        overrides = dict(overrides or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(
                f"Unknown threshold(s) {unknown} in the `thresholds` parameter; "
                f"valid keys are: {', '.join(valid)}."
            )
        try:
            typed = {k: like(getattr(cls, k), v, k) for k, v in overrides.items()}
        except ValueError as err:
            raise ValueError(f"Thresholds must be numbers; got {overrides}: {err}") from err
        return cls(**typed)

    def __post_init__(self) -> None:
        t = self
        if not t.mel_ce_exceptional <= t.mel_ce_excellent <= t.mel_ce_improved <= t.mel_ce_marginal:
            raise ValueError(
                "Mel CE thresholds must be ordered mel_ce_exceptional <= mel_ce_excellent <= "
                f"mel_ce_improved <= mel_ce_marginal; got {self}."
            )
        if not self.text_ce_exceptional <= self.text_ce_max <= self.text_ce_alarm:
            raise ValueError(
                "Text CE thresholds must be ordered text_ce_exceptional <= text_ce_max <= "
                f"text_ce_alarm; got {self}."
            )
        if self.listening_margin < 0 or self.min_ratings < 1:
            raise ValueError("listening_margin must be >= 0 and min_ratings >= 1.")
        margins = ("similarity_margin", "cer_margin", "similarity_drop_alarm", "cer_rise_alarm")
        if any(getattr(self, m) < 0 for m in margins):
            raise ValueError(f"{', '.join(margins)} must be >= 0; got {self}.")


@dataclass
class CandidateEvidence:
    """What is known about one candidate model. ``None`` means "not measured"."""

    name: str
    label: str = ""
    mel_ce: float | None = None
    text_ce: float | None = None
    source: str = "none"  # "evaluation" (same held-out set for all), "training" or "none"
    best_step: int | None = None
    checkpoint: str | None = None
    speaker_similarity: float | None = None
    cer: float | None = None  # character error rate of its test sentences (with a local ASR)
    listening_mean: float | None = None
    listening_n: int = 0
    overfitting: bool = False
    alarms: list[str] = field(default_factory=list)  # messages of health events "alarm"/"stop"
    split: str = ""  # the held-out split its numbers are on: "test" or "validation"
    stale: str | None = None  # why its numbers rest on a replaced run (voicebook.core.lineage)
    export_parity: str | None = None  # "identical", or the alarm (decision.parity); None: no export

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class Verdict:
    """The matrix's view of one candidate."""

    candidate: str
    band: str | None  # one of BANDS, None without a Mel CE
    tier: str | None  # one of TIERS, None when Mel CE or Text CE is unknown
    gain: float | None  # relative gain over the previous candidate: (prev - this) / prev
    status: str  # "ship", "not chosen", "disqualified" or "no numbers"
    notes: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """The recommendation: the winner, its tier, the reasons in plain words, every verdict."""

    winner: str
    winner_label: str
    winner_checkpoint: str | None
    tier: str | None
    reasons: list[str]
    verdicts: list[Verdict]
    thresholds: Thresholds
    ready: bool = True  # False when even the kept candidate fails the Text CE alarm
    stale: list[str] = field(default_factory=list)  # why the evidence is stale (then no winner)
    rerun: list[str] = field(default_factory=list)  # the stages to re-run first, in order
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # against base and winner
    finetuning_beat_zero_shot: bool | None = None  # None: no paired evidence, or nothing tuned

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``recommendation`` scrap and ``decision.json``)."""
        return asdict(self)


# --- bands and tiers -------------------------------------------------------------------------


def mel_band(mel_ce: float | None, t: Thresholds) -> str | None:
    """The band of an eval Mel CE; an exact edge falls in the worse band."""
    if mel_ce is None:
        return None
    if mel_ce < t.mel_ce_excellent:
        return "excellent"
    if mel_ce < t.mel_ce_improved:
        return "improved"
    if mel_ce < t.mel_ce_marginal:
        return "marginal"
    return "no improvement"


def tier(c: CandidateEvidence, t: Thresholds) -> str | None:
    """Success tier: minimum (Mel CE < 3.0, Text CE < 0.03, no overfitting), target (Mel CE <
    2.5), exceptional (Mel CE < 2.0 and Text CE < 0.025); None when a number is missing."""
    if c.mel_ce is None or c.text_ce is None:
        return None
    if c.overfitting or c.text_ce >= t.text_ce_max or c.mel_ce >= t.mel_ce_improved:
        return "below minimum"
    if c.mel_ce < t.mel_ce_exceptional and c.text_ce < t.text_ce_exceptional:
        return "exceptional"
    return "target" if c.mel_ce < t.mel_ce_excellent else "minimum"


def relative_gain(previous: float | None, this: float | None) -> float | None:
    """(previous - this) / previous: 0.1 means 10 % lower Mel CE than the previous candidate."""
    if previous is None or this is None or previous == 0:
        return None
    return (previous - this) / previous


# --- the decision ----------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{round(x, 4):g}"


def _listening(c: CandidateEvidence, t: Thresholds) -> float | None:
    """The candidate's overall listening mean when it rests on enough ratings."""
    return c.listening_mean if c.listening_n >= t.min_ratings else None


def _band_range(band: str, t: Thresholds) -> str:
    return {
        "excellent": f"below {t.mel_ce_excellent}",
        "improved": f"{t.mel_ce_excellent} to below {t.mel_ce_improved}",
        "marginal": f"{t.mel_ce_improved} to below {t.mel_ce_marginal}",
        "no improvement": f"{t.mel_ce_marginal} or above",
    }[band]


def _source_reason(candidates: list[CandidateEvidence]) -> str:
    sources = {c.source for c in candidates if c.mel_ce is not None}
    if not sources:
        return "No candidate has been measured yet (no training or evaluation results)."
    if sources == {"evaluation"}:
        splits = {c.split for c in candidates if c.mel_ce is not None}
        where = (
            "the same held-out test split, which no phase and no voice search selected on"
            if splits == {"test"}
            else "the same held-out set (the validation split, which the phases selected on)"
        )
        return (
            "Mel CE and Text CE come from the evaluation stage: every candidate was scored on "
            f"{where}."
        )
    training = [c.title for c in candidates if c.source == "training"]
    if sources == {"training"}:
        return (
            "No evaluation yet: Mel CE and Text CE are the training stages' best losses on the "
            "validation split they selected on. Run 03_evaluation to score every candidate, the "
            "base model included, on the test split."
        )
    return (
        f"Mixed sources: {', '.join(training)} not in the evaluation table, so their numbers come "
        "from training; re-run 03_evaluation to compare like with like."
    )


def _more(x: float, limit: float) -> bool:
    """x exceeds limit by more than rounding (0.80 - 0.75 is not more than 0.05)."""
    return x - limit > 1e-9


def metric_alarms(
    c: CandidateEvidence, base: CandidateEvidence, t: Thresholds, paired: Paired | None = None
) -> list[str]:
    """Sentences on a speaker-similarity drop or a CER rise against the base: with ``paired``
    evidence, when the candidate is distinguishably worse (its interval); without it (an
    evaluation recorded before takes), beyond the alarm margins. Empty when neither."""
    if paired is not None and paired.between(c.name, base.name):
        found = paired.between(c.name, base.name)
        return [
            f"{c.title} is distinguishably worse than {base.title} on {WORDS[m]}: {said(found[m])}."
            for m in ("speaker_similarity", "cer")
            if m in found and found[m].verdict == WORSE
        ]
    out = []
    for attr, worse, limit in (
        ("speaker_similarity", -1, t.similarity_drop_alarm),  # a drop is worse
        ("cer", 1, t.cer_rise_alarm),  # a rise is worse
    ):
        now, then = getattr(c, attr), getattr(base, attr)
        if now is not None and then is not None and _more(worse * (now - then), limit):
            out.append(_ALARM_WORDS[attr].format(
                c=c.title, b=base.title, now=_num(now), then=_num(then),
                by=_num(abs(now - then)), limit=limit,
            ))  # fmt: skip
    return out


_ALARM_WORDS = {
    "speaker_similarity": "{c}'s speaker similarity {now} is {by} below {b}'s {then} (alarm above "
    "a drop of {limit}): its voice may have drifted from the speaker's.",
    "cer": "{c}'s character error rate {now} is {by} above {b}'s {then} (alarm above a rise of "
    "{limit}): it reads the text less accurately.",
}


def _tie_break(kept: CandidateEvidence, c: CandidateEvidence, t: Thresholds):
    """In a Mel CE tie: (whether ``c`` wins, the sentence) from speaker similarity, else CER,
    when one differs by more than its margin; None when neither decides."""
    name, prev = c.title, kept.title
    lead = (
        f"{name} and {prev} are within {t.listening_margin} Mel CE of each other "
        f"({_num(c.mel_ce)} vs {_num(kept.mel_ce)}) and no listening scores separate them"
    )
    s, s0 = c.speaker_similarity, kept.speaker_similarity
    if s is not None and s0 is not None:
        if _more(abs(s - s0), t.similarity_margin):
            return s > s0, (
                f"{lead}, so speaker similarity breaks the tie: {name} {_num(s)} vs {prev} "
                f"{_num(s0)} (more than the {t.similarity_margin} margin; higher is closer to the "
                f"speaker) → {'use ' + name if s > s0 else 'keep ' + prev}."
            )
        lead += f", and their speaker similarity is within {t.similarity_margin}"
    e, e0 = c.cer, kept.cer
    if e is not None and e0 is not None and _more(abs(e - e0), t.cer_margin):
        return e < e0, (
            f"{lead}, so the character error rate breaks the tie: {name} {_num(e)} vs {prev} "
            f"{_num(e0)} (more than the {t.cer_margin} margin; lower reads better) → "
            f"{'use ' + name if e < e0 else 'keep ' + prev}."
        )
    return None


def _compare(
    kept: CandidateEvidence,
    c: CandidateEvidence,
    band: str,
    t: Thresholds,
    alarms: list[str] | None = None,
) -> tuple[bool, str]:
    """Whether the newer candidate ``c`` replaces ``kept``, and the sentence that says why
    (``alarms``: its speaker-similarity / CER alarms, which block it as health alarms do)."""
    assert c.mel_ce is not None
    name, prev = c.title, kept.title
    numbers_say_newer = band in ADOPTING_BANDS and (kept.mel_ce is None or c.mel_ce < kept.mel_ce)
    ears_c, ears_kept = _listening(c, t), _listening(kept, t)
    heard = ears_c is not None and ears_kept is not None
    blocked = c.overfitting or bool(c.alarms) or bool(alarms)
    flags = " and ".join(
        (["flagged for overfitting"] if c.overfitting else [])
        + ([f"has health alarms ({'; '.join(c.alarms)})"] if c.alarms else [])
        + (["has a speaker-similarity or CER alarm against the base"] if alarms else [])
    )
    where = (
        f"{name} (eval Mel CE {_num(c.mel_ce)}) is in the '{band}' band ({_band_range(band, t)})"
    )

    close = kept.mel_ce is not None and abs(c.mel_ce - kept.mel_ce) <= t.listening_margin
    if close and heard and ears_c != ears_kept:
        wins = ears_c > ears_kept
        caveat = f" ({name} is {flags}: only the listening scores can carry it)" if blocked else ""
        return wins, (
            f"{name} and {prev} are within {t.listening_margin} Mel CE of each other "
            f"({_num(c.mel_ce)} vs {_num(kept.mel_ce)}), so the listening scores decide: "
            f"listeners rated {name} {_num(ears_c)} (n={c.listening_n}) and {prev} "
            f"{_num(ears_kept)} (n={kept.listening_n}){caveat} → "
            f"{'use ' + name if wins else 'keep ' + prev}."
        )
    broken = _tie_break(kept, c, t) if close and not blocked else None
    if broken is not None:
        return broken
    if not numbers_say_newer:
        why = (
            f"not lower than {prev} ({_num(kept.mel_ce)})"
            if band in ADOPTING_BANDS
            else ("marginal gain" if band == "marginal" else "no improvement")
        )
        return False, f"{where}: {why}, keep {prev}."
    if blocked:
        if heard and ears_c >= ears_kept:
            return True, (
                f"{where} but is {flags}; it cannot win on Mel CE alone, and the listening "
                f"scores back it ({_num(ears_c)} vs {_num(ears_kept)} for {prev}): use {name}."
            )
        return False, (
            f"{where} but is {flags}; it cannot win on Mel CE alone and no listening scores "
            f"(at least {t.min_ratings} ratings for both) back it over {prev}: keep {prev}."
        )
    than = "" if kept.mel_ce is None else f", lower than {prev} ({_num(kept.mel_ce)})"
    return True, f"{where}{than}: use {name}."


def _compare_paired(
    kept: CandidateEvidence,
    c: CandidateEvidence,
    band: str,
    t: Thresholds,
    alarms: list[str],
    paired: Paired,
) -> tuple[bool, str]:
    """``_compare`` by the intervals: ``c`` replaces ``kept`` when it is distinguishably
    better on Mel CE in an adopting band, or indistinguishable on Mel CE and separated by the
    listening scores, then speaker similarity, CER or Distill-MOS; never on a coin's toss."""
    found, name, prev = paired.between(c.name, kept.name), c.title, kept.title
    if paired.alike(c.name, kept.name):
        return False, (
            f"{name} and {prev} are indistinguishable on every measure ({verdict_words(found)}): "
            f"neither is preferred, so {prev}, the earlier, stays."
        )
    mel, ears_c, ears_kept = found["mel_ce"], _listening(c, t), _listening(kept, t)
    heard = ears_c is not None and ears_kept is not None
    blocked = c.overfitting or bool(c.alarms) or bool(alarms)
    if mel.verdict == SAME:
        lead = f"{name} and {prev} are indistinguishable on Mel CE ({said(mel)})"
        if heard and ears_c != ears_kept:
            wins = ears_c > ears_kept
            return wins, (
                f"{lead}, so the listening scores decide: {name} {_num(ears_c)} "
                f"(n={c.listening_n}), {prev} {_num(ears_kept)} (n={kept.listening_n}) → "
                f"{'use ' + name if wins else 'keep ' + prev}."
            )
        separating = [found[m] for m in TIE_BREAKERS if m in found and found[m].verdict != SAME]
        if separating and not blocked:
            first = separating[0]
            wins = first.verdict == BETTER
            return wins, (
                f"{lead}; {WORDS[first.metric]} separates them: {said(first)} → "
                f"{'use ' + name if wins else 'keep ' + prev}."
            )
        return False, f"{lead}, and nothing else separates them for {name}: keep {prev}."
    where = (
        f"{name} (eval Mel CE {_num(c.mel_ce)}) is in the '{band}' band ({_band_range(band, t)})"
    )
    if mel.verdict == WORSE or band not in ADOPTING_BANDS:
        why = (f"worse than {prev} on Mel CE ({said(mel)})" if mel.verdict == WORSE
               else "marginal gain" if band == "marginal" else "no improvement")  # fmt: skip
        return False, f"{where}: {why}, keep {prev}."
    if blocked and not (heard and ears_c >= ears_kept):
        return False, (
            f"{where} and better than {prev} on Mel CE ({said(mel)}), but it has a health, "
            f"similarity or CER alarm and no listening scores back it: keep {prev}."
        )
    return True, f"{where}, better than {prev} on Mel CE ({said(mel)}): use {name}."


def zero_shot(
    kept: CandidateEvidence,
    candidates: list[CandidateEvidence],
    paired: Paired | None,
    reasons: list[str],
) -> tuple[CandidateEvidence, bool | None]:
    """When no fine-tuned candidate (one with a checkpoint) is distinguishably better than the
    base on some measure and worse on none, the base ships, with its best voice: a searched
    voice on the base that beats the base, else the base's reference-clip voice. Returns the
    candidate kept and whether fine-tuning beat zero-shot (None: nothing to tell)."""
    base = candidates[0]
    tuned = [c for c in candidates[1:] if c.checkpoint and c.mel_ce is not None]
    if paired is None or base.mel_ce is None or not tuned:
        return kept, None
    if any(paired.beats(c.name, base.name) for c in tuned):
        return kept, True
    voices = [c for c in candidates[1:] if not c.checkpoint and paired.beats(c.name, base.name)]
    best = max(voices, key=lambda c: sum(x.verdict == BETTER for x in
                                         paired.between(c.name, base.name).values()),
               default=base)  # fmt: skip
    reasons.append(
        f"Fine-tuning did not beat zero-shot here: no fine-tuned candidate "
        f"({', '.join(c.title for c in tuned)}) is distinguishably better than {base.title} on "
        f"any measure without being worse on another. Recommend {best.title}"
        + (", the base with its best voice." if best is not base else ", the base itself.")
    )
    return best, False


def decide(
    candidates: list[CandidateEvidence],
    thresholds: Thresholds | None = None,
    paired: Paired | None = None,
) -> Decision:
    """Walk the candidates in order (base → phase 1 → phase 2 → others); the first is the
    fallback, and each later one replaces the one kept so far only when the rules say so. With
    ``paired`` evidence a candidate is better on a measure only when its interval says so, and
    ``zero_shot`` keeps the base (with its best voice) when no fine-tune beats it."""
    if not candidates:
        raise ValueError("decide() needs at least one candidate (the base model is the fallback).")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"Candidate names must be unique (check the eval table): {names}.")
    t = thresholds or Thresholds()
    kept = candidates[0]
    reasons = [
        _source_reason(candidates),
        _fallback(kept),
    ]
    verdicts: list[Verdict] = []
    previous_mel: float | None = None
    for i, c in enumerate(candidates):
        band, notes = mel_band(c.mel_ce, t), _notes(c, candidates, t)
        gain = relative_gain(previous_mel, c.mel_ce)
        previous_mel = c.mel_ce
        status = "not chosen"
        if i > 0:
            status, kept = _weigh(c, kept, candidates, band, t, notes, reasons, paired)
        verdicts.append(Verdict(c.name, band, tier(c, t), gain, status, notes))

    kept, beat = zero_shot(kept, candidates, paired, reasons)
    ready = kept.mel_ce is not None and not text_ce_alarming(kept.text_ce, t.text_ce_alarm)
    if kept.mel_ce is None:  # nothing unmeasured ships: not even the fallback
        reasons.append(_unmeasured(kept, candidates))
        kept, why = least_bad(candidates)
        reasons.append(why)
    elif not ready:
        reasons.append(
            f"Even {kept.title}, kept as the fallback, has Text CE {_num(kept.text_ce)} at or "
            f"above the alarm {t.text_ce_alarm}: nothing here is ready to ship. Check the base "
            "model and the transcripts before training again."
        )
        kept, why = least_bad(candidates)
        reasons.append(why)
    for v in verdicts:
        if v.candidate == kept.name:
            v.status = "ship" if ready else "least bad"
    winner_tier = tier(kept, t)
    reasons.append(_conclusion(kept, winner_tier, t, ready))
    found = (
        paired.every([c.name for c in candidates], [candidates[0].name, kept.name])
        if paired
        else []
    )
    return Decision(
        kept.name, kept.title, kept.checkpoint, winner_tier, reasons, verdicts, t, ready,
        comparisons=[c.to_dict() for c in found], finetuning_beat_zero_shot=beat,
    )  # fmt: skip


def _fallback(kept: CandidateEvidence) -> str:
    if kept.mel_ce is None:
        return (
            f"The fallback is {kept.title}: it is kept unless a later candidate earns its "
            "place, and ships only once measured."
        )
    return f"The fallback is {kept.title}: it ships unless a later candidate earns its place."


def _unmeasured(kept: CandidateEvidence, candidates: list[CandidateEvidence]) -> str:
    """Why the candidate kept so far cannot ship: nothing measured it."""
    if kept.name == BASE and any(c.source == "evaluation" for c in candidates):
        return (
            f"{kept.title} is the fallback, but the base was not evaluated; add it to "
            "`candidates` in 03_evaluation: nothing unmeasured ships, so nothing here is "
            "ready to ship."
        )
    return (
        f"{kept.title} is the fallback, but it has no measured Mel CE: nothing unmeasured "
        "ships, so nothing here is ready to ship."
    )


def _notes(c: CandidateEvidence, candidates: list[CandidateEvidence], t: Thresholds) -> list[str]:
    """What the matrix says about a candidate whatever is decided: Text CE, overfitting,
    health alarms, numbers that come from training rather than the shared evaluation."""
    notes = []
    if c.text_ce is not None and c.text_ce >= t.text_ce_max:
        alarming = text_ce_alarming(c.text_ce, t.text_ce_alarm)
        level = "at or above the alarm" if alarming else "not below"
        limit = t.text_ce_alarm if alarming else t.text_ce_max
        notes.append(f"Text CE {_num(c.text_ce)} is {level} {limit}.")
    if c.overfitting:
        notes.append("Its training stage was flagged for overfitting.")
    notes += [f"Health alarm at {a.rstrip('.')}." for a in c.alarms]
    if c.source == "training" and any(x.source == "evaluation" for x in candidates):
        notes.append("Numbers from training, not from the shared evaluation set.")
    return notes


def _weigh(
    c: CandidateEvidence,
    kept: CandidateEvidence,
    candidates: list[CandidateEvidence],
    band: str,
    t: Thresholds,
    notes: list[str],
    reasons: list[str],
    paired: Paired | None = None,
) -> tuple[str, CandidateEvidence]:
    """A later candidate against the one kept so far: its status and the one kept now. Its
    metric alarms go to ``notes``, the comparison's words to ``reasons``."""
    if c.mel_ce is None:
        reasons.append(f"{c.title} has no Mel CE yet: it cannot be compared.")
        return "no numbers", kept
    if c.export_parity and c.export_parity != "identical":
        reasons.append(f"{c.title} is disqualified: export parity {c.export_parity}.")
        return "disqualified", kept
    if text_ce_alarming(c.text_ce, t.text_ce_alarm):
        reasons.append(
            f"{c.title} is disqualified: Text CE {_num(c.text_ce)} is at or above the alarm "
            f"level {t.text_ce_alarm}."
        )
        return "disqualified", kept
    alarms = metric_alarms(c, candidates[0], t, paired)
    notes += alarms
    if paired is not None and "mel_ce" in paired.between(c.name, kept.name):
        adopt, reason = _compare_paired(kept, c, band, t, alarms, paired)
    else:
        adopt, reason = _compare(kept, c, band, t, alarms)
    reasons += [*alarms, reason]
    return "not chosen", (c if adopt else kept)


def withhold(d: Decision, stale: list[str], rerun: list[str]) -> Decision:
    """``d`` without a winner: its evidence rests on replaced runs or a checkpoint that is gone
    (``stale``, in words), so it recommends nothing and says what to re-run, in order."""
    for v in d.verdicts:
        if v.status in ("ship", "least bad"):
            v.status = "withheld"
    then = f"re-run {', then '.join(rerun)}" if rerun else "re-run the stages named above"
    reasons = [
        *stale,
        f"No recommendation from stale evidence: {then}, and the decision again.",
    ]
    return Decision(
        "", "no recommendation (stale evidence)", None, None, reasons, d.verdicts, d.thresholds,
        False, list(stale), list(rerun),
    )  # fmt: skip


# Measures of the evidence, each with the direction that is better (+1: higher is better).
EVIDENCE = (("mel_ce", -1, "Mel CE"), ("text_ce", -1, "Text CE"),
            ("speaker_similarity", +1, "speaker similarity"), ("cer", -1, "CER"))  # fmt: skip


def least_bad(candidates: list[CandidateEvidence]) -> tuple[CandidateEvidence, str]:
    """When none is ready: the candidate best on the measured evidence, with the reason.

    Each measure ranks the candidates that have it (best = 0); the lowest mean rank wins, ties
    going to the lower Mel CE. A candidate with no measure at all never wins over one with some.
    """
    scored = {}
    for c in candidates:
        ranks = []
        for attr, sign, _ in EVIDENCE:
            mine = getattr(c, attr)
            if mine is None:
                continue
            others = [getattr(o, attr) for o in candidates if getattr(o, attr) is not None]
            ranks.append(sum(sign * (x - mine) > 0 for x in others))
        if ranks:
            scored[c.name] = (
                sum(ranks) / len(ranks),
                c.mel_ce if c.mel_ce is not None else math.inf,
            )
    if not scored:
        return candidates[0], f"No candidate has measured evidence; {candidates[0].title} is named."
    best = next(c for c in candidates if c.name == min(scored, key=scored.get))
    better = [
        f"{label} {_num(getattr(best, attr))}"
        for attr, _, label in EVIDENCE
        if getattr(best, attr) is not None
    ]
    measured = [label for attr, _, label in EVIDENCE if any(getattr(c, attr) is not None
                                                            for c in candidates)]  # fmt: skip
    return best, (
        f"Least bad on the measured evidence: {best.title} ({', '.join(better)}), the best mean "
        f"rank over {', '.join(measured[:-1])} and {measured[-1]} among the candidates."
        if len(measured) > 1
        else f"Least bad on the measured evidence: {best.title} ({', '.join(better)})."
    )


def _conclusion(
    kept: CandidateEvidence, winner_tier: str | None, t: Thresholds, ready: bool = True
) -> str:
    ship = f"Recommendation: ship {kept.title}"
    if not ready:
        ship = f"Recommendation: ship nothing yet; the least bad option is {kept.title}"
    if kept.checkpoint:
        ship += f" ({kept.checkpoint})"
    if winner_tier is None:
        return ship + "; its tier is unknown until its Mel CE and Text CE are measured."
    if winner_tier == "below minimum":
        return (
            ship + f"; it is below the minimum tier (needs Mel CE < {t.mel_ce_improved}, "
            f"Text CE < {t.text_ce_max} and no overfitting)."
        )
    return ship + f"; tier: {winner_tier}."


# --- evidence from the stages' scraps --------------------------------------------------------


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None when it is no number, NaN or infinite (a missing measure)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _step_of(checkpoint: str | None) -> int | None:
    match = re.search(r"(?:checkpoint|best_model)_(\d+)\.pth$", checkpoint or "")
    return int(match.group(1)) if match else None


def _of_latest_run(checkpoint: str | None, best: str | None) -> bool:
    """Whether an evaluated ``checkpoint`` is of the run that made the stage's ``best``
    checkpoint (the same run folder, or the stage's export); True when either is unknown. A
    stage that ran again since the evaluation: its best step and health are not this row's."""
    if not checkpoint or not best:
        return True
    path = Path(checkpoint)
    return path.parent == Path(best).parent or "export" in (path.name, path.parent.name)


def _stage_of(name: str, checkpoint: str | None, stages: list[str]) -> str | None:
    """The training stage an evaluated candidate comes from (by name, then checkpoint path)."""
    for stage in stages:
        if name == stage or name.startswith((f"{stage}_", f"{stage}-")):
            return stage
    parts = Path(checkpoint).parts if checkpoint else ()
    return next((stage for stage in stages if stage in parts), None)


def _health_flags(health: list[dict] | None) -> tuple[bool, list[str]]:
    health = health or []
    overfitting = any(e.get("kind") == "overfitting" for e in health)
    alarms = [
        f"step {e.get('step')}: {e.get('message') or e.get('kind')}"
        for e in health
        if e.get("severity") in ("alarm", "stop")
    ]
    return overfitting, alarms


def _listening_overall(summary: pd.DataFrame | None, candidate: str) -> tuple[float | None, int]:
    """The ``overall`` scale's mean and count; without that scale, the mean of the scale means
    (counted as the smallest n)."""
    if summary is None or summary.empty:
        return None, 0
    rows = summary[summary["candidate"].astype(str) == candidate]
    if rows.empty:
        return None, 0
    overall = rows[rows["scale"].astype(str) == "overall"]
    rows = overall if not overall.empty else rows
    return finite_or_none(rows["mean"].mean()), int(rows["n"].min())


def training_stages(scraps: dict[str, dict[str, Any]]) -> dict[str, contract.PhaseScraps]:
    """``{stage name: scraps}`` of the training notebooks, in notebook order."""
    return {
        s.stage or TRAINING_STAGES.get(stem, stem): s
        for stem, s in sorted(contract.checked(scraps).items())
        if isinstance(s, contract.PhaseScraps)
    }


def gather_candidates(scraps: dict[str, dict[str, Any]]) -> list[CandidateEvidence]:
    """One evidence record per candidate, ordered base → phase 1 → phase 2 → others.

    Prefers the evaluation stage's ``eval_table`` (one held-out set for all); a training stage
    missing from it falls back to its own ``best_*`` scraps. The base model is always first.
    """
    stages = training_stages(scraps)
    known = list(stages) + [s for s in TRAINING_STAGES.values() if s not in stages]
    evaluation = contract.checked(scraps).evaluation
    table, listening = evaluation.eval_table, evaluation.listening_summary
    rows = [] if table is None else table.to_dict("records")
    by_stage: dict[str | None, list[CandidateEvidence]] = {}
    for row in rows:
        name = str(row["candidate"])
        checkpoint = row.get("checkpoint") or None
        stage = None if name == BASE else _stage_of(name, checkpoint, known)
        stage_scraps = stages.get(stage) or contract.PhaseScraps(str(stage))
        # the stage's figures only when the row scored its latest run (one run per row)
        latest = _of_latest_run(checkpoint, stage_scraps.best_checkpoint)
        is_best = latest and (name == stage or checkpoint == stage_scraps.best_checkpoint)
        overfitting, alarms = _health_flags(stage_scraps.health if latest else None)
        mean, n = _listening_overall(listening, name)
        c = CandidateEvidence(
            name=name,
            label=str(row.get("label") or name),
            mel_ce=finite_or_none(row.get("mel_ce")),
            text_ce=finite_or_none(row.get("text_ce")),
            source="evaluation",
            split=str(row.get("split") or "validation"),
            best_step=stage_scraps.best_step if is_best else _step_of(checkpoint),
            checkpoint=checkpoint,
            speaker_similarity=finite_or_none(row.get("speaker_similarity")),
            cer=finite_or_none(row.get("cer")),
            listening_mean=mean,
            listening_n=n,
            overfitting=overfitting,
            alarms=alarms,
        )
        by_stage.setdefault(BASE if name == BASE else stage, []).append(c)

    for stage, s in stages.items():
        if not by_stage.get(stage):  # trained but not evaluated: its own best eval losses
            by_stage[stage] = [_training_evidence(stage, s, listening)]
    base = by_stage.get(BASE) or [CandidateEvidence(BASE, label="base model (no fine-tune)")]
    ordered = base + [c for stage in known for c in by_stage.get(stage, [])]
    return ordered + by_stage.get(None, [])


def _training_evidence(stage: str, s: contract.PhaseScraps, listening: Any) -> CandidateEvidence:
    """A phase that was trained but not evaluated: its own best eval (validation) losses."""
    overfitting, alarms = _health_flags(s.health)
    mean, n = _listening_overall(listening, stage)
    measured = finite_or_none(s.best_mel_ce) is not None
    return CandidateEvidence(
        name=stage,
        label=stage.replace("phase", "phase "),
        mel_ce=finite_or_none(s.best_mel_ce),
        text_ce=finite_or_none(s.best_text_ce),
        source="training" if measured else "none",
        split="validation" if measured else "",
        best_step=s.best_step,
        checkpoint=s.best_checkpoint,
        listening_mean=mean,
        listening_n=n,
        overfitting=overfitting,
        alarms=alarms,
    )


def missing_evidence(scraps: dict[str, dict[str, Any]]) -> list[str]:
    """Plain sentences naming what has not been run or recorded yet."""
    missing = []
    if DATA_PREP not in scraps:
        missing.append("No data-prep results (00_data_prep has not run): no dataset card.")
    stages = training_stages(scraps)
    for stem, stage in TRAINING_STAGES.items():
        if stage not in stages:
            missing.append(f"No {stage.replace('phase', 'phase ')} yet ({stem} has not run).")
    if EVALUATION not in scraps:
        missing.append(
            "No evaluation yet (03_evaluation has not run): numbers come from training, the base "
            "model is unmeasured, and there are no speaker-similarity or listening scores."
        )
    else:
        evaluation = contract.checked(scraps).evaluation
        if evaluation.eval_table is None or evaluation.eval_table.empty:
            missing.append("The evaluation stage recorded no eval table.")
        summary = evaluation.listening_summary
        if summary is None or summary.empty or int(summary["n"].sum()) == 0:
            missing.append(
                "No listening ratings yet: run the blind listening test in 03_evaluation."
            )
    return missing


# --- tables ----------------------------------------------------------------------------------

COMPARISON_COLUMNS = [
    "candidate", "label", "source", "split", "stale", "mel_ce", "text_ce", "best_step",
    "gain_vs_previous",
    "speaker_similarity", "cer", "listening_mean", "listening_n", "band", "tier", "status",
    "export_parity", "notes",
]  # fmt: skip


def comparison_table(candidates: list[CandidateEvidence], decision: Decision) -> pd.DataFrame:
    """One row per candidate with its numbers and the matrix's verdict."""
    verdicts = {v.candidate: v for v in decision.verdicts}
    rows = []
    for c in candidates:
        v = verdicts[c.name]
        rows.append(
            {
                "candidate": c.name,
                "label": c.label,
                "source": c.source,
                "split": c.split,
                "stale": c.stale or "",
                "mel_ce": c.mel_ce,
                "text_ce": c.text_ce,
                "best_step": c.best_step,
                "gain_vs_previous": v.gain,
                "speaker_similarity": c.speaker_similarity,
                "cer": c.cer,
                "listening_mean": c.listening_mean,
                "listening_n": c.listening_n,
                "band": v.band,
                "tier": v.tier,
                "status": v.status,
                "export_parity": c.export_parity or "",
                "notes": " ".join(v.notes),
            }
        )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    return table.astype({"best_step": "Int64", "listening_n": "Int64"})
