"""A phase's files: status and health JSON (written atomically), the curves table, the archive
of earlier runs and failed attempts, and the checkpoints a run starts or resumes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core.fileio import archive_run, write_json_atomic
from voicebook.core.stages import PHASE1
from voicebook.training.checkpoints import checkpoint_file, resolve_checkpoint, run_checkpoints

CURVE_COLUMNS = ["step", "split", "loss_mel_ce", "loss_text_ce", "loss", "lr", "grad_norm"]
# a run's top-level files, named by the contract: status.json, curves.csv, health.json, export
ARCHIVED = tuple(Path(f).name for f in PHASE1.files)


def read_json(path: Path, default: Any = None) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, value: Any) -> None:
    write_json_atomic(path, value)  # a kill never leaves half a status file


def read_curves(phase_dir: Path) -> pd.DataFrame:
    path = phase_dir / "curves.csv"
    if not path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.read_csv(path)


def next_number(folder: Path) -> int:
    return 1 + max((int(p.name) for p in folder.glob("*") if p.name.isdigit()), default=0)


def archive_previous_run(phase_dir: Path) -> Path | None:
    """Move an earlier run's top-level files to ``history/<n>/`` (run folders stay put)."""
    return archive_run([phase_dir / n for n in ARCHIVED], phase_dir / "history")


def copy_attempt_files(phase_dir: Path, run_dir: Path | None, attempt: int, why: str) -> Path:
    """Keep the log and config of an attempt outside the run folder."""
    dest = phase_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    if run_dir and run_dir.is_dir():
        for name in ("trainer_0_log.txt", "config.json"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, dest / name)
    (dest / "why.txt").write_text(why)
    return dest


def set_attempt_aside(phase_dir: Path, attempt: int) -> None:
    """A failed attempt's curves and health move to ``attempts/<n>/``: the next starts clean."""
    dest = phase_dir / "attempts" / str(attempt)
    for name in ("curves.csv", "health.json"):
        if (phase_dir / name).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            (phase_dir / name).replace(dest / name)


def trim_curves(phase_dir: Path, resumed_step: int, attempt: int) -> None:
    """Drop rows recorded after the checkpoint a run resumes from (kept in ``attempts/<n>/``)."""
    curves = read_curves(phase_dir)
    keep = (curves["step"] <= resumed_step) | (
        (curves["split"] == "eval") & (curves["step"] == resumed_step + 1)
    )
    if keep.all():
        return
    dest = phase_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    curves[~keep].to_csv(dest / "curves_after_checkpoint.csv", index=False)
    curves[keep].to_csv(phase_dir / "curves.csv", index=False)


def resumable_checkpoints(run_dir: Path, quarantine: Path) -> list[Path]:
    """The periodic checkpoints of a run folder that open, newest first (best models are slim:
    no optimizer state to resume from). Unreadable files of either kind (a kill mid-write)
    move to ``quarantine``, so the trainer resumes from the newest good one."""
    import torch

    good = []
    for path in run_checkpoints(run_dir):
        try:
            torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except Exception:  # noqa: BLE001 - any unreadable file: set aside
            quarantine.mkdir(parents=True, exist_ok=True)
            path.replace(quarantine / path.name)
            continue
        if path.name.startswith("checkpoint_"):
            good.append(path)
    return good


def resolve_parent(experiment_path: Path, resume_from: str | int) -> Path:
    """The phase-1 checkpoint phase 2 starts from ("best", "final", a step number, or a path)."""
    return resolve_checkpoint(
        experiment_path, "phase1", resume_from, f"resume_from={resume_from!r}"
    )


def resolve_init(init_from: str) -> Path | None:
    """Phase 1's starting weights: None for the base's, else a checkpoint file or export folder."""
    if not init_from:
        return None
    return checkpoint_file(init_from, f"init_from={init_from!r}")


def resolvable_parent(experiment_path: Path, params: Any) -> Path | None:
    """Where a phase starts: phase 2 from ``resume_from``, phase 1 from ``init_from`` or None."""
    if params.stage == "phase2":
        return resolve_parent(experiment_path, params.resume_from)
    return resolve_init(params.init_from)
