"""Recording a phase as it trains: curve rows, health events and status, on disk at once.

``PhaseRecorder`` is also the trainer's hooks (``voicebook.coqui.trainer``): each loss, step,
evaluation and best model comes here, goes through the health monitor and lands on disk; a
``TrainingStopped`` raised here ends the trainer's ``fit``."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicebook.training.files import CURVE_COLUMNS, read_json, write_json
from voicebook.training.health import HealthEvent, HealthMonitor, TrainingStopped


class PhaseRecorder:
    """Appends curve rows and health events to the phase folder as they happen."""

    def __init__(
        self,
        phase_dir: Path,
        monitor: HealthMonitor,
        status: dict[str, Any],
        on_row: Callable[[dict[str, Any]], None] | None = None,
        max_steps: int = 0,
    ):
        self.phase_dir, self.monitor, self.status, self.on_row = phase_dir, monitor, status, on_row
        self.max_steps = max_steps
        self.health: list[dict[str, Any]] = read_json(phase_dir / "health.json", [])
        path = phase_dir / "curves.csv"
        new = not path.is_file()
        self.curves_file = path.open("a", newline="", buffering=1)
        self.writer = csv.writer(self.curves_file)
        if new:
            self.writer.writerow(CURVE_COLUMNS)

    def close(self) -> None:
        self.curves_file.close()

    def row(self, step: int, split: str, mel: float, text: float, lr: float, norm: Any) -> None:
        values = [step, split, mel, text, mel + text, lr, norm]
        self.writer.writerow(["" if v is None else v for v in values])
        self.curves_file.flush()
        if self.on_row:
            self.on_row(dict(zip(CURVE_COLUMNS, values, strict=True)))

    def events(self, events: list[HealthEvent]) -> None:
        """Record events; the first ``stop`` one ends the run."""
        if not events:
            return
        self.health += [e.to_dict() for e in events]
        write_json(self.phase_dir / "health.json", self.health)
        for event in events:
            print(f"[health] step {event.step} {event.severity}: {event.message}")
        stops = [e for e in events if e.severity == "stop" or e.kind == "early_stop"]
        if stops:
            raise TrainingStopped(stops[0])

    def save_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(self.phase_dir / "status.json", self.status)

    # --- the trainer's hooks -------------------------------------------------------------------

    def on_loss(self, step: int, losses: dict[str, float]) -> None:
        """A batch's losses before backward: a NaN stops the run before it reaches the weights."""
        self.events(self.monitor.check_loss(step, losses))

    def on_train(self, index: int, mel: float, text: float, lr: float, norm: Any) -> None:
        """Step ``index`` (0-based) done; stops at ``max_steps``."""
        self.row(index, "train", mel, text, lr, norm)
        self.events(self.monitor.on_train(index, mel, lr, norm))
        if self.max_steps and index + 1 >= self.max_steps:
            message = f"reached max_steps={self.max_steps}"
            raise TrainingStopped(HealthEvent(index, "max_steps", "info", message))

    def on_eval(self, step: int, mel: float, text: float, lr: float, seconds: float) -> None:
        """An evaluation after ``step`` steps, which took ``seconds`` (the best model's copy
        included): its row, its share of the phase's time in the status, its health."""
        self.row(step, "eval", mel, text, lr, None)
        self.save_status(
            eval_seconds=self.status.get("eval_seconds", 0.0) + seconds,
            evals=self.status.get("evals", 0) + 1,
        )
        self.events(self.monitor.on_eval(step, mel, text))

    def on_best(self, step: int, mel: float, text: float, path: Path) -> None:
        """A kept best model on disk (written in the background, reported once it is there):
        ``kept`` lists those on disk, best first; ``best_*`` is the lowest eval Mel CE."""
        entry = {"step": step, "mel_ce": mel, "text_ce": text, "checkpoint": str(path)}
        kept = [
            k
            for k in self.status.get("kept", [])
            if k["checkpoint"] != str(path) and Path(k["checkpoint"]).is_file()
        ]
        kept = sorted([*kept, entry], key=lambda k: (k["mel_ce"], k["step"]))
        best = kept[0]
        self.save_status(
            kept=kept,
            best_step=best["step"],
            best_mel_ce=best["mel_ce"],
            best_text_ce=best["text_ce"],
            best_checkpoint=best["checkpoint"],
        )
