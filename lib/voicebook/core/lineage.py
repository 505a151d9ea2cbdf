"""Which recorded numbers rest on runs that have since been replaced.

Every stage record names what its run read (``voicebook.core.runs``): the dataset, the checkpoint a
phase or the voice search started from, each candidate the evaluation scored, by path, content
digest and the run that made it. An input is *stale* when:

- its file is gone, or its content changed since it was read;
- it was not made by the latest run of its stage even when it was read (a voice search that
  found its earlier result and kept it after the phase it searched from re-ran);
- the stage that made it ran again and that newer run did not produce the same file (a re-run
  that found its work done and kept the same checkpoint replaces nothing);
- the run it came from is itself stale (so a phase-1 re-run reaches phase 2 and, through both,
  the evaluation).

``assess`` walks the stages in pipeline order and returns, per stage and per input, the reason
in words ("phase 1 re-ran at 10:42 with lr=5e-05; the evaluation scored the run of 09:10"),
and the stages to re-run, in order. The decision never recommends from stale evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebook.core import runs
from voicebook.core.stages import (
    BY_STEM,
    DATA_PREP,
    DECISION,
    EVALUATION,
    PHASE1,
    PHASE2,
    STAGES,
    VOICE_SEARCH,
    PhaseScraps,
)

LABELS = {DATA_PREP.stem: "data prep", PHASE1.stem: "phase 1", PHASE2.stem: "phase 2",
          VOICE_SEARCH.stem: "the voice search", EVALUATION.stem: "the evaluation"}  # fmt: skip
VERBS = {EVALUATION.stem: "scored", PHASE2.stem: "started from",
         VOICE_SEARCH.stem: "searched from"}  # fmt: skip


@dataclass
class Assessment:
    """Stale stages with their reasons, stale inputs by stage, and what to re-run in order."""

    stale: dict[str, list[str]] = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    rerun: list[str] = field(default_factory=list)

    def stale_input(self, stage: str, *names: str) -> str | None:
        """The first reason among inputs ``names`` of ``stage`` (None: all fresh)."""
        found = self.inputs.get(stage, {})
        return next((found[n] for n in names if n in found), None)

    def sentences(self) -> list[str]:
        """One line per stale stage, then what to re-run."""
        out = [f"{stage} is stale: {'; '.join(r)}." for stage, r in self.stale.items()]
        if self.rerun:
            out.append(f"Re-run {', then '.join(self.rerun)}.")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stale": self.stale, "inputs": self.inputs, "rerun": self.rerun}


def _clock(stamp: str | None) -> str:
    return str(stamp or "?")[11:16] or str(stamp)


def _label(stem: str) -> str:
    return LABELS.get(stem, stem)


def _old_params(experiment: Path, stem: str, run_id: str) -> dict[str, Any]:
    for path in (experiment / runs.RESULTS_DIR / "history").glob(f"{stem}.*.{run_id}.json"):
        record = runs.read_record(path)
        return record.get("params") or PhaseScraps(stem, record.get("scraps", {})).params or {}
    return {}


def _changed_params(experiment: Path, stem: str, now: dict[str, Any], old_id: str) -> str:
    """``" with lr=5e-05"``: the key parameters in which the new run differs from the old."""
    new = now.get("params") or PhaseScraps(stem, now.get("scraps", {})).params or {}
    old = _old_params(experiment, stem, old_id)
    keys = BY_STEM[stem].key_params if stem in BY_STEM else ()
    differ = [f"{k}={new[k]}" for k in keys if k in new and k in old and new[k] != old[k]]
    return f" with {', '.join(differ)}" if differ else ""


def _records_of(experiment: Path) -> dict[str, dict[str, Any]]:
    from voicebook.core.scraps import read_records

    return read_records(experiment)


class _Digests:
    def __init__(self) -> None:
        self.known: dict[str, str | None] = {}

    def __call__(self, path: str) -> str | None:
        if path not in self.known:
            self.known[path] = runs.content_digest(path)
        return self.known[path]


def _reason(
    experiment: Path,
    stem: str,
    name: str,
    entry: dict[str, Any],
    records: dict[str, dict[str, Any]],
    assessment: Assessment,
    digest: _Digests,
) -> str | None:
    path, producer = entry.get("path"), entry.get("stage")
    if path and entry.get("digest") and not Path(path).exists():
        return f"{path}, which {_label(stem)} read, no longer exists"
    if entry.get("experiment"):  # made in another experiment folder (a sweep's shared data prep)
        experiment = Path(entry["experiment"])
        records = _records_of(experiment)
    now = records.get(producer or "", {})
    if producer and "not_latest" in entry:
        return (
            f"{_label(stem)} read {path}, which is not from the latest run of "
            f"{_label(producer)} ({_clock(entry['not_latest'])})"
        )
    if producer and entry.get("run_id") and now.get("run_id") not in (None, entry["run_id"]):
        kept = any(
            o.get("path")
            and Path(o["path"]).resolve() == Path(path).resolve()
            and o.get("digest") == entry.get("digest")
            for o in (now.get("outputs") or {}).values()
        )
        if not kept:
            changed = _changed_params(experiment, producer, now, entry["run_id"])
            verb = "used the dataset of" if name == "dataset" else VERBS.get(stem, "read")
            return (
                f"{_label(producer)} re-ran at {_clock(now.get('started'))}{changed}; "
                f"{_label(stem)} {verb} the run of {_clock(entry.get('started'))}"
            )
    if producer in assessment.stale:
        return f"it rests on {_label(producer)}, which is stale"
    if path and entry.get("digest") and digest(path) != entry["digest"]:
        return f"{path} changed since {_label(stem)} read it"
    return None


def assess(experiment_path: str | Path) -> Assessment:
    """Which stages and inputs of the experiment are stale, and what to re-run (module doc)."""
    from voicebook.core.scraps import read_records

    experiment = Path(experiment_path)
    records = read_records(experiment)
    assessment, digest = Assessment(), _Digests()
    for stage in STAGES:
        if stage is DECISION or stage.stem not in records:
            continue
        for name, entry in (records[stage.stem].get("inputs") or {}).items():
            why = _reason(experiment, stage.stem, name, entry, records, assessment, digest)
            if why:
                assessment.inputs.setdefault(stage.stem, {})[name] = why
                reasons = assessment.stale.setdefault(stage.stem, [])
                reasons += [why] if why not in reasons else []
    assessment.rerun = [s.stem for s in STAGES if s.stem in assessment.stale]
    return assessment
