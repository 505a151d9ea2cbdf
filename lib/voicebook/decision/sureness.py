"""The report's "How sure" section and what ``decision.json`` adds about the evidence.

Three parts: one forest plot (each candidate's difference against the base, per measure, with
its 95 % interval, coloured by verdict), the failure rates per candidate per 100 takes with
Wilson intervals, and the counts behind every figure (sentences x takes, clips).
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from voicebook.core import html as page_html
from voicebook.core.stages import EvaluationScraps
from voicebook.decision.confidence import WORDS
from voicebook.measures import paired as mp
from voicebook.measures import stats
from voicebook.measures.failures import FLAGS

COLOURS = {stats.BETTER: "#2ca02c", stats.WORSE: "#d62728", stats.SAME: "#7f7f7f"}
FAILURES = (*FLAGS, "failure")
PANELS_PER_ROW = 4


def record(evaluation: EvaluationScraps) -> dict[str, Any]:
    """``takes`` (per sentence), ``references`` (the clips the voice was made from) and the
    stress set, for ``decision.json``."""
    settings = evaluation.eval_settings or {}
    return {
        "takes": settings.get("takes"),
        "references": settings.get("reference_clips") or [],
        "stress_sentences": settings.get("stress_sentences") or [],
    }


def counts(evaluation: EvaluationScraps) -> str:
    """The counts behind every figure, in one sentence."""
    takes, clips = evaluation.eval_takes, evaluation.eval_clip_losses
    settings = evaluation.eval_settings or {}
    one = takes[takes["candidate"] == takes["candidate"].iloc[0]]
    test, stress = (one[one["set"] == s]["sentence_id"].nunique() for s in ("test", "stress"))
    per = int(one["take"].max())
    n_clips = clips["audio_file"].nunique() if isinstance(clips, pd.DataFrame) else 0
    return (
        f"Per candidate: {test} test sentences × {per} takes = {test * per} takes for CER, "
        f"speaker similarity, Distill-MOS and tempo; with the stress set ({stress} sentences) "
        f"{len(one)} takes for the failure rates; Mel CE and Text CE over {n_clips} held-out "
        f"clips. Every candidate's take k of a sentence used the same seed and its voice's "
        f"one conditioning. Sampler: temperature {settings.get('temperature')}, top_p "
        f"{settings.get('top_p')}, top_k {settings.get('top_k')}, repetition_penalty "
        f"{settings.get('repetition_penalty')}, length_penalty {settings.get('length_penalty')}. "
        f"The voice from train clips: {', '.join(settings.get('reference_clips') or [])}. "
        f"Intervals: paired bootstrap, {stats.BOOTSTRAP_RESAMPLES} resamples of the sentences "
        f"(a sentence's takes together) or the clips, seed {settings.get('bootstrap_seed')}."
    )


def forest(comparisons: pd.DataFrame, base: str) -> go.Figure | None:
    """Each candidate's difference against ``base``, one panel per measure, with its interval;
    None when there is nothing to draw."""
    if comparisons.empty:  # a withheld decision (stale evidence) compares nothing
        return None
    rows = comparisons[comparisons["against"] == base]
    if rows.empty:
        return None
    metrics = list(dict.fromkeys(rows["metric"]))
    titles = [f"{WORDS.get(m, m)} ({'↑' if stats.DIRECTION[m] > 0 else '↓'} is better)"
              for m in metrics]  # fmt: skip
    cols = min(PANELS_PER_ROW, len(metrics))
    grid = -(-len(metrics) // cols)
    fig = make_subplots(rows=grid, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.3 / grid)  # fmt: skip
    for i, metric in enumerate(metrics):
        row, col = i // cols + 1, i % cols + 1
        part = rows[rows["metric"] == metric]
        for verdict, group in part.groupby("verdict"):
            fig.add_trace(go.Scatter(
                x=group["difference"], y=group["candidate"], mode="markers",
                marker={"color": COLOURS[verdict], "size": 9}, name=verdict,
                legendgroup=verdict, showlegend=verdict not in _shown(fig),
                error_x={"type": "data", "symmetric": False,
                         "array": group["ci_high"] - group["difference"],
                         "arrayminus": group["difference"] - group["ci_low"]},
                customdata=group[["n", "takes", "unit"]],
                hovertemplate="%{y}: %{x:.4g}<br>n=%{customdata[0]} %{customdata[2]}s, "
                "%{customdata[1]} pairs<extra></extra>",
            ), row=row, col=col)  # fmt: skip
        fig.update_xaxes(nticks=5, row=row, col=col)
        fig.add_vline(x=0, line={"color": "black", "width": 1}, row=row, col=col)
    height = 90 + grid * (80 + 35 * rows["candidate"].nunique())
    return fig.update_layout(
        height=height, margin={"t": 70, "b": 40, "l": 10},
        title=f"Difference against {base} (95 % interval)", legend={"orientation": "h"},
    )  # fmt: skip


def _shown(fig: go.Figure) -> set[str]:
    return {t.name for t in fig.data if t.showlegend}


def failure_table(takes: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: each failure per 100 takes with its Wilson interval, and the takes."""
    rates = mp.failure_rates(takes, [f for f in FAILURES if f in takes])
    rates["per_100"] = [
        f"{r.per_100:.0f} [{r.ci_low:.0f}, {r.ci_high:.0f}]" for r in rates.itertuples()
    ]
    wide = rates.pivot(index="candidate", columns="failure", values="per_100")
    wide = wide.reindex(index=list(dict.fromkeys(rates["candidate"])))
    wide = wide[[f for f in FAILURES if f in wide]]
    taken = rates.groupby("candidate", sort=False)["takes"].max()
    return wide.assign(takes=taken).rename_axis(None, axis=1).reset_index()


