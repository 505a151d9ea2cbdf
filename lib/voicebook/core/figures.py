"""The one curves figure (plotly): losses by step or generation, in one or more panels, that
every stage draws its curves with (a phase's, the phases side by side, a voice search's halves,
a sweep's trials). A stage says which lines it has (``Curve``); this draws them alike: one colour
per colour key in every panel, one legend entry per group, grey dashed rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Curve:
    """One line (or lone points) of a curves figure."""

    name: str
    x: Sequence[Any]
    y: Sequence[Any]
    panel: int = 0  # which panel, from the first (left, or top when stacked)
    group: str = ""  # its legend entry, shown once for every panel ("" = its name)
    colour: str = ""  # lines with one key share a colour ("" = its group)
    dash: str | None = None
    width: float | None = None
    opacity: float = 1.0
    mode: str = "lines"
    marker: dict[str, Any] = field(default_factory=dict)


RULE = {"dash": "dash", "color": "grey", "width": 1}


def curves_figure(
    curves: Iterable[Curve],
    panels: Sequence[str] = (),
    *,
    x_title: str,
    y_title: str = "",
    title: str = "",
    stacked: bool = False,
    rules: dict[int, Sequence[float]] | None = None,
    height: int = 380,
) -> Any:
    """The curves in ``panels`` (their titles) side by side, or ``stacked`` on one shared
    x axis; ``rules``: grey dashed lines at these values, by panel."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    n = max(len(panels), 1)
    grid = {"rows": n, "cols": 1, "shared_xaxes": True, "vertical_spacing": 0.08}
    fig = make_subplots(subplot_titles=list(panels) or None, **(grid if stacked else {"cols": n}))

    def cell(panel: int) -> dict[str, int]:
        return {"row": panel + 1, "col": 1} if stacked else {"row": 1, "col": panel + 1}

    colours: dict[str, str] = {}
    shown: set[str] = set()
    for c in curves:
        group = c.group or c.name
        key = c.colour or group
        colour = colours.setdefault(key, qualitative.Plotly[len(colours) % len(qualitative.Plotly)])
        fig.add_scatter(
            x=list(c.x), y=list(c.y), name=c.name, mode=c.mode, legendgroup=group,
            showlegend=group not in shown, opacity=c.opacity, marker=c.marker or None,
            line={"color": colour, "dash": c.dash, "width": c.width}, **cell(c.panel),
        )  # fmt: skip
        shown.add(group)
    for panel, values in (rules or {}).items():
        for y in values:
            fig.add_hline(y=y, line=RULE, **cell(panel))
    fig.update_xaxes(title_text=x_title, **(cell(n - 1) if stacked else {}))
    fig.update_layout(title=title or None, height=height, yaxis_title=y_title or None)
    return fig
