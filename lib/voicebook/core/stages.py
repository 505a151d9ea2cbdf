"""The stage contract, defined once: each stage's notebook, the scraps it publishes, its files.

The runner takes its stage list from here; ``scraps.publish`` refuses a scrap that a stage's
contract does not name (the producer's side); ``scraps.read_experiment`` hands consumers
each stage's typed view (``PhaseScraps``, ``EvaluationScraps``...: ``scraps.evaluation
.eval_table``), so a consumer names a scrap by attribute and no scrap name is written outside
this module (``tests/test_stages.py`` reads every module for one); a read by name is still
checked against the contract, so a producer and its consumers cannot drift apart silently. ``docs/stages.md`` is generated from here (``voicebook.core.stages_doc``). Adding a
stage is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    stem: str  # the notebook's name without .ipynb: the stage's key everywhere
    short: str  # what a person types: voicebook run --stages <short>
    scraps: tuple[str, ...]  # what the stage publishes (scraps.publish)
    files: tuple[str, ...]  # what it writes under outputs/<experiment>/
    key_params: tuple[str, ...] = ()  # parameters the report shows next to the stage's numbers


_PHASE_SCRAPS = (
    "stage", "params", "best_mel_ce", "best_text_ce", "best_step", "best_checkpoint",
    "final_step", "curves", "health", "selection",
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
    ("report.html", "decision.json", "export_parity.json"),
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
    """One stage's scraps (``{name: value}``) whose reads are checked against its contract.
    Consumers read them through a typed view's attributes (``PhaseScraps.best_mel_ce``...), so
    no scrap name is written outside this module."""

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

    STEM = ""  # the stage of a view that serves one stage

    @classmethod
    def of(cls, values: Any) -> Any:
        """``values`` (a plain dict, or a view already) as this view of its one stage."""
        return values if isinstance(values, cls) else cls(cls.STEM, values or {})


class Scrap(Generic[T]):
    """A typed read of one scrap, by attribute: its value, or None when the stage has not
    published it (phase 1 has no ``parent_checkpoint``); the attribute's name is the scrap's."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, scraps: None, owner: type) -> Scrap[T]: ...
    @overload
    def __get__(self, scraps: StageScraps, owner: type) -> T | None: ...
    def __get__(self, scraps: StageScraps | None, owner: type) -> Scrap[T] | T | None:
        return self if scraps is None else dict.get(scraps, self.name)


class DataPrepScraps(StageScraps):
    STEM = DATA_PREP.stem
    dataset_card: Scrap[dict] = Scrap()
    n_train: Scrap[int] = Scrap()
    n_eval: Scrap[int] = Scrap()
    n_test: Scrap[int] = Scrap()
    minutes_total: Scrap[float] = Scrap()
    n_rejected: Scrap[int] = Scrap()


class PhaseScraps(StageScraps):
    stage: Scrap[str] = Scrap()
    params: Scrap[dict] = Scrap()
    best_mel_ce: Scrap[float] = Scrap()
    best_text_ce: Scrap[float] = Scrap()
    best_step: Scrap[int] = Scrap()
    best_checkpoint: Scrap[str] = Scrap()
    final_step: Scrap[int] = Scrap()
    curves: Scrap[Any] = Scrap()  # a DataFrame: step, split, loss_mel_ce, loss_text_ce
    health: Scrap[list] = Scrap()
    parent_checkpoint: Scrap[str] = Scrap()  # phase 2's
    selection: Scrap[dict] = Scrap()  # the kept best models, the pick and why (training.select)


class VoiceSearchScraps(StageScraps):
    STEM = VOICE_SEARCH.stem
    voice_search: Scrap[dict] = Scrap()
    voice_search_curves: Scrap[Any] = Scrap()


class EvaluationScraps(StageScraps):
    STEM = EVALUATION.stem
    eval_table: Scrap[Any] = Scrap()  # DataFrames, unless named otherwise
    eval_notes: Scrap[list] = Scrap()
    eval_per_source: Scrap[Any] = Scrap()
    eval_settings: Scrap[dict] = Scrap()
    temperature_sweep: Scrap[Any] = Scrap()
    dvae_reconstruction: Scrap[Any] = Scrap()
    eval_takes: Scrap[Any] = Scrap()  # one row per candidate, sentence and take
    eval_clip_losses: Scrap[Any] = Scrap()  # one row per candidate and held-out clip
    codebook: Scrap[Any] = Scrap()
    listening_summary: Scrap[Any] = Scrap()
    ab_summary: Scrap[Any] = Scrap()
    ab_pairs: Scrap[Any] = Scrap()
    hidden_reference: Scrap[Any] = Scrap()
    listening_left_out: Scrap[Any] = Scrap()


class DecisionScraps(StageScraps):
    STEM = DECISION.stem
    recommendation: Scrap[dict] = Scrap()


VIEWS: dict[str, type[StageScraps]] = {
    DATA_PREP.stem: DataPrepScraps,
    **{s.stem: PhaseScraps for s in TRAINING},
    VOICE_SEARCH.stem: VoiceSearchScraps,
    EVALUATION.stem: EvaluationScraps,
    DECISION.stem: DecisionScraps,
}


def view(stem: str, values: Any = ()) -> StageScraps:
    """``values`` as the typed view of the stage ``stem``; a stage outside the contract that
    published a best Mel CE (another training notebook) reads as a phase."""
    values = dict(values or {})
    phase_like = PhaseScraps.best_mel_ce.name in values
    return VIEWS.get(stem, PhaseScraps if phase_like else StageScraps)(stem, values)


def accessors(cls: type[StageScraps]) -> set[str]:
    """The scraps a view reads by attribute."""
    return {n for k in cls.__mro__ for n, v in vars(k).items() if isinstance(v, Scrap)}


class ExperimentScraps(dict):
    """``{stem: StageScraps}`` (each its stage's typed view); ``get(stem, {})`` of a stage that
    has not run is an empty, still checked, view. ``data_prep``, ``phase(stem)``,
    ``voice_search``, ``evaluation`` and ``decision`` are the typed reads."""

    def get(self, stem: str, default: Any = None) -> Any:
        if stem not in self and isinstance(default, dict):
            return view(stem, default)
        return super().get(stem, default)

    @property
    def data_prep(self) -> DataPrepScraps:
        return self.get(DATA_PREP.stem, {})

    def phase(self, stem: str) -> PhaseScraps:
        return self.get(stem, {})

    @property
    def voice_search(self) -> VoiceSearchScraps:
        return self.get(VOICE_SEARCH.stem, {})

    @property
    def evaluation(self) -> EvaluationScraps:
        return self.get(EVALUATION.stem, {})

    @property
    def decision(self) -> DecisionScraps:
        return self.get(DECISION.stem, {})


def checked(scraps: dict[str, dict[str, Any]]) -> ExperimentScraps:
    """``scraps`` (``{stem: {name: value}}``) as typed views, every read checked against the
    contract."""
    return ExperimentScraps({stem: view(stem, v) for stem, v in scraps.items()})
