"""One way to write HTML: a page, a table, a figure, and the one stylesheet they share.

The decision report, the dataset card (``card.html``) and the sweep report are built from these
pieces and carry no CSS of their own, so the three pages look alike and a change of style is made
once. Tables on a page fit the page (long identifiers and paths break, words never); a wide table
in a notebook (``WideTable``) puts its key columns first and scrolls sideways with a visible bar.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

# Classes a page may use beyond plain tags: .box (a highlighted block: the decision, the favoured
# trial), .box.alarm (something is wrong: stale evidence), .box.warn (something is missing),
# .muted (small print).
STYLESHEET = """
body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.82em;max-width:100%}
th,td{padding:.3em .5em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
td{overflow-wrap:break-word} th{background:#f3f3f3}
.box{background:#eef6ee;padding:1em 1.5em;border-radius:6px}
.box.alarm{background:#fdecea} .box.warn{background:#fff6e0;padding:.5em 1.5em}
.muted{color:#555;font-size:.9em}
"""
MISSING = "—"
# Notebook tables with more columns than this get a sideways-scroll cue above them.
WIDE_COLUMNS = 8


def esc(value: Any) -> str:
    return html.escape(str(value))


def cell(x: Any) -> Any:
    """A table cell's value: missing as a dash, floats to 4 significant digits, lists and
    dicts as they are (never tested for NaN)."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not isinstance(x, (list, dict, tuple)) and pd.isna(x):
        return MISSING
    return f"{x:.4g}" if isinstance(x, float) else x


def _breakable(text: str, after: str) -> str:
    return re.sub(f"([{after}])", r"\1<wbr>", text)


def table(data: pd.DataFrame | list[dict[str, Any]], first: tuple[str, ...] = ()) -> str:
    """A table that fits the page: ``first`` columns lead; headers may break after '_' or '.',
    cells after '_' or '/' (identifiers and paths), words never. Rows may be dicts."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if df.empty and not len(df.columns):
        return "<p>None.</p>"
    df = key_columns_first(df, first)
    out = df.astype(object).map(cell).to_html(index=False, border=0)
    out = re.sub(r"<th>(.*?)</th>", lambda m: f"<th>{_breakable(m[1], '_.')}</th>", out)
    return re.sub(r"<td>(.*?)</td>", lambda m: f"<td>{_breakable(m[1], '_/')}</td>", out)


def key_columns_first(df: pd.DataFrame, first: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """``df`` with the ``first`` columns it has in front, the others after in their order."""
    lead = [c for c in first if c in df.columns]
    return df[[*lead, *(c for c in df.columns if c not in lead)]]


def figure(fig: Any, div_id: str | None = None) -> str:
    """A plotly figure as a div; ``page`` adds plotly's JavaScript once, in the head. A fixed
    ``div_id`` keeps a rebuilt page byte-identical (plotly's default is random)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained page: the stylesheet, plotly.js inlined when a figure needs it."""
    body = "\n".join(parts)
    script = ""
    if "plotly-graph-div" in body:
        from plotly.offline import get_plotlyjs  # heavy: only for pages with figures

        script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
        f"</title><style>{STYLESHEET}</style>{script}</head>\n<body>\n{body}\n</body></html>\n"
    )


def _unbreakable(x: Any) -> str:
    text = str(cell(x)).replace(" ", "\u00a0")
    return re.sub(r"(?<=[^\W\d])-(?=[^\W\d])", "\u2011", text)  # fine-tune, not -0.5


class WideTable:
    """A DataFrame for a notebook's output area (about 850 px at a 1280 px window): the key
    columns first, the first of them pinned while the rest scroll sideways under a bar that
    is always drawn, and a line above saying how many columns there are to scroll to."""

    def __init__(self, df: pd.DataFrame, first: tuple[str, ...] | list[str] = ()):
        self.df = key_columns_first(df, first)

    def _repr_html_(self) -> str:
        columns = len(self.df.columns)
        # No wrapping: squeezed into the output area, "base model (no fine-tune)" took 4 lines.
        # Non-breaking spaces and hyphens hold whatever the notebook's own CSS says.
        inner = self.df.astype(object).map(_unbreakable).to_html(index=False, border=0)
        inner = inner.replace(
            "<th>", '<th style="position:sticky;left:0;background:#f3f3f3">', 1
        )  # the header of the pinned column
        inner = re.sub(
            r"<tr>\s*<td>", '<tr><td style="position:sticky;left:0;background:#fff">', inner
        )
        cue = (
            f'<div style="font-size:.9em;color:#555">{columns} columns: scroll sideways '
            "(the bar under the table, or Shift + mouse wheel) for the rest →</div>"
            if columns > WIDE_COLUMNS
            else ""
        )
        return f'{cue}<div style="overflow-x:scroll;max-width:100%">{inner}</div>'

    def __repr__(self) -> str:  # plain-text outputs (papermill logs, a terminal)
        return repr(self.df)
