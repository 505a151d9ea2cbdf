"""The dataset card: what went in, what came out, and a quality rating whose rules are data.

``card.json`` is the record; ``card.html`` renders it with plotly charts and tables, in one
self-contained file.
"""

from __future__ import annotations

import operator
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

from voicebook.coqui.limits import MAX_TEXT_TOKENS as XTTS_MAX_TEXT_TOKENS
from voicebook.coqui.limits import MAX_WAV_SAMPLES as XTTS_MAX_WAV_SAMPLES
from voicebook.coqui.limits import MIN_SECONDS as XTTS_MIN_SECONDS
from voicebook.coqui.limits import SAMPLE_RATE as XTTS_SAMPLE_RATE
from voicebook.core import html as page_html
from voicebook.dataprep.config import CATEGORIES, DURATION_BANDS, DataPrepConfig
from voicebook.dataprep.review import MAJORITY_SHARE, voice_shares

CARD_VERSION = 1
HISTOGRAM_BIN_S = 0.5
# Rated top-down: the first tier whose rules all hold. Minutes follow common XTTS fine-tuning
# practice (10 min to adapt a voice, 30+ min for a good one).
QUALITY_TIERS: list[dict[str, Any]] = [
    {
        "rating": "good",
        "rules": [
            {"metric": "train_minutes", "op": ">=", "value": 30},
            {"metric": "eval_clips", "op": ">=", "value": 4},
            {"metric": "question_share", "op": ">=", "value": 0.05},
            {"metric": "categories_with_5pct", "op": ">=", "value": 4},
            {"metric": "rejected_input_share", "op": "<=", "value": 0.10},
        ],
    },
    {
        "rating": "usable",
        "rules": [
            {"metric": "train_minutes", "op": ">=", "value": 10},
            {"metric": "eval_clips", "op": ">=", "value": 2},
            {"metric": "rejected_input_share", "op": "<=", "value": 0.25},
        ],
    },
    {
        "rating": "thin",
        "rules": [
            {"metric": "train_clips", "op": ">=", "value": 1},
            {"metric": "eval_clips", "op": ">=", "value": 1},
        ],
    },
]
_OPS = {">=": operator.ge, "<=": operator.le}


def _minutes(clips: list) -> float:
    return round(sum(c.duration for c in clips) / 60, 2)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {
        "min": round(min(values), 1),
        "median": round(median(values), 1),
        "max": round(max(values), 1),
    }


def rate_quality(metrics: dict[str, float], tiers: list[dict[str, Any]] = QUALITY_TIERS) -> dict:
    """The first tier whose rules all hold ("unusable" if none), with every rule's outcome."""
    checked = []
    rating = "unusable"
    for tier in tiers:
        rules = [
            {
                **r,
                "actual": metrics[r["metric"]],
                "passed": _OPS[r["op"]](metrics[r["metric"]], r["value"]),
            }
            for r in tier["rules"]
        ]
        checked.append({"rating": tier["rating"], "rules": rules})
        if rating == "unusable" and all(r["passed"] for r in rules):
            rating = tier["rating"]
    return {"rating": rating, "metrics": metrics, "tiers": checked, "fallback": "unusable"}


def _categories(names: list[str], clips: list, evals: list, tests: list) -> dict[str, Any]:
    """Clips and minutes per source and category (with their split), and per duration band."""
    eval_files = {c.audio_file for c in evals}
    test_files = {c.audio_file for c in tests}
    table = []
    for name in names:
        for category in CATEGORIES:
            group = [c for c in clips if c.source == name and c.category == category]
            table.append(
                {
                    "source": name,
                    "category": category,
                    "clips": len(group),
                    "minutes": _minutes(group),
                    "train": sum(1 for c in group if c.audio_file not in eval_files | test_files),
                    "eval": sum(1 for c in group if c.audio_file in eval_files),
                    "test": sum(1 for c in group if c.audio_file in test_files),
                }
            )
    bands = [
        {"source": name, "band": band, "clips": len(g), "minutes": _minutes(g)}
        for name in names
        for band in DURATION_BANDS
        for g in [[c for c in clips if c.source == name and c.band == band]]
    ]
    return {
        "bands_seconds": {
            k: [lo, None if hi == float("inf") else hi] for k, (lo, hi) in DURATION_BANDS.items()
        },
        "rule": "category = 'question' when the text ends with '?', else the duration band; "
        "'bands' counts every clip (questions too) by duration",
        "table": table,
        "bands": bands,
    }


