"""The phases' charts: Mel CE and Text CE by step, live while training and after it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core.figures import Curve, curves_figure
from voicebook.core.live import LiveChart
from voicebook.core.paths import TRAIN_META, experiment_dir
from voicebook.training.files import CURVE_COLUMNS, read_curves, read_json
from voicebook.training.params import PhaseConfig


class LiveView(LiveChart):
    """Train and eval Mel CE / Text CE by step, redrawn as rows arrive, under a progress bar."""

    def __init__(self, title: str, total_steps: int, start_step: int = 0, redraw_every: int = 10):
        super().__init__(title, phase_figure, CURVE_COLUMNS, total_steps, start_step, "step")
        self.redraw_every = redraw_every

    def on_row(self, row: dict[str, Any]) -> None:
        train = row["split"] == "train"
        redraw = not train or (len(self.rows) + 1) % self.redraw_every == 0
        self.add(row, train, redraw, mel_ce=f"{row['loss_mel_ce']:.3f}")


def phase_figure(curves: pd.DataFrame, title: str = ""):
    """Train and eval Mel CE (left) and Text CE x0.01 (right) by step; one colour per split in
    both panels, so the legend's two entries cover Text CE too."""
    lines = [
        Curve(f"{split} (Mel CE, Text CE)", part["step"], part[loss], panel, split, mode=mode)
        for panel, loss in enumerate(("loss_mel_ce", "loss_text_ce"))
        for split, mode in (("train", "lines"), ("eval", "lines+markers"))
        for part in [curves[curves["split"] == split]]
    ]
    panels = ("Mel CE", "Text CE (x0.01, as logged)")
    return curves_figure(lines, panels, x_title="step", title=title)


def live_view(params: PhaseConfig) -> LiveView:
    """A LiveView sized for ``params``: planned steps from the dataset, start from past curves."""
    exp = experiment_dir(params.experiment, params.outputs_dir)
    meta = Path(params.dataset_dir or exp / "dataset") / TRAIN_META
    n_train = max(len(meta.read_text().splitlines()) - 1, 0) if meta.is_file() else 0
    done = steps_to_continue(params, exp / params.stage)
    return LiveView(params.stage.replace("phase", "Phase "), planned_steps(params, n_train), done)


def steps_to_continue(params: PhaseConfig, phase_dir: Path) -> int:
    """The train steps already recorded of the run these parameters continue: 0 for a new run
    (none yet, or one with other parameters, which ``run_phase`` moves to ``history/``)."""
    status = read_json(phase_dir / "status.json")
    identity = json.loads(json.dumps(params.training_identity()))
    if not status or params.identity_of(status.get("params") or {}) != identity:
        return 0
    curves = read_curves(phase_dir)
    return int((curves["split"] == "train").sum())


def planned_steps(params: PhaseConfig, n_train: int) -> int:
    """Steps the run will take (epochs x batches, capped by max_steps), for the progress bar."""
    steps = params.epochs * math.ceil(n_train / params.batch_size)
    return min(steps, params.max_steps) if params.max_steps else steps
