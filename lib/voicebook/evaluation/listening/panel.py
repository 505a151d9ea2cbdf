"""The blind listening panel: ipywidgets over a ``ListeningSession``.

Blind: nothing in it names a candidate, and it shows no results (the summary cell does). A new
name or mode takes effect at once; every sample starts unrated and is saved only when every
scale is chosen; each save is confirmed. **Previous** goes back to an earlier sample to replay
it or change its rating: the change is appended, the earlier row stays on disk. A panel whose
kernel is gone says so and what to do; its fields and buttons are disabled, and keys typed on it
never reach JupyterLab's command-mode shortcuts (an "x" would cut the cell).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import soundfile as sf

from voicebook.evaluation.listening.results import experiment_path
from voicebook.evaluation.listening.session import (
    HIGHEST,
    LOWEST,
    SCALES,
    TIE,
    ListeningSession,
    Sample,
    Trial,
    load_samples,
)

PANEL_CLASS = "vb-listening"
MIN_PLAYER_SECONDS = 1.0  # a browser shows a shorter clip as "0:00 / 0:00"
ANCHORS = {LOWEST: "very poor", HIGHEST: "excellent, like a real recording"}
KERNEL_GONE = (
    "The kernel behind this panel is gone (restarted or shut down): this panel saves nothing "
    "any more. To go on rating, run this cell again: click its code and press Shift+Enter. "
    "Your saved ratings are kept, and you resume where you stopped."
)
# Widgets mark their views "jupyter-widgets-disconnected" when the kernel goes away; ipywidgets
# shows only a tiny icon for it. Then this style greys the panel out and cannot be clicked through
# (its fields and buttons are disabled), and lays the shield over it: the banner that says what to
# do. The shield takes the focus of any click on the dead panel and carries Lumino's
# data-lm-suppress-shortcuts, so that keys typed there never reach JupyterLab's command-mode
# shortcuts: a click that fell through to the notebook would leave it in command mode, where an
# "x" cuts the cell and "d d" deletes it. Every Lumino widget is "position: relative", so the
# shield's own views are made static: the shield then covers the whole panel, not its own view.
PANEL_STYLE = f"""<style>
.{PANEL_CLASS} {{ position: relative; }}
.{PANEL_CLASS} .vb-shield {{ display: none; }}
.{PANEL_CLASS}:not(.jupyter-widgets-disconnected) > .vb-shield-view {{ display: none; }}
.{PANEL_CLASS} .vb-shield-view, .{PANEL_CLASS} .vb-shield-view * {{ position: static; }}
.{PANEL_CLASS}.jupyter-widgets-disconnected .vb-shield-view .vb-shield {{
  display: block; position: absolute; inset: 0; z-index: 10; background: rgba(255,255,255,.55);
}}
.{PANEL_CLASS} .vb-shield > div {{
  padding: .6em .9em; font: 600 14px/1.4 var(--jp-ui-font-family, sans-serif); color: #fff;
  background: #b00020; border-radius: 4px; outline-offset: 2px;
}}
.{PANEL_CLASS}.jupyter-widgets-disconnected > :not(.vb-shield-view) {{
  opacity: .35; pointer-events: none; user-select: none;
}}
.{PANEL_CLASS} .widget-toggle-buttons {{ display: flex; align-items: center; }}
</style>"""
SHIELD = (
    f'<div class="vb-shield" role="alert"><div tabindex="0" data-lm-suppress-shortcuts="true">'
    f"{KERNEL_GONE}</div></div>"
)
SCALE_HELP = {
    "smoothness": "no clicks, jumps, stutter or sudden changes",
    "naturalness": "sounds like a person speaking, not a machine",
    "emotion": "the tone fits the sentence",
    "overall": "how good the sample is, all in all",
}


def player_bytes(wav: Path) -> tuple[bytes, float]:
    """The wav to play and its duration in seconds; a clip under ``MIN_PLAYER_SECONDS`` gets
    trailing silence so that the player shows a real length instead of 0:00."""
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    seconds = len(audio) / rate
    if seconds >= MIN_PLAYER_SECONDS:
        return Path(wav).read_bytes(), seconds
    padded = np.zeros((math.ceil(MIN_PLAYER_SECONDS * rate), audio.shape[1]), np.float32)
    padded[: len(audio)] = audio
    buffer = io.BytesIO()
    sf.write(buffer, padded, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), seconds


def _player(sample: Sample, code: str) -> w.HTML:
    """An audio player named "Sample X" for screen readers, with the clip's length beside it.

    Plain HTML rather than ``ipywidgets.Audio``: that widget cannot carry a name (its tooltip
    breaks the view in ipywidgets 8.1), and the data URL keeps the file's name off the page. The
    length shown is what the player plays (a short clip is padded), the speech's own in brackets.
    """
    data, seconds = player_bytes(sample.wav)
    src = "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")
    name = f"Sample {code}"
    played = max(seconds, MIN_PLAYER_SECONDS)
    length = f"{played:.1f} s" + (f" (speech {seconds:.1f} s)" if played > seconds else "")
    return _html(
        f"<div style='display:flex;align-items:center;gap:.6em'>"
        f"<audio controls preload='metadata' aria-label='{name}' title='{name}' src='{src}'>"
        f"</audio><span title='length of {name}'>{length}</span></div>"
    )


def _html(value: str = "") -> w.HTML:
    """An HTML widget whose (hidden) label carries no "null" tooltip."""
    return w.HTML(value, tooltip="")


def _scale(scale: str, value: int | None) -> w.ToggleButtons:
    options = [(str(v), v) for v in range(LOWEST, HIGHEST + 1)]
    tips = [f"{scale}: {v} of {HIGHEST}" + (f" ({ANCHORS[v]})" if v in ANCHORS else "")
            for v in range(LOWEST, HIGHEST + 1)]  # fmt: skip
    return w.ToggleButtons(
        options=options,
        value=value,  # None for a new sample: the rater must choose, nothing is pre-set
        description=scale,
        tooltip=f"{scale}: {SCALE_HELP[scale]}",
        tooltips=tips,
        style={"button_width": "3.2em", "description_width": "7em"},
        layout={"width": "auto"},  # ipywidgets' default 300 px would wrap the ten buttons
    )


def _anchor_legend() -> str:
    return (
        f"<div style='margin:.3em 0 .2em 7.5em'><b>{LOWEST}</b> = {ANCHORS[LOWEST]} · "
        f"<b>{HIGHEST}</b> = {ANCHORS[HIGHEST]}</div>"
    )


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


class ListeningPanel:
    """The panel's widgets (``.widget``) and what they do. ``position`` is the index, in the
    rater's order (``ListeningSession.items``), of the sample shown; None when none is."""

    def __init__(self, ratings_path: str | Path, samples: list[Sample], seed: str = ""):
        self.ratings_path, self.samples, self.seed = ratings_path, samples, seed
        self.session: ListeningSession | None = None
        self.position: int | None = None
        self.render = 0  # bumped at every redraw: a click on an outdated view is not saved
        self.rater = w.Text(
            description="Rater",
            placeholder="your name, then Enter",
            tooltip="Your name: your ratings are saved under it",
            continuous_update=False,
        )
        self.mode = w.ToggleButtons(
            options=[("1-10 scores", "scores"), ("A/B preference", "ab")],
            description="Mode",
            tooltip="Rate samples one by one, or choose the better of two",
            tooltips=["Rate each sample 1-10 on four scales", "Choose the better of two samples"],
            layout={"width": "auto"},
        )
        self.start = w.Button(
            description="Start / resume", button_style="primary", tooltip="Rate as the name given"
        )
        self.status, self.saved, self.stage = _html(), _html(), w.VBox()
        self.start.on_click(self.begin)
        self.rater.observe(self.changed, "value")
        self.mode.observe(self.changed, "value")
        self.widget = self._layout()

    def _layout(self) -> w.VBox:
        if not self.samples:
            self.status.value = "No synthesised samples yet: run the evaluation cells above first."
            self.start.disabled = self.rater.disabled = self.mode.disabled = True
        else:
            self.status.value = "Enter your name (then Enter) to start or resume."
        header = w.HBox([self.rater, self.mode, self.start])
        shield = _html(SHIELD)  # shown only when the kernel is gone (PANEL_STYLE)
        shield.add_class("vb-shield-view")
        panel = w.VBox([_html(PANEL_STYLE), header, self.status, self.saved, self.stage, shield])
        panel.add_class(PANEL_CLASS)
        panel.state = self  # for tests and power users: the live session and the sample shown
        return panel

    # -- messages and navigation ---------------------------------------------------------

    def say(self, message: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#1b5e20"
        self.saved.value = (
            f"<div role='status' aria-live='polite' style='color:{colour}'>{message}</div>"
        )

    def begin(self, _: Any = None) -> None:
        self.session = None
        try:
            self.session = ListeningSession(
                self.ratings_path, self.rater.value, self.samples, self.mode.value, self.seed
            )
        except ValueError as exc:  # no name yet, no samples, a foreign ratings file
            self.stage.children, self.status.value = [], ""
            self.say(str(exc), error=True)
            return
        self.saved.value = ""
        self.show_next()

    def changed(self, _: Any) -> None:
        """A new name or mode acts at once."""
        if self.rater.value.strip():
            self.begin()
            return
        self.session = None
        self.stage.children, self.status.value = [], ""
        self.say("Enter a rater name first: ratings are kept per rater.", error=True)

    def show_next(self) -> None:
        """The first sample this rater has not rated, or the end."""
        upcoming = self.session.next()
        self.show(None if upcoming is None else self.session.items().index(upcoming))

    def show(self, position: int | None) -> None:
        self.position, self.render = position, self.render + 1
        done, total = self.session.progress()
        who = f"Rating as <b>{html.escape(self.session.rater)}</b>"
        back = self._previous_button()
        if position is None:
            self.status.value = (
                f"{who}: all {total} rated. Thank you! The results are in the summary cell "
                "below (run it to refresh). <b>Previous</b> goes back to change a rating."
            )
            self.stage.children = [back]
            return
        trial, code = self.session.items()[position]
        given = self.session.given(trial, code)
        rows = self._scores(trial, code, given) if code else self._ab(trial, given)
        self.stage.children = [*rows[:-1], w.HBox([back, *rows[-1].children])]
        again = (
            f" You rated this at {given['timestamp'][11:19]} UTC: a change is saved as a new row."
            if given
            else ""
        )
        self.status.value = (
            f"{who}. {done} of {total} rated. Sentence: <i>{html.escape(trial.text)}</i>.{again}"
        )

    def _previous_button(self) -> w.Button:
        back = w.Button(description="◀ Previous", tooltip="Go back to the sample before this one")
        end = len(self.session.items())
        back.disabled = self.position == 0 or end == 0
        token = self.render
        back.on_click(lambda _: self.current(token) and self.show((self.position or end) - 1))
        return back

    def current(self, token: int) -> bool:
        if token == self.render and self.session is not None:
            return True
        self.say(
            "Not saved: the panel changed (new name or mode) since that sample was shown.", True
        )
        return False

    # -- the two kinds of sample ---------------------------------------------------------

    def _scores(self, trial: Trial, code: str, given: dict | None) -> list:
        scales = {s: _scale(s, given and given[s]) for s in SCALES}
        save = w.Button(description="Save and next", button_style="success", disabled=True)
        hint = _html()

        def refresh(_: Any = None) -> None:
            left = [s for s, widget in scales.items() if widget.value is None]
            save.disabled = bool(left)
            hint.value = (
                f"Choose a value on every scale to save ({', '.join(left)} left)." if left else ""
            )
            save.tooltip = hint.value or f"Save the ratings of sample {code}"

        for widget in scales.values():
            widget.observe(refresh, "value")
        refresh()
        token = self.render
        save.on_click(
            lambda _: self.rate(trial, code, {s: x.value for s, x in scales.items()}, token)
        )
        return [
            _html(f"<b>Sample {code}</b>"),
            _player(trial.blind[code], code),
            _html(_anchor_legend()),
            *scales.values(),
            w.HBox([save, hint]),
        ]

    def _ab(self, trial: Trial, given: dict | None) -> list:
        labels = {"A": "A is better", "B": "B is better", TIE: "No preference"}
        choices, token = [], self.render
        for choice, label in labels.items():
            chosen = given is not None and given["choice"] == choice
            button = w.Button(
                description=label + (" ✓" if chosen else ""), tooltip=f"Save: {label.lower()}"
            )
            button.on_click(lambda _, c=choice: self.prefer(trial, c, token))
            choices.append(button)
        pair = [w.VBox([_html(f"<b>{c}</b>"), _player(s, c)]) for c, s in trial.blind.items()]
        return [w.HBox(pair), w.HBox(choices)]

    # -- saving --------------------------------------------------------------------------

    def rate(self, trial: Trial, code: str, scores: dict[str, Any], token: int) -> None:
        if not self.current(token):
            return
        try:
            self.session.record_scores(trial, code, scores)
        except (ValueError, OSError) as exc:
            self.say(f"Not saved: {html.escape(str(exc))}", error=True)
            return
        self.say(f"✓ Saved at {_now()}: sample {code}, overall {scores['overall']}.")
        self.show_next()

    def prefer(self, trial: Trial, choice: str, token: int) -> None:
        if not self.current(token):
            return
        try:
            self.session.record_preference(trial, choice)
        except (ValueError, OSError) as exc:
            self.say(f"Not saved: {html.escape(str(exc))}", error=True)
            return
        said = "no preference" if choice == TIE else f"{choice} is better"
        self.say(f"✓ Saved at {_now()}: {said}.")
        self.show_next()


def listening_panel(ratings_path: str | Path, samples: list[Sample], seed: str = "") -> w.VBox:
    """The panel's widget over ``samples``, saving to ``ratings_path``."""
    return ListeningPanel(ratings_path, samples, seed).widget


def experiment_panel(namespace: dict[str, Any]) -> w.VBox:
    """The listening panel over the experiment named in ``namespace`` (the notebook's globals)."""
    exp = experiment_path(namespace)
    return listening_panel(exp / "ratings.csv", load_samples(exp / "eval"), seed=exp.name)
