"""The blind listening panel: ipywidgets over a ``ListeningSession``.

Blind: nothing in it names a candidate, and it shows no results (the summary cell does). A new
name or mode takes effect at once; every sample starts unrated and is saved only when every
scale is chosen; each save is confirmed. **Previous** goes back to an earlier sample to replay
it or change its rating: the change is appended, the earlier row stays on disk. A panel whose
kernel is gone says so and what to do; a shield then covers all of it, takes every click on it
and keeps the keys typed there from JupyterLab's command-mode shortcuts (an "x" would cut the
cell). Blind by ear and on the wire too: every clip is played as a fresh WAV (mono, one sample
rate, no tags), padded to the length of the longest clip of its sentence, so that neither the
file, its header nor its length tells which candidate (or the real recording) it is.
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

from voicebook.evaluation.listening.session import (
    HIGHEST,
    LOWEST,
    SCALES,
    TIE,
    ListeningSession,
    ParametersNotRun,
    Sample,
    Trial,
    experiment_path,
    load_samples,
)

PANEL_CLASS = "vb-listening"
MIN_PLAYER_SECONDS = 1.0  # a browser shows a shorter clip as "0:00 / 0:00"
ANCHORS = {LOWEST: "very poor", HIGHEST: "excellent, like a real recording"}
PLAYER_RATE = 24000  # XTTS's output rate: every clip is played at it (the real one included)
KERNEL_GONE = (
    "The kernel behind this panel is gone (restarted or shut down): this panel saves nothing "
    "any more. To go on rating, run the first code cell (parameters), then this cell: click "
    "each one's code and press Shift+Enter. Your saved ratings are kept, and you resume where "
    "you stopped."
)
# Widgets mark their views "jupyter-widgets-disconnected" when the kernel goes away; ipywidgets
# shows only a tiny icon for it. Then this style greys the panel out and cannot be clicked through
# (its fields and buttons are disabled), and lays the shield over all of it, with the banner that
# says what to do. The whole shield is focusable and carries Lumino's data-lm-suppress-shortcuts:
# a click anywhere on the dead panel focuses it (not the notebook), and keys typed then never
# reach JupyterLab's command-mode shortcuts, where an "x" cuts the cell and "d d" deletes it.
# Every Lumino widget is "position: relative", so the shield's own views are made static: the
# shield then covers the whole panel, not its own view.
PANEL_STYLE = f"""<style>
.{PANEL_CLASS} {{ position: relative; }}
.{PANEL_CLASS} .vb-shield {{ display: none; }}
.{PANEL_CLASS}:not(.jupyter-widgets-disconnected) > .vb-shield-view {{ display: none; }}
.{PANEL_CLASS} .vb-shield-view, .{PANEL_CLASS} .vb-shield-view * {{ position: static; }}
.{PANEL_CLASS}.jupyter-widgets-disconnected .vb-shield-view .vb-shield {{
  display: block; position: absolute; inset: 0; z-index: 10; background: rgba(255,255,255,.55);
}}
.{PANEL_CLASS} .vb-shield:focus {{ outline: none; }}
.{PANEL_CLASS} .vb-shield > div {{
  padding: .6em .9em; font: 600 14px/1.4 var(--jp-ui-font-family, sans-serif); color: #fff;
  background: #b00020; border-radius: 4px; outline-offset: 2px;
}}
.{PANEL_CLASS}.jupyter-widgets-disconnected > :not(.vb-shield-view) {{
  opacity: .35; pointer-events: none; user-select: none;
}}
.{PANEL_CLASS} .widget-toggle-buttons {{ display: flex; align-items: center; }}
</style>"""
PAGE_GONE = (  # the same on a served page (voicebook listen), where a reload is all it takes
    "The connection to the server is gone: this page saves nothing any more. Reload the page "
    "to go on rating: your saved ratings are kept, and you resume where you stopped."
)


def shield(message: str) -> str:
    """The dead panel's cover (see PANEL_STYLE), saying ``message``."""
    return (
        '<div class="vb-shield" tabindex="0" data-lm-suppress-shortcuts="true">'
        f'<div role="alert">{message}</div></div>'
    )


SHIELD = shield(KERNEL_GONE)
SCALE_HELP = {
    "smoothness": "no clicks, jumps, stutter or sudden changes",
    "naturalness": "sounds like a person speaking, not a machine",
    "emotion": "the tone fits the sentence",
    "overall": "how good the sample is, all in all",
}


def clip_seconds(wav: Path) -> float:
    """How long ``wav`` plays, from its header."""
    info = sf.info(str(wav))
    return info.frames / info.samplerate