def _histogram(names: list[str], clips: list) -> dict[str, Any]:
    top = max([c.duration for c in clips], default=0.0)
    edges = [i * HISTOGRAM_BIN_S for i in range(int(top / HISTOGRAM_BIN_S) + 2)]
    counts = {
        name: [
            sum(1 for c in clips if c.source == name and lo <= c.duration < lo + HISTOGRAM_BIN_S)
            for lo in edges[:-1]
        ]
        for name in names
    }
    return {"bin_seconds": HISTOGRAM_BIN_S, "edges": edges, "counts": counts}


def _quality_metrics(train: list, evals: list, clips: list, accounting: dict) -> dict:
    """The numbers ``QUALITY_TIERS`` rate."""
    n = len(clips)
    per_category = Counter(c.category for c in clips)
    inputs = accounting["inputs"]
    return {
        "train_minutes": _minutes(train),
        "train_clips": len(train),
        "eval_clips": len(evals),
        "question_share": round(per_category["question"] / n, 3) if n else 0.0,
        "categories_with_5pct": sum(1 for k in CATEGORIES if n and per_category[k] / n >= 0.05),
        "rejected_input_share": round(accounting["inputs_in_rejected"] / inputs, 3)
        if inputs
        else 0.0,
    }


def _sources(scanned: list, clips: list, rejected: list) -> list[dict[str, Any]]:
    sources = []
    for s in scanned:
        mine = [c for c in clips if c.source == s.spec.name]
        sources.append(
            {
                "name": s.spec.name,
                "path": str(s.spec.path),
                "kind": s.kind,
                "found": s.found,
                "inputs": len(s.inventory),
                "clips": len(mine),
                "minutes": _minutes(mine),
                "rejected": sum(1 for r in rejected if r.source == s.spec.name),
                "input_lufs": _stats([c.input_lufs for c in mine]),
            }
        )
    return sources


def _totals(train: list, evals: list, tests: list, rejected: list) -> dict[str, Any]:
    clips = train + evals + tests
    n = len(clips)
    return {
        "clips": n,
        "minutes": _minutes(clips),
        "train_clips": len(train),
        "train_minutes": _minutes(train),
        "eval_clips": len(evals),
        "eval_minutes": _minutes(evals),
        "test_clips": len(tests),
        "test_minutes": _minutes(tests),
        "rejected": len(rejected),
        "mean_seconds": round(sum(c.duration for c in clips) / n, 2) if n else 0.0,
    }


def _held_out(config: DataPrepConfig, evals: list, tests: list) -> dict[str, Any]:
    """The card's "eval" and "test" entries: what each held-out split is for and how it was
    drawn."""
    return {
        "eval": {
            "role": "validation: the phases and the voice search select on it",
            "clips": len(evals),
            "fraction": config.eval_fraction,
            "min_eval": config.min_eval,
            "seed": config.seed,
            "stratified_by": ["source", "category"],
        },
        "test": {
            "role": "test: the evaluation reports it; nothing selects on it",
            "clips": len(tests),
            "fraction": config.test_fraction,
            "min_test": config.min_test,
            "seed": config.seed,
            "stratified_by": ["source", "category"],
        },
    }


