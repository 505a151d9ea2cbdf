"""A chart that grows while a stage runs: a plotly figure redrawn in place under a progress bar.

The figure is a display (no widget needed), so a papermill run keeps its last state. JupyterLab's
plotly renderer draws a figure once and ignores updates of it (plotly.py issue 3053: the chart
stayed empty while the saved notebook held every point), so a redraw displays the figure anew
and empties the previous display; redraws are at most one per ``REDRAW_SECONDS``, which keeps
the emptied outputs of a long run few. In a notebook the progress bar is a widget, and a saved notebook keeps only the text it
had when first displayed ("0%| 0/264"): it is displayed by id too, so that ``close`` records its
final text.
"""

from __future__ import annotations

import html
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd


class LiveChart:
    """Rows in, ``figure(rows_frame, title)`` redrawn; one progress-bar tick per ``advance``."""

    def __init__(
        self,
        title: str,
        figure: Callable[[pd.DataFrame, str], Any],
        columns: list[str],
        total: int,
        initial: int = 0,
        unit: str = "step",
    ):
        from tqdm.auto import tqdm
        from tqdm.notebook import tqdm as notebook_tqdm

        self.title, self.figure, self.columns = title, figure, columns
        self.rows: list[dict[str, Any]] = []
        widget = issubclass(tqdm, notebook_tqdm)
        options = {"display": False} if widget else {}
        self.bar = tqdm(total=total, initial=initial, desc=title, unit=unit, **options)
        self.bar_handle: Any = None
        if widget:
            from IPython.display import display

            self.bar_handle = display(self.bar.container, display_id=True)
        self.handle: Any = None
        self.drawn = 0.0  # when the chart was last drawn (time.monotonic)

    def _bundle(self) -> dict[str, Any]:
        fig = self.figure(pd.DataFrame(self.rows, columns=self.columns), self.title)
        return {
            "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
            "text/plain": self.title,
        }

    def show(self) -> None:
        from IPython.display import display

        self.handle = display(self._bundle(), raw=True, display_id=True)
        self.drawn = time.monotonic()

    def add(self, row: dict[str, Any], advance: bool, redraw: bool, **postfix: str) -> None:
        self.rows.append(row)
        if advance:
            self.bar.update(1)
            self.bar.set_postfix(**postfix)
        if redraw:
            self.redraw()

    REDRAW_SECONDS = 10.0

    def redraw(self, force: bool = False) -> None:
        """The chart drawn again with the rows so far (see the module doc)."""
        from IPython.display import display

        if self.handle is None:
            return
        if not force and time.monotonic() - self.drawn < self.REDRAW_SECONDS:
            return
        previous = self.handle
        self.handle = display(self._bundle(), raw=True, display_id=True)
        previous.update({}, raw=True)
        self.drawn = time.monotonic()

    def close(self, rows: pd.DataFrame | None = None) -> None:
        """The final chart (from ``rows`` when given: what was recorded) and the bar's text."""
        if rows is not None:
            self.rows = rows.to_dict("records")
        self.redraw(force=True)
        self.bar.close()
        if self.bar_handle is not None:
            self.bar_handle.update(self.bar.container)


class ProgressLine:
    """A line that says which long step a Run All is at, where the reader is: near the top of the
    notebook (where it is made) and at the top of each long cell (each ``now``).

    JupyterLab may leave the reader at the top while the steps run far below, or scroll with the
    run, past the progress bars inside the cells. Every copy of the line shares one display id,
    so all of them change in place together; a saved or papermill-run notebook keeps their last
    state ("done in 2 min 31 s").
    """

    TICK_SECONDS = 5.0  # how often the elapsed time moves while a step runs

    def __init__(self, title: str, steps: list[str]):
        from IPython.display import display

        self.title, self.steps = title, steps
        self.started = time.monotonic()
        self.id = f"vb-progress-{uuid.uuid4().hex}"
        self.text = "starting"
        self.stop, self.lock = threading.Event(), threading.Lock()
        display(self._bundle(self.text), raw=True, display_id=self.id)
        threading.Thread(target=self._tick, name="progress-line", daemon=True).start()

    def _tick(self) -> None:
        """Redraw the line every few seconds, so the time so far moves through a long step;
        ends at ``done`` (or when the kernel goes)."""
        from IPython.display import update_display

        while not self.stop.wait(self.TICK_SECONDS):
            with self.lock:  # never after done's last word
                if not self.stop.is_set():
                    update_display(self._bundle(self.text), raw=True, display_id=self.id)

    def _bundle(self, text: str, done: bool = False) -> dict[str, str]:
        elapsed = time.monotonic() - self.started
        took = f"{int(elapsed // 60)} min {int(elapsed % 60)} s"
        line = f"{self.title}: " + (
            f"done in {took}. {text}" if done else f"{text} ({took} so far)"
        )
        colour = "#1b5e20" if done else "#0d47a1"
        return {
            "text/plain": line,
            "text/html": f'<div style="font-weight:600;color:{colour}">▶ {html.escape(line)}</div>',
        }

    def now(self, step: str) -> None:
        """Step ``step`` (one of ``steps``) starts: every copy says so, and a new copy opens the
        output of the cell that runs it."""
        from IPython.display import display, update_display

        number = self.steps.index(step) + 1
        self.text = f"step {number} of {len(self.steps)}, {step}"
        bundle = self._bundle(self.text)
        update_display(bundle, raw=True, display_id=self.id)
        display(bundle, raw=True, display_id=self.id)

    def done(self, next_step: str = "") -> None:
        """Every step ran; ``next_step`` says what the reader does now."""
        from IPython.display import update_display

        with self.lock:
            self.stop.set()
            update_display(self._bundle(next_step, done=True), raw=True, display_id=self.id)
