"""The sweep report: Tune's ``ResultGrid`` (status, last eval losses, curves) joined with each
finished trial's own decision matrix; trials stopped early with the steps and minutes saved."""

from __future__ import annotations

import html
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core import html as page_html
from voicebook.core.figures import Curve, curves_figure
from voicebook.core.fileio import write_text_atomic
from voicebook.decision import matrix as dm
from voicebook.sweep import trial as tr
from voicebook.sweep.spec import (
    SweepSpec,
    now,
    sweep_record,
    trial_name,
    tune_path,
    values_of,
)

REPORT_NAME = "sweep_report.html"
STOPPED = "stopped early"
RESULT_COLUMNS = [
    "status",
    "step",
    "eval_mel_ce",
    "ships",
    "ready",
    "tier",
    "mel_ce",
    "text_ce",
    "best_tuned_mel_ce",
    "minutes",
    "saved_steps",
    "saved_minutes",
]


def result_grid(folder: Path, storage: str | None = None):
    """Tune's results of the sweep in ``folder`` (None before Tune has written its state)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    path = tune_path(folder, storage)
    if not (storage or Path(path).is_dir()):
        return None
    try:
        return ResultGrid(ExperimentAnalysis(path))
    except (ValueError, FileNotFoundError):  # no experiment state written yet
        return None


def result_row(result: Any, sweep: str, folder: Path) -> dict[str, Any]:
    """A trial's line from its Tune ``Result``: values, status, last eval loss, time."""
    values = values_of(result.config or {})  # None for a trial whose actor never ran
    name = Path(result.path).name if result.config is None else trial_name(sweep, values)
    m = result.metrics or {}
    stopped = folder / name / tr.STOPPED_NAME
    if result.error:
        lines = str(result.error).strip().splitlines()  # Ray's traceback, then the message
        error = next((x for x in reversed(lines) if "voicebook:" in x), lines[-1])
        error = error[error.find("voicebook:") :][:500]
        status = "failed"
    elif m.get("finished"):
        status, error = "done", ""
    elif stopped.is_file():
        status, error = STOPPED, ""
    else:
        status, error = ("running" if m else "pending"), ""
    minutes = m.get("minutes")
    if status == STOPPED:
        minutes = json.loads(stopped.read_text())["minutes"]
    row = {
        "trial": name,
        **values,
        "status": status,
        "step": m.get(tr.TIME_ATTR),
        "eval_mel_ce": dm.finite_or_none(m.get(tr.METRIC)),
        "minutes": minutes,
        "error": error,
    }
    return row


def decision_columns(row: dict[str, Any], exp: Path, thresholds: dm.Thresholds | None) -> None:
    """Add what the finished trial's own decision matrix recommends."""
    from voicebook.decision.report import analyse_experiment

    try:
        result = analyse_experiment(exp, thresholds)
    except Exception as exc:  # noqa: BLE001 - an unreadable notebook: say so, keep the others
        row["error"] = f"report: {type(exc).__name__}: {exc}"
        return
    d = result.decision
    by_name = {c.name: c for c in result.candidates}
    tuned = [dm.finite_or_none(c.mel_ce) for c in result.candidates if c.name != dm.BASE]
    row.update(
        ships=d.winner_label,
        ready=d.ready,
        tier=d.tier,
        mel_ce=dm.finite_or_none(by_name[d.winner].mel_ce) if d.winner in by_name else None,
        text_ce=dm.finite_or_none(by_name[d.winner].text_ce) if d.winner in by_name else None,
        best_tuned_mel_ce=min((m for m in tuned if m is not None), default=None),
    )


def savings(table: pd.DataFrame) -> pd.DataFrame:
    """Steps and minutes each trial stopped early saved: against the trials that ran to the end
    (their largest last step, their mean minutes, which include the stages a stop skips)."""
    done = table[table["status"] == "done"]
    stopped = table["status"] == STOPPED
    if done.empty or not stopped.any():
        return table
    full_steps, full_minutes = done["step"].max(), done["minutes"].mean()
    table.loc[stopped, "saved_steps"] = (full_steps - table.loc[stopped, "step"]).clip(lower=0)
    table.loc[stopped, "saved_minutes"] = (full_minutes - table.loc[stopped, "minutes"]).clip(
        lower=0
    )
    return table


def sweep_table(
    folder: Path, thresholds: dm.Thresholds | None = None, results: Any = None
) -> pd.DataFrame:
    """Every trial of the sweep side by side: swept parameters as columns, then results."""
    record = sweep_record(folder)
    swept = list(
        dict.fromkeys(
            [k for t in record.get("listed", []) for k in t] + list(record.get("axes", {}))
        )
    )
    results = results if results is not None else result_grid(folder)
    rows = []
    for result in results or []:
        row = result_row(result, record.get("sweep", folder.name), folder)
        if row["status"] == "done":
            decision_columns(row, folder / row["trial"], thresholds)
        rows.append(row)
    columns = ["trial", *swept, *RESULT_COLUMNS, "error"]
    table = pd.DataFrame(rows, columns=columns).sort_values("trial", ignore_index=True)
    table = table.astype({"saved_steps": object})
    return savings(table.astype({"saved_minutes": object}))


_TIER_RANK = {t: i for i, t in enumerate(dm.TIERS)}