def _processing(config: DataPrepConfig, clips: list) -> dict[str, Any]:
    """The card's "loudness", "text" and "xtts_limits" entries."""
    return {
        "loudness": {
            "target_lufs": config.target_lufs,
            "peak_ceiling_dbfs": config.peak_ceiling_dbfs,
            "input_lufs": _stats([c.input_lufs for c in clips]),
            "gain_db": _stats([c.gain_db for c in clips]),
            "peak_limited_clips": sum(1 for c in clips if c.peak_limited),
        },
        "text": {
            "max_tokens": max((c.n_tokens for c in clips), default=0),
            "token_limit": XTTS_MAX_TEXT_TOKENS,
            "clips_from_split_cues": sum(1 for c in clips if c.split),
            "split_cue_note": "text of a cue cut at a pause was divided at the punctuation "
            "nearest the pause: listen to these clips",
        },
        "xtts_limits": {
            "max_wav_samples": XTTS_MAX_WAV_SAMPLES,
            "max_seconds": round(XTTS_MAX_WAV_SAMPLES / XTTS_SAMPLE_RATE, 2),
            "min_seconds": XTTS_MIN_SECONDS,
            "max_text_tokens": XTTS_MAX_TEXT_TOKENS,
            "unknown_tokens_allowed": False,
        },
    }


def build_card(
    config: DataPrepConfig,
    scanned: list,
    train: list,
    evals: list,
    rejected: list,
    accounting: dict[str, Any],
    tests: list = (),
    review: dict[str, str] | None = None,
    voice_examples: dict[str, dict[int, str]] | None = None,
) -> dict[str, Any]:
    """Everything a person needs to judge the dataset, as plain JSON values; ``voice_examples``:
    per source, each voice's example clip where no voice holds a clear majority."""
    tests = list(tests)
    clips = train + evals + tests
    names = [s.spec.name for s in scanned]
    held_out, processing = _held_out(config, evals, tests), _processing(config, clips)
    return {
        "generator": "voicebook.dataprep",
        "card_version": CARD_VERSION,
        "language": config.language,
        "sample_rate": config.sample_rate,
        "totals": _totals(train, evals, tests, rejected),
        "sources": _sources(scanned, clips, rejected),
        "categories": _categories(names, clips, evals, tests),
        "duration_histogram": _histogram(names, clips),
        **held_out,
        "rejections": {
            "count": len(rejected),
            "by_kind": dict(sorted(Counter(r.kind for r in rejected).items())),
            "by_source": {name: sum(1 for r in rejected if r.source == name) for name in names},
        },
        **processing,
        "accounting": accounting,
        "asr": asr_summary(config, scanned, clips, review or {}, voice_examples or {}),
        "quality": rate_quality(_quality_metrics(train, evals, clips, accounting)),
        "config": config.to_dict(),
    }


def asr_summary(
    config: DataPrepConfig,
    scanned: list,
    clips: list,
    review: dict[str, str],
    voice_examples: dict[str, dict[int, str]] | None = None,
) -> dict[str, Any]:
    """What speech recognition produced, per untranscribed source: its clips with their mean
    word log-probability, no-speech probability and speaker similarity, and where they went;
    the voices the speaker check told apart, with their shares (``review.voice_shares``)."""
    voice_examples = voice_examples or {}
    in_dataset = {i for c in clips for i in c.inputs}
    sources = {}
    for s in scanned:
        if not s.asr_rows:
            continue
        rows = s.asr_rows
        kept = [c for c in clips if c.source == s.spec.name]
        status = Counter(r["status"] for r in rows)
        sources[s.spec.name] = {
            "heard_clips": len(rows),
            "heard_minutes": round(sum(r["end"] - r["start"] for r in rows) / 60, 2),
            "low_confidence": status["low_confidence"],
            "other_speaker": status["other_speaker"],
            "in_dataset_clips": len(kept),
            "in_dataset_minutes": _minutes(kept),
            "review": review.get(s.spec.name, ""),
            "voices": _voices(rows, voice_examples.get(s.spec.name, {})),
            "clips": [r | {"in_dataset": r["input"] in in_dataset} for r in rows],
        }
    return {
        "model": config.asr_model,
        "min_logprob": config.asr_min_logprob,
        "max_no_speech": config.asr_max_no_speech,
        "min_speaker_similarity": config.min_speaker_similarity,
        "speaker_centroid": "speaker_reference clips" if config.speaker_reference
        else "each source's own clips (refined towards its majority voice)",
        "sources": sources,
    }  # fmt: skip


def _voices(rows: list[dict], examples: dict[int, str]) -> list[dict[str, Any]]:
    shares = [
        {k: v for k, v in voice.items() if k != "example_span"} for voice in voice_shares(rows)
    ]
    return [v | {"example_file": examples.get(v["voice"], "")} for v in shares]


