"""LoRA against full fine-tuning: what each evaluated candidate scored and what it cost.

One row per evaluated candidate that a phase made (its checkpoint, or an export of it): how it
was fine-tuned (``full``, or ``lora r<rank>``), the weights it trained, its held-out Mel CE,
Text CE and speaker similarity (from the evaluation's table), its forgetting against the
base (below), and what its phase cost as the
phase recorded it in ``status.json`` (``voicebook.training.costs``): minutes of training, peak
memory, disk of its run folder and size of one periodic checkpoint. A candidate from another
experiment (a LoRA experiment's checkpoint given to this one's evaluation) is found the same way,
so one report puts a LoRA phase beside the full ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = [
    "candidate", "label", "finetune", "trained_weights", "mel_ce", "text_ce",
    "speaker_similarity", "forgetting_text_ce", "forgetting_cer", "minutes", "peak_memory_mb",
    "memory", "disk_mb", "checkpoint_mb", "stale",
]  # fmt: skip
# Forgetting: the candidate's Text CE and CER on the general test sentences (not the speaker's;
# ``evaluation.general_text_ce``) minus the base's. Above 0: it reads general text worse than
# the model it started from.
FORGETTING = {"forgetting_text_ce": "general_text_ce", "forgetting_cer": "general_cer"}
COST_KEYS = ("peak_memory_mb", "memory", "disk_mb", "checkpoint_mb")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def phase_status(checkpoint: str | Path) -> dict[str, Any] | None:
    """The ``status.json`` of the phase that wrote ``checkpoint`` (a run folder's checkpoint, or
    an export folder's ``model.pth``, followed to the checkpoint it holds); None if unknown."""
    path = Path(checkpoint)
    export = _read(path.parent / "export.json") if path.name == "model.pth" else None
    if export and export.get("checkpoint"):
        path = Path(export["checkpoint"])
    phase_dir = path.parent.parent  # a phase run again moved the earlier status to history/<n>/
    for file in [phase_dir / "status.json", *sorted(phase_dir.glob("history/*/status.json"))]:
        status = _read(file) or {}
        if status.get("run_dir") and Path(status["run_dir"]).resolve() == path.parent.resolve():
            return status
    return None


def finetune_label(status: dict[str, Any]) -> str:
    if status.get("finetune", "full") != "lora":
        return "full"
    from voicebook.training.result import recorded_param

    return f"lora r{recorded_param(status, 'lora_rank', '?')}"


def _minus(value: Any, base: Any) -> float | None:
    try:
        return float(value) - float(base)
    except (TypeError, ValueError):  # no base row, or a column an older evaluation lacks
        return None


def finetune_table(
    eval_table: pd.DataFrame | None, stale: dict[str, str | None] | None = None
) -> pd.DataFrame:
    """The comparison (see the module doc); empty when no evaluated candidate came from a phase
    that recorded its costs. Costs are those of the run the evaluation scored (its status in
    ``history/`` once the phase ran again); ``stale``: why a candidate's numbers rest on a
    replaced run, by candidate (the report's lineage), shown in the row."""
    rows, records = [], [] if eval_table is None else eval_table.to_dict("records")
    stale = stale or {}
    base = next((r for r in records if r["candidate"] == "base"), {})
    for row in records:
        status = phase_status(row["checkpoint"]) if row.get("checkpoint") else None
        if not status or "train_seconds" not in status:
            continue
        seconds = status["train_seconds"]
        rows.append(
            {
                "candidate": row["candidate"],
                "label": row.get("label", row["candidate"]),
                "finetune": finetune_label(status),
                "trained_weights": status.get("trained_weights"),
                **{k: row.get(k) for k in ("mel_ce", "text_ce", "speaker_similarity")},
                **{k: _minus(row.get(v), base.get(v)) for k, v in FORGETTING.items()},
                "minutes": seconds / 60,
                **{k: status.get(k) for k in COST_KEYS},
                "stale": stale.get(row["candidate"]) or "",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