def favoured(table: pd.DataFrame) -> tuple[str | None, str]:
    """The finished trial the evidence favours, and why in one sentence.

    Each trial's decision picks what it would ship; trials are ranked by that: ready to ship
    first, then the better tier, then the lower eval Mel CE of what ships, then the lower Mel CE
    of its best fine-tuned candidate (when every trial would ship the same base model).
    """
    done = table[(table["status"] == "done") & table["ships"].notna()]
    if done.empty:
        return None, "No trial has finished with a decision yet."

    def key(row: dict[str, Any]) -> tuple:
        mel, tuned = dm.finite_or_none(row["mel_ce"]), dm.finite_or_none(row["best_tuned_mel_ce"])
        return (
            not bool(row["ready"]),
            _TIER_RANK.get(row["tier"], len(dm.TIERS)),
            math.inf if mel is None else mel,
            math.inf if tuned is None else tuned,
        )

    best = min(done.to_dict("records"), key=key)
    mel, tuned = dm.finite_or_none(best["mel_ce"]), dm.finite_or_none(best["best_tuned_mel_ce"])
    figures = f"tier {best['tier'] or 'unknown'}, eval Mel CE {_fmt(mel)}"
    verdict = (
        f"would ship {best['ships']} (ready, {figures})"
        if best["ready"]
        else f"has nothing ready to ship: {best['ships']} ({figures})"
    )
    why = (
        f"{best['trial']} {verdict}: the best of {len(done)} finished trials by readiness, "
        "tier, then eval Mel CE"
    )
    if len(done) > 1 and (done["mel_ce"] == best["mel_ce"]).all():
        why += f", then its best fine-tuned model's eval Mel CE ({_fmt(tuned)})"
    return best["trial"], why + "."


def _box_class(table: pd.DataFrame, winner: str | None) -> str:
    """Green only when the favoured trial would ship something ready; amber otherwise."""
    row = table[table["trial"] == winner]
    ready = not row.empty and str(row["ready"].iloc[0]) == "True"
    return "box" if ready else "box warn"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def trials_figure(results: Any, sweep: str) -> Any:
    """Each trial's eval Mel CE as Tune received it, by training step: a trial stopped early
    is a line that ends early; None before any trial reported."""
    lines = []
    for result in results or []:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or tr.METRIC not in frame:
            continue
        frame = frame.dropna(subset=[tr.METRIC])
        name = trial_name(sweep, values_of(result.config or {}))
        lines.append(Curve(name, frame[tr.TIME_ATTR], frame[tr.METRIC], mode="lines+markers"))
    return curves_figure(
        lines, x_title="training step", y_title="eval Mel CE", height=420
    ) if lines else None  # fmt: skip


_LEGEND = (
    "step / eval_mel_ce = the last training step and eval Mel CE the trial reported to Tune; "
    "ships = what the trial's decision matrix recommends; mel_ce / text_ce are its eval losses; "
    "best_tuned_mel_ce = the lowest eval Mel CE of the trial's fine-tuned candidates; "
    f"'{STOPPED}' = Tune's scheduler ended it (its kernel interrupted, its outputs kept); "
    "saved_steps / saved_minutes = against the trials that ran to the end."
)


def render_sweep_report(
    folder: Path, thresholds: dm.Thresholds | None = None, results: Any = None
) -> str:
    """The sweep's page: the favoured trial, every trial side by side, the curves."""
    esc = html.escape
    record = sweep_record(folder)
    results = results if results is not None else result_grid(folder)
    table = sweep_table(folder, thresholds, results)
    winner, why = favoured(table)
    counts = ", ".join(f"{v} {k}" for k, v in table["status"].value_counts().items())
    figure = trials_figure(results, record.get("sweep", folder.name))
    shared = (record.get("data_prep") or {}).get("status", "not run")
    how = (
        f"Stages: {', '.join(record.get('stages', []))}; fixed parameters: "
        f"{json.dumps(record.get('fixed', {}), ensure_ascii=False)}; shared data prep: {shared}. "
        f"A trial's own report: voicebook run --experiment TRIAL --stages decision "
        f"--outputs-dir {folder}"
    )
    sections = [
        f"<h1>Sweep report — {esc(folder.name)}</h1>",
        f"<p>Generated {now()}; trials: {esc(counts or 'none')}.</p>",
        f'<div class="{_box_class(table, winner)}"><h2>Favoured: {esc(winner or "none yet")}</h2>',
        f"<p>{esc(why)}</p></div>",
        "<h2>Every trial</h2>",
        page_html.table(table),
        f"<p>{esc(_LEGEND)}</p>",
        "<h2>Eval Mel CE as the trials trained</h2>",
        page_html.figure(figure) if figure else "<p>No eval loss reported yet.</p>",
        f"<h2>How it ran</h2><p>{esc(how)}</p>",
    ]
    return page_html.page(f"voicebook sweep — {folder.name}", sections)


def write_sweep_report(
    folder: Path, results: Any = None, thresholds: dm.Thresholds | None = None
) -> Path:
    """Write ``sweep_report.html`` atomically; the previous one is kept as ``*.prev.html``."""
    path = Path(folder) / REPORT_NAME
    page = render_sweep_report(Path(folder), thresholds, results)
    if path.exists():
        path.replace(path.with_suffix(".prev.html"))
    return write_text_atomic(path, page)


def live_table(
    name: str,
    outputs_dir: str | os.PathLike | None = None,
    thresholds: dm.Thresholds | None = None,
    every_seconds: float = 10.0,
    max_minutes: float = 60.0,
) -> pd.DataFrame:
    """Show the sweep's table in a notebook, refreshed while trials are pending or running (for
    at most ``max_minutes``: a driver that died leaves trials running for ever)."""
    from IPython.display import display

    folder = SweepSpec(name, outputs_dir=outputs_dir).folder
    handle = display(pd.DataFrame(), display_id=True)
    deadline = time.monotonic() + max_minutes * 60
    while True:
        table = sweep_table(folder, thresholds)
        handle.update(table)
        if not table["status"].isin(["pending", "running"]).any() or time.monotonic() > deadline:
            return table
        time.sleep(every_seconds)
