"""What a phase returns: its params, status, curves and health, as scraps and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class PhaseResult:
    stage: str
    params: dict[str, Any]
    status: dict[str, Any]
    curves: pd.DataFrame
    health: list[dict[str, Any]]
    phase_dir: Path

    @property
    def best(self) -> dict[str, Any]:
        """The phase's best model: its pick among the kept ones (``training.select``) once
        made, else the lowest validation Mel CE (step, mel_ce, text_ce, checkpoint)."""
        s = self.status
        picked = s.get("picked_checkpoint")
        for k in s.get("kept", []):
            if picked and k["checkpoint"] == picked:
                return dict(k)
        return {"step": s.get("best_step"), "mel_ce": s.get("best_mel_ce"),
                "text_ce": s.get("best_text_ce"), "checkpoint": s.get("best_checkpoint")}  # fmt: skip

    @property
    def best_checkpoint(self) -> str | None:
        return self.best["checkpoint"]

    @property
    def pick_reason(self) -> str:
        """Why the best model is the one it is (``training.select``)."""
        return (self.status.get("pick") or {}).get("why", "the lowest validation Mel CE")

    def selection_table(self) -> pd.DataFrame:
        """Every kept model with its figures (validation Mel CE; with evidence, the measures of
        its takes) and which one was picked."""
        selection = self.status.get("pick") or {}
        kept = pd.DataFrame(selection.get("kept") or self.status.get("kept") or [])
        if kept.empty:
            return kept
        return kept.assign(picked=kept["checkpoint"] == self.best_checkpoint)

    def scraps(self) -> dict[str, Any]:
        """The stage's scraps, as docs/stages.md defines them."""
        s, best = self.status, self.best
        scraps = {
            "stage": self.stage,
            "params": self.params,
            "best_mel_ce": best["mel_ce"],
            "best_text_ce": best["text_ce"],
            "best_step": best["step"],
            "best_checkpoint": best["checkpoint"],
            "final_step": s.get("final_step"),
            "curves": self.curves,
            "health": self.health,
            "selection": {
                **(s.get("pick") or {}),
                "kept": self.selection_table().to_dict(orient="records"),
            },
        }
        if self.stage == "phase2":
            scraps["parent_checkpoint"] = s.get("parent")
        return scraps

    def summary(self) -> pd.DataFrame:
        """A one-column table of what a person wants to know after the run."""
        s = self.status
        rows = {
            "state": s.get("state"),
            "stop reason": s.get("stop_reason") or "",
            "steps done": s.get("final_step"),
            "best eval Mel CE": self.best["mel_ce"],
            "Text CE at best (x0.01)": self.best["text_ce"],
            "best step": self.best["step"],
            "best checkpoint": self.best_checkpoint,
            "kept best models": ", ".join(f"step {k['step']}" for k in s.get("kept", [])),
            "why this one": self.pick_reason,
            "started from": s.get("parent") or "base model",
            "device": s.get("device") or "",
            "evaluations": _eval_cost(s),
            "run folder": s.get("run_dir"),
        }
        for event in self.health:
            if event["severity"] != "info" or event["kind"] == "early_stop":
                rows[f"{event['severity']} at step {event['step']}"] = event["message"]
        return pd.DataFrame({"value": rows})


def recorded_param(status: dict[str, Any], name: str, default: Any = None) -> Any:
    """A parameter a phase ran with, as its ``status.json`` records it."""
    return (status.get("params") or {}).get(name, default)


def _eval_cost(status: dict[str, Any]) -> str:
    """``eval_every`` beside what the evaluations cost, as a share of the phase's time."""
    every = recorded_param(status, "eval_every")
    seconds, total = status.get("eval_seconds"), status.get("train_seconds")
    if seconds is None or not total:
        return f"every {every} steps"
    return (
        f"every {every} steps: {status.get('evals', 0)} took {seconds:.1f} s, "
        f"{seconds / total:.0%} of the phase's {total:.0f} s"
    )
