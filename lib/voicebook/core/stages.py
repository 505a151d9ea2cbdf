"""The stage contract, defined once: each stage's notebook, the scraps it publishes, its files.

The runner takes its stage list from here; ``scraps.publish`` refuses a scrap that a stage's
contract does not name (the producer's side); ``scraps.read_experiment`` hands consumers
``StageScraps``, which refuse to read a name the contract does not hold (the consumer's side: a
misspelt read would otherwise be a silent None), so a producer and its consumers cannot drift
apart silently. ``docs/stages.md`` is generated from here (``voicebook.core.stages_doc``). Adding a
stage is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    stem: str  # the notebook's name without .ipynb: the stage's key everywhere
    short: str  # what a person types: voicebook run --stages <short>
    scraps: tuple[str, ...]  # what the stage publishes (scraps.publish)
    files: tuple[str, ...]  # what it writes under outputs/<experiment>/
    key_params: tuple[str, ...] = ()  # parameters the report shows next to the stage's numbers


_PHASE_SCRAPS = (
    "stage", "params", "best_mel_ce", "best_text_ce", "best_step", "best_checkpoint",
    "final_step", "curves", "health",
)  # fmt: skip
_PHASE_PARAMS = ("lr", "epochs", "max_steps", "batch_size", "base_model")

DATA_PREP = Stage(
    "00_data_prep",
    "data_prep",
    ("dataset_card", "n_train", "n_eval", "n_test", "minutes_total", "n_rejected"),
    ("dataset/",),
)
PHASE1 = Stage(
    "01_phase1",
    "phase1",
    _PHASE_SCRAPS,
    ("phase1/status.json", "phase1/curves.csv", "phase1/health.json", "phase1/export/"),
    (*_PHASE_PARAMS, "init_from"),
)
PHASE2 = Stage(
    "02_phase2",
    "phase2",
    (*_PHASE_SCRAPS, "parent_checkpoint"),
    ("phase2/status.json", "phase2/curves.csv", "phase2/health.json", "phase2/export/"),
    (*_PHASE_PARAMS, "resume_from"),
)
VOICE_SEARCH = Stage(
    "02b_voice_search",
    "voice_search",
    ("voice_search", "voice_search_curves"),
    ("voice_search/speakers_xtts.pth", "voice_search/curves.csv", "voice_search/search.json"),
)
EVALUATION = Stage(
    "03_evaluation",
    "evaluation",
    (
        "eval_table",
        "eval_notes",
        "eval_per_source",
        "eval_settings",
        "temperature_sweep",
        "dvae_reconstruction",
        "eval_takes",
        "eval_clip_losses",
        "codebook",
        "listening_summary",
        "ab_summary",
        "ab_pairs",
        "hidden_reference",
        "listening_left_out",
    ),
    ("eval/eval_table.csv", "eval/samples.csv", "ratings.csv", "eval/takes.csv"),
)
DECISION = Stage(
    "04_decision_matrix",
    "decision",
    ("recommendation",),
    ("report.html", "decision.json"),
)

STAGES: tuple[Stage, ...] = (DATA_PREP, PHASE1, PHASE2, VOICE_SEARCH, EVALUATION, DECISION)
BY_STEM = {s.stem: s for s in STAGES}
TRAINING = (PHASE1, PHASE2)  # stages that fine-tune, in order


def stage(stem: str) -> Stage:
    """The contract of the stage ``stem`` (e.g. ``"02_phase2"``)."""
    try:
        return BY_STEM[stem]
    except KeyError:
        raise KeyError(f"Unknown stage {stem!r}; stages: {', '.join(BY_STEM)}.") from None


class StageScraps(dict):
    """One stage's scraps (``{name: value}``) whose reads are checked against its contract."""

    def __init__(self, stem: str, values: Any = ()) -> None:
        super().__init__(values)
        self.stem = stem

    def _check(self, name: str) -> None:
        if self.stem in BY_STEM and name not in BY_STEM[self.stem].scraps:
            raise KeyError(
                f"{self.stem} publishes no scrap {name!r}: its contract in voicebook/stages.py "
                f"names {', '.join(BY_STEM[self.stem].scraps)}."
            )

    def __getitem__(self, name: str) -> Any:
        self._check(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self._check(name)
        return super().get(name, default)


class ExperimentScraps(dict):
    """``{stem: StageScraps}``; ``get(stem, {})`` of a stage that has not run is an empty, still
    checked, ``StageScraps``."""

    def get(self, stem: str, default: Any = None) -> Any:
        if stem not in self and isinstance(default, dict):
            return StageScraps(stem, default)
        return super().get(stem, default)


def checked(scraps: dict[str, dict[str, Any]]) -> ExperimentScraps:
    """``scraps`` (``{stem: {name: value}}``) with every read checked against the contract."""
    return ExperimentScraps({stem: StageScraps(stem, v) for stem, v in scraps.items()})
