"""A training phase's checkpoints: one way to name them, read their step and find one.

A phase's run folder holds ``checkpoint_<step>.pth`` (periodic, with the optimizer state that
resume needs) and ``best_model_<step>.pth`` (slim: the weights only). ``resolve_checkpoint`` turns
what a person writes ("best", "final", a step, a path) into a file, for phase 2's
``resume_from``, the export's ``export_checkpoint``, evaluation and voice search.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from voicebook.core.stages import TRAINING

STEP = re.compile(r"^(checkpoint|best_model)_(\d+)\.pth$")
NOTEBOOKS = {s.short: s.stem for s in TRAINING}  # phase1: 01_phase1 ...


def checkpoint_step(path: str | Path) -> int | None:
    """The step in ``checkpoint_<step>.pth`` / ``best_model_<step>.pth``; None for other names."""
    match = STEP.match(Path(path).name)
    return int(match.group(2)) if match else None


def run_checkpoints(run_dir: Path, kind: str = "") -> list[Path]:
    """Checkpoints of a run folder, newest step first; ``kind`` "checkpoint" or "best_model"
    keeps only those."""
    found = [
        p for p in Path(run_dir).glob(f"{kind or '*'}_*.pth") if checkpoint_step(p) is not None
    ]
    return sorted(found, key=checkpoint_step, reverse=True)


def checkpoint_file(spec: str | Path, what: str = "") -> Path:
    """A checkpoint given as a path: a ``.pth`` file, or an export folder (its ``model.pth``)."""
    path = Path(str(spec).strip()).expanduser()
    path = path / "model.pth" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"{what or f'checkpoint {str(spec)!r}'}: no checkpoint there. Pass a .pth checkpoint "
            "(e.g. a best_model_<step>.pth) or an export folder."
        )
    return path


def resolve_checkpoint(experiment_path: Path, stage: str, spec: str | int, what: str = "") -> Path:
    """The checkpoint file of ``stage`` that ``spec`` names: "best" or "final" (from the stage's
    ``status.json``), a step number (``checkpoint_<step>.pth`` or ``best_model_<step>.pth``), or a
    path (a ``.pth`` file or an export folder). ``what`` starts the errors (e.g.
    ``"resume_from='best'"``), which say what exists and what to pass instead."""
    text = str(spec).strip()
    label = what or f"checkpoint {spec!r}"
    if text not in ("best", "final") and not text.isdigit():
        return checkpoint_file(text, label)
    phase = Path(experiment_path) / stage
    status_file = phase / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    if not status:
        raise FileNotFoundError(
            f"{label}: no {'' if text.isdigit() else text + ' '}checkpoint: no {status_file} (no "
            f"{stage} run yet): run {NOTEBOOKS.get(stage, stage)} first, or pass a checkpoint "
            "path."
        )
    if text in ("best", "final"):
        # "best" is the phase's pick among its kept models (training.select), else lowest loss
        picked = status.get("picked_checkpoint") if text == "best" else None
        recorded = picked or status.get(f"{text}_checkpoint")
        if not recorded:
            raise FileNotFoundError(
                f"{label}: {status_file} names no {text} checkpoint yet (that run has not "
                "got that far): let it finish, or pass a step number or a checkpoint path."
            )
        path = Path(recorded)
        if not path.is_file():
            raise FileNotFoundError(
                f"{label}: {stage}'s {text} checkpoint {path} is missing (see {status_file}); "
                "pass a step number or a checkpoint path."
            )
        return path
    run_dir = Path(status.get("run_dir") or phase)
    for name in (f"checkpoint_{text}.pth", f"best_model_{text}.pth"):
        if (run_dir / name).is_file():
            return run_dir / name
    steps = sorted({checkpoint_step(p) for p in run_checkpoints(run_dir)})
    raise FileNotFoundError(
        f"{label}: {stage} has no checkpoint at step {text} in {run_dir}. Available steps: "
        f"{', '.join(map(str, steps)) or 'none'}. Pass one of them."
    )


def kept_checkpoints(experiment_path: Path, stage: str) -> list[dict]:
    """The kept best models of ``stage`` that are on disk (``status.json``'s ``kept``: step,
    mel_ce, text_ce, checkpoint; best Mel CE first), each with ``picked`` (the phase's pick)."""
    status_file = Path(experiment_path) / stage / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    kept = [k for k in status.get("kept", []) if Path(k["checkpoint"]).is_file()]
    picked = status.get("picked_checkpoint") or (kept[0]["checkpoint"] if kept else None)
    return [{**k, "picked": k["checkpoint"] == picked} for k in kept]