def _no_majority(card: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(source, its voices) for each ASR source where no voice holds ``MAJORITY_SHARE``."""
    sources = card.get("asr", {}).get("sources", {}).items()
    return [
        (name, s["voices"])
        for name, s in sources
        if s.get("voices") and max(v["share"] for v in s["voices"]) < MAJORITY_SHARE
    ]


def _voice_warning(name: str, voices: list[dict[str, Any]]) -> str:
    each = "; ".join(
        f"voice {v['voice']}{' (kept)' if v['kept'] else ' (rejected)'}: {v['share']:.0%} "
        f"of the speech, {v['clips']} clips, e.g. {v['example_file'] or v['example']}"
        for v in voices
    )
    example = next((v["example_file"] for v in voices if v["example_file"]), "voice.wav")
    return (
        f"Source {name!r}: no voice holds a clear majority (under {MAJORITY_SHARE:.0%} of its "
        f"speech); the speaker check kept voice 1 and rejected the others. {each}. Listen to "
        "the examples and name clips of the voice you want in speaker_reference (e.g. "
        f"speaker_reference=[{example!r}]), then run data prep again."
    )


def voice_warnings(card: dict[str, Any]) -> list[str]:
    """A warning per ASR source where no voice holds ``MAJORITY_SHARE`` of the speech: each
    voice's share and example clip, and how to choose one with ``speaker_reference``."""
    return [_voice_warning(name, voices) for name, voices in _no_majority(card)]


def show_voice_warnings(card: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """In a notebook: each ``voice_warnings`` warning, then each voice's example clip to play.
    Returns what it showed: (warning, example files) per source."""
    from IPython.display import Audio, Markdown, display

    shown = []
    for name, voices in _no_majority(card):
        warning = _voice_warning(name, voices)
        files = [v["example_file"] for v in voices if v["example_file"]]
        display(Markdown(f"**Warning.** {warning}"))
        for file in files:
            display(Markdown(f"`{file}`"), Audio(file))
        shown.append((warning, files))
    return shown


def asr_figures(card: dict[str, Any]) -> list:
    """Speaker similarity of every ASR clip against the threshold, and the ASR's confidence."""
    import plotly.graph_objects as go

    asr = card.get("asr", {})
    if not asr.get("sources"):
        return []
    similarity = go.Figure(
        [go.Histogram(x=[c["speaker_similarity"] for c in s["clips"]], name=name,
                      xbins={"size": 0.02})
         for name, s in asr["sources"].items()],
        layout={"title": "Speaker similarity of each ASR clip to the speaker's centroid",
                "xaxis_title": "cosine similarity (resemblyzer)", "yaxis_title": "clips",
                "barmode": "overlay"},
    )  # fmt: skip
    if asr["min_speaker_similarity"] > 0:
        similarity.add_vline(
            x=asr["min_speaker_similarity"], line_dash="dash", annotation_text="threshold"
        )
    confidence = go.Figure(
        [go.Scatter(x=[c["mean_logprob"] for c in s["clips"]],
                    y=[c["no_speech_prob"] for c in s["clips"]], mode="markers", name=name,
                    text=[f"{c['recording']} {c['start']}-{c['end']} s: {c['status']}"
                          for c in s["clips"]])
         for name, s in asr["sources"].items()],
        layout={"title": "ASR confidence per clip", "xaxis_title": "mean word log-probability",
                "yaxis_title": "no-speech probability"},
    )  # fmt: skip
    confidence.add_vline(x=asr["min_logprob"], line_dash="dash")
    confidence.add_hline(y=asr["max_no_speech"], line_dash="dash")
    return [similarity, confidence]


# --- rendering ----------------------------------------------------------------------------------


def card_figures(card: dict[str, Any]) -> list:
    """Plotly figures of a card: duration histogram per source, minutes per category."""
    import plotly.graph_objects as go

    hist = card["duration_histogram"]
    centres = [e + hist["bin_seconds"] / 2 for e in hist["edges"][:-1]]
    durations = go.Figure(
        [go.Bar(x=centres, y=counts, name=name, width=hist["bin_seconds"] * 0.95)
         for name, counts in hist["counts"].items()],
        layout={
            "title": "Clip durations per source",
            "barmode": "stack",
            "xaxis_title": "seconds (after trimming)",
            "yaxis_title": "clips",
        },
    )  # fmt: skip
    table = card["categories"]["table"]
    sources = list(dict.fromkeys(row["source"] for row in table))
    categories = go.Figure(
        [
            go.Bar(
                x=[r["category"] for r in table if r["source"] == s],
                y=[r["minutes"] for r in table if r["source"] == s],
                customdata=[r["clips"] for r in table if r["source"] == s],
                hovertemplate="%{x}: %{y} min, %{customdata} clips",
                name=s,
            )
            for s in sources
        ],
        layout={"title": "Minutes per category", "barmode": "group", "yaxis_title": "minutes"},
    )
    return [durations, categories, *asr_figures(card)]


def card_tables(card: dict[str, Any]) -> dict[str, Any]:
    """The card's tables as pandas DataFrames: sources, categories, rejections, quality rules,
    and (when speech recognition ran) every ASR clip."""
    import pandas as pd

    sources = [{k: v for k, v in s.items() if k not in ("found", "input_lufs")}
               for s in card["sources"]]  # fmt: skip
    rules = [
        {"tier": t["rating"], "metric": r["metric"], "rule": f"{r['op']} {r['value']}",
         "actual": r["actual"], "passed": r["passed"]}
        for t in card["quality"]["tiers"]
        for r in t["rules"]
    ]  # fmt: skip
    kinds = card["rejections"]["by_kind"]
    asr = [{"source": n, **{k: v for k, v in c.items() if k != "input"}}
           for n, s in card.get("asr", {}).get("sources", {}).items() for c in s["clips"]]  # fmt: skip
    return {
        "sources": pd.DataFrame(sources),
        "categories": pd.DataFrame(card["categories"]["table"]),
        "rejections": pd.DataFrame({"kind": list(kinds), "count": list(kinds.values())}),
        "quality": pd.DataFrame(rules),
        **({"asr": pd.DataFrame(asr)} if asr else {}),
    }


def bands_figure(card: dict[str, Any]):
    """Minutes per source and duration band (stacked bars): where the voice's material is."""
    import plotly.graph_objects as go

    bands = card["categories"]["bands"]
    sources = list(dict.fromkeys(row["source"] for row in bands))
    return go.Figure(
        [go.Bar(x=[r["band"] for r in bands if r["source"] == s],
                y=[r["minutes"] for r in bands if r["source"] == s],
                customdata=[r["clips"] for r in bands if r["source"] == s],
                hovertemplate="%{x}: %{y} min, %{customdata} clips", name=s)
         for s in sources],
        layout={"title": {"text": "Minutes per source and duration band"}, "barmode": "stack",
                "yaxis_title": "minutes", "height": 340, "margin": {"t": 50, "b": 40}},
    )  # fmt: skip


def quality_reasons(quality: dict[str, Any]) -> list[str]:
    """The rating in sentences: the rules its tier met, and for each better tier the rules that
    kept the dataset out of it."""

    def rule(r: dict[str, Any]) -> str:
        return f"{r['metric']} {r['actual']} (needs {r['op']} {r['value']})"

    reasons = []
    for tier in quality["tiers"]:
        if tier["rating"] == quality["rating"]:
            reasons.append(f"{tier['rating']}: " + "; ".join(rule(r) for r in tier["rules"]))
            break
        failed = [rule(r) for r in tier["rules"] if not r["passed"]]
        reasons.append(f"not {tier['rating']}: " + "; ".join(failed))
    return reasons


def _headline(card: dict[str, Any]) -> str:
    totals = card["totals"]
    return (
        f"{totals['clips']} clips, {totals['minutes']} minutes from {len(card['sources'])} "
        f"source(s); quality <b>{page_html.esc(card['quality']['rating'])}</b>"
    )


def summary_parts(card: dict[str, Any], level: int = 2, link: str = "") -> list[str]:
    """What a person decides with: totals, sources, minutes per source and band (a plot),
    rejections by reason, the quality rating with its reasons; ``link``: the full card's URL.
    ``level`` is the heading level of its sections. The report and ``card.html`` both use it."""
    h = f"h{level}"
    totals = card["totals"]
    reasons = "".join(f"<li>{page_html.esc(r)}</li>" for r in quality_reasons(card["quality"]))
    kinds = card["rejections"]["by_kind"]
    sources = [{k: v for k, v in s.items() if k not in ("found", "input_lufs")}
               for s in card["sources"]]  # fmt: skip
    warnings = "".join(f'<p class="box warn">{page_html.esc(w)}</p>' for w in voice_warnings(card))
    return [
        f"<p>{_headline(card)}.</p>",
        *([warnings] if warnings else []),
        *([f'<p><a href="{page_html.esc(link)}">The full dataset card</a></p>'] if link else []),
        f"<{h}>Quality: {page_html.esc(card['quality']['rating'])}</{h}>",
        f"<ul>{reasons}</ul>",
        f"<{h}>Totals</{h}>",
        page_html.table([totals], first=("clips", "minutes", "train_minutes", "rejected")),
        f"<{h}>Sources</{h}>",
        page_html.table(sources, first=("name", "kind", "clips", "minutes", "rejected")),
        page_html.figure(bands_figure(card), div_id="card-bands"),
        f"<{h}>Rejections by reason</{h}>",
        page_html.table([{"reason": k, "inputs": v} for k, v in kinds.items()])
        if kinds
        else "<p>None.</p>",
    ]


def _asr_sections(card: dict[str, Any]) -> list[str]:
    sources = card.get("asr", {}).get("sources", {})
    if not sources:
        return []
    summary = [{"source": n, **{k: v for k, v in s.items() if k != "clips"}}
               for n, s in sources.items()]  # fmt: skip
    clips = [{"source": n, **c} for n, s in sources.items() for c in s["clips"]]
    return ["<h2>Speech recognition</h2>", page_html.table(summary), page_html.table(clips)]


def _detail_parts(card: dict[str, Any]) -> list[str]:
    """The rest of the card: charts, clips per category, quality rules, accounting, loudness."""
    rules = [
        {"tier": t["rating"], "rule": f"{r['metric']} {r['op']} {r['value']}",
         "actual": r["actual"], "passed": r["passed"]}
        for t in card["quality"]["tiers"]
        for r in t["rules"]
    ]  # fmt: skip
    loudness = card["loudness"]
    return [
        *(page_html.figure(fig, div_id=f"chart{i}") for i, fig in enumerate(card_figures(card))),
        "<h2>Clips per source and category</h2>",
        page_html.table(card["categories"]["table"]),
        "<h2>Quality rules</h2>",
        page_html.table(rules),
        "<h2>Every input accounted for</h2>",
        page_html.table([{k: v for k, v in card["accounting"].items() if k != "rows"}]),
        *_asr_sections(card),
        "<h2>Loudness</h2>",
        page_html.table([{"target_lufs": loudness["target_lufs"],
                          **{f"input_lufs_{k}": v for k, v in loudness["input_lufs"].items()},
                          "peak_limited_clips": loudness["peak_limited_clips"]}]),
    ]  # fmt: skip


def card_page(card: dict[str, Any], rejected_rows: list | None = None) -> str:
    """``card.html``'s page: the summary the report shows too, then every detail."""
    totals = card["totals"]
    parts = [
        f"<h1>Dataset card: {totals['clips']} clips, {totals['minutes']} minutes</h1>",
        *summary_parts(card),
        *_detail_parts(card),
    ]
    if rejected_rows is not None:
        parts += ["<h2>Rejected items</h2>", page_html.table(rejected_rows)]
    return page_html.page("Dataset card", parts)


def write_card_html(card: dict[str, Any], path: Path, rejected_rows: list | None = None) -> None:
    """``card.html``: one self-contained page (plotly.js inlined once)."""
    path.write_text(card_page(card, rejected_rows), encoding="utf-8")