def player_bytes(wav: Path, seconds: float = 0.0) -> bytes:
    """``wav`` as the page plays it: mono 16-bit at ``PLAYER_RATE``, no tags, padded with
    silence to ``seconds`` (and to at least ``MIN_PLAYER_SECONDS``, or the player shows 0:00).

    Written afresh, so that no byte of the file on disk (its tags, its sample rate, its length)
    reaches the page: a real recording at another rate, or a tag naming a checkpoint, would
    tell a listener who looks what it is.
    """
    from scipy.signal import resample_poly

    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != PLAYER_RATE:
        divisor = math.gcd(rate, PLAYER_RATE)
        mono = resample_poly(mono, PLAYER_RATE // divisor, rate // divisor).astype(np.float32)
    frames = math.ceil(max(seconds, MIN_PLAYER_SECONDS) * PLAYER_RATE)
    if not seconds:
        frames = max(frames, len(mono))
    mono = mono[:frames]  # resampling may add a frame: every clip of a sentence is as long
    padded = np.zeros(frames, np.float32)
    padded[: len(mono)] = np.clip(mono, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, padded, PLAYER_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _player(sample: Sample, code: str, seconds: float) -> w.HTML:
    """An audio player named "Sample X" for screen readers, with the clip's length beside it.

    Plain HTML rather than ``ipywidgets.Audio``: that widget cannot carry a name (its tooltip
    breaks the view in ipywidgets 8.1), and the data URL keeps any file name off the page. Every
    clip of a sentence plays ``seconds`` long (its longest clip): one length per sentence, so the
    length tells nothing about the candidate.
    """
    data = player_bytes(sample.wav, seconds)
    src = "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")
    name = f"Sample {code}"
    length = f"{max(seconds, MIN_PLAYER_SECONDS):.1f} s"
    return _html(
        f"<div style='display:flex;align-items:center;gap:.6em'>"
        f"<audio controls preload='metadata' aria-label='{name}' title='{name}' src='{src}'>"
        f"</audio><span title='length of {name}'>{length}</span></div>"
    )


def full_stop_after(text: str) -> str:
    """A full stop after a sentence that has no closing mark yet, else nothing: the status
    line then never reads "Budapestet?." nor "volt.."."""
    return "" if text.rstrip().endswith((".", "?", "!", "…", '"', "”", "»")) else "."


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
    rater's order (``ListeningSession.items``), of the sample shown; None when none is.

    With ``rater`` given (a served page: ``voicebook listen``), the name is fixed and there is no
    name field: the page can only ever rate as that rater, whatever it sends.
    """

    def __init__(
        self, ratings_path: str | Path, samples: list[Sample], seed: str = "", rater: str = ""
    ):
        self.ratings_path, self.samples, self.seed = ratings_path, samples, seed
        self.fixed_rater = rater
        self.seconds = _longest_per_sentence(samples)
        self.session: ListeningSession | None = None
        self.position: int | None = None
        self.render = 0  # bumped at every redraw: a click on an outdated view is not saved
        self.rater = w.Text(
            value=rater,
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
        if rater and samples:
            self.begin()

    def _layout(self) -> w.VBox:
        if not self.samples:
            self.status.value = "No synthesised samples yet: run the evaluation cells above first."
            self.start.disabled = self.rater.disabled = self.mode.disabled = True
        else:
            self.status.value = "Enter your name (then Enter) to start or resume."
        named = [] if self.fixed_rater else [self.rater, self.start]
        header = w.HBox([*named[:1], self.mode, *named[1:]])
        cover = _html(shield(PAGE_GONE) if self.fixed_rater else SHIELD)  # once the kernel is gone
        cover.add_class("vb-shield-view")
        panel = w.VBox([_html(PANEL_STYLE), header, self.status, self.saved, self.stage, cover])
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
        rater = self.fixed_rater or self.rater.value
        try:
            self.session = ListeningSession(
                self.ratings_path, rater, self.samples, self.mode.value, self.seed
            )
        except ValueError as exc:  # no name yet, no samples, a foreign ratings file
            self.stage.children, self.status.value = [], ""
            self.say(str(exc), error=True)
            return
        self.saved.value = ""
        self.show_next()

    def changed(self, _: Any) -> None:
        """A new name or mode acts at once."""
        if self.fixed_rater or self.rater.value.strip():
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
                f"{who}: all {total} rated. Thank you! "
                + (
                    ""
                    if self.fixed_rater
                    else "The results are in the summary cell below (run it to refresh). "
                )
                + "<b>Previous</b> goes back to change a rating."
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
            f"{who}. {done} of {total} rated. Sentence: <i>{html.escape(trial.text)}</i>"
            f"{full_stop_after(trial.text)}{again}"
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
            self._player(trial.blind[code], code),
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
        pair = [w.VBox([_html(f"<b>{c}</b>"), self._player(s, c)]) for c, s in trial.blind.items()]
        return [w.HBox(pair), w.HBox(choices)]

    def _player(self, sample: Sample, code: str) -> w.HTML:
        try:
            return _player(sample, code, self.seconds.get(sample.sentence_id, 0.0))
        except (OSError, RuntimeError, ValueError):
            if not self.fixed_rater:
                raise  # in JupyterLab the error names the file to fix
            # On a served page an error would carry the file's path (a candidate's name) to
            # the browser: say only what the rater can do.
            return _html("<i>This sample cannot be played: tell the person who sent the link.</i>")

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


def _longest_per_sentence(samples: list[Sample]) -> dict[str, float]:
    """Per sentence, the length of its longest clip: every clip of it plays that long."""
    longest: dict[str, float] = {}
    for s in samples:
        longest[s.sentence_id] = max(longest.get(s.sentence_id, 0.0), clip_seconds(s.wav))
    return longest


def listening_panel(
    ratings_path: str | Path, samples: list[Sample], seed: str = "", rater: str = ""
) -> w.VBox:
    """The panel's widget over ``samples``, saving to ``ratings_path`` (as ``rater`` only, when
    given)."""
    return ListeningPanel(ratings_path, samples, seed, rater).widget


def experiment_panel(namespace: dict[str, Any]) -> w.Widget:
    """The listening panel over the experiment named in ``namespace`` (the notebook's globals);
    when the parameters cell has not run in this kernel, a note that says so and nothing else
    (no other experiment is opened, nothing is written)."""
    try:
        exp = experiment_path(namespace)
    except ParametersNotRun as exc:
        return refusal(str(exc))
    return listening_panel(exp / "ratings.csv", load_samples(exp / "eval"), seed=exp.name)


def refusal(message: str) -> w.HTML:
    """A red note in place of the panel."""
    note = html.escape(message)
    return _html(f"<div role='alert' style='color:#b00020;font-weight:600'>{note}</div>")
