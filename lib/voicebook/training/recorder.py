"""Recording a phase as it trains: curve rows, health events and status, on disk at once."""

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
    ):
        self.phase_dir, self.monitor, self.status, self.on_row = phase_dir, monitor, status, on_row
        self.health: list[dict[str, Any]] = read_json(phase_dir / "health.json", [])
        path = phase_dir / "curves.csv"
        new = not path.is_file()
        self.curves_file = path.open("a", newline="", buffering=1)
        self.writer = csv.writer(self.curves_file)
        if new:
            self.writer.writerow(CURVE_COLUMNS)
        self.last_eval_step: int | None = None

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