def comparison_frame(decision: Any) -> pd.DataFrame:
    """The decision's comparisons as a table (its columns even when there are none: a
    decision withheld on stale evidence compares nothing)."""
    return pd.DataFrame(decision.comparisons, columns=list(mp.Comparison.__dataclass_fields__))


def section(evaluation: EvaluationScraps, decision: Any) -> list[str]:
    """The "How sure" section's HTML parts (a note when the evaluation recorded no takes)."""
    takes = evaluation.eval_takes
    if not isinstance(takes, pd.DataFrame) or takes.empty:
        if not evaluation:
            return []
        return ["<h2>How sure</h2>", "<p>No takes recorded: re-run 03_evaluation.</p>"]
    table = comparison_frame(decision)
    base = str(takes["candidate"].iloc[0])
    fig = forest(table, base)
    words = _verdict_sentences(table, base)
    parts = ["<h2>How sure</h2>", f"<p>{html.escape(counts(evaluation))}</p>"]
    if decision.finetuning_beat_zero_shot is False:
        parts.append('<div class="box warn"><p><b>Fine-tuning did not beat zero-shot here.</b>'
                     "</p></div>")  # fmt: skip
    parts += [f"<ul>{words}</ul>" if words else ""]
    parts += [page_html.figure(fig, "how-sure-forest")] if fig is not None else []
    shown = table.round({"difference": 4, "ci_low": 4, "ci_high": 4, "win_rate": 2})
    parts += [
        "<h3>Every comparison</h3>",
        (
            "<p>Difference = candidate minus against, in the measure's units. A candidate is "
            "better or worse only when the whole 95 % interval lies beyond the measure's practical "
            "floor (<code>voicebook.measures.stats.PRACTICAL_FLOOR</code>); otherwise the two are "
            "indistinguishable on it. n: sentences (takes: paired takes) or clips resampled.</p>"
        ),
        page_html.table(shown),
        "<h3>Failures per 100 takes</h3>",
        (
            "<p>runaway: the token cap hit, words or voiced audio after the text's last word; "
            "truncated: the last word not heard; skipped_or_repeated: a word missing or heard "
            "twice (Whisper's word timestamps); failure: any of them. Test sentences and the stress "
            "set together; 95 % Wilson intervals in brackets.</p>"
        ),
        page_html.table(failure_table(takes)),
    ]
    return parts


def _verdict_sentences(table: pd.DataFrame, base: str) -> str:
    out = []
    for name, rows in table[table["against"] == base].groupby("candidate", sort=False):
        said = {v: [WORDS.get(m, m) for m in rows.loc[rows["verdict"] == v, "metric"]]
                for v in (stats.BETTER, stats.WORSE, stats.SAME)}  # fmt: skip
        parts = [f"{v} on {', '.join(m)}" for v, m in said.items() if m]
        out.append(f"<li>{html.escape(name)} against {html.escape(base)}: "
                   f"{html.escape('; '.join(parts))}.</li>")  # fmt: skip
    return "".join(out)
