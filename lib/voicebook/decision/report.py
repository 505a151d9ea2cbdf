"""The comparison report: one self-contained HTML page that says which model to ship, and why.

Reads the latest results of every stage of an experiment (``scraps.read_experiment``: the
records each stage writes when it publishes, however it was run), applies the
decision matrix (:mod:`voicebook.decision.matrix`) and writes ``report.html`` and ``decision.json`` in the
experiment folder. Both are generated artefacts: writing them again moves the previous versions to
``report.prev.html`` / ``decision.prev.json`` (one level of history; the stage notebooks hold the
evidence, so a report can always be rebuilt).

The rendering functions take plain scraps dicts, so they are tested without running notebooks.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from voicebook.core import html as page_html
from voicebook.core import stages as contract
from voicebook.core.figures import Curve, curves_figure
from voicebook.core.fileio import to_history, write_text_atomic
from voicebook.core.lineage import Assessment, assess
from voicebook.core.paths import outputs_root
from voicebook.core.scraps import provenance, ran_at, read_experiment, read_records, run_params
from voicebook.dataprep.card import summary_parts as card_summary_parts
from voicebook.decision import matrix as dm
from voicebook.decision import parity, sureness
from voicebook.decision.confidence import Paired
from voicebook.evaluation.listening import results as lr

REPORT_NAME, DECISION_NAME = contract.DECISION.files[:2]  # the names are the contract's
CARD_LINK = "dataset/card.html"  # data prep's full card, relative to the report


@dataclass
class ExperimentResult:
    """One experiment's evidence and the matrix's verdict on it."""

    name: str
    path: Path
    scraps: dict[str, dict[str, Any]]
    candidates: list[dm.CandidateEvidence]
    decision: dm.Decision
    table: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)  # where the numbers came from
    lineage: Assessment = field(default_factory=Assessment)  # what rests on replaced runs
    export_parity: dict[str, dict] = field(default_factory=dict)  # decision.parity, per candidate


def analyse_scraps(
    name: str,
    scraps: dict[str, dict[str, Any]],
    thresholds: dm.Thresholds | None = None,
    path: str | os.PathLike = "",
    lineage: Assessment | None = None,
    export_parity: dict[str, dict] | None = None,
) -> ExperimentResult:
    """Candidates, decision, comparison table and what is missing, from a scraps dict; with
    ``lineage`` (an experiment on disk), candidates on stale evidence are marked, and the
    decision is withheld when any evidence is stale or its checkpoint is gone; with
    ``export_parity`` (``decision.parity.check_exports``), a candidate whose export does not
    speak like its evaluation is disqualified."""
    scraps = contract.checked({stem: s for stem, s in scraps.items() if stem != dm.DECISION})
    checked, lineage = lineage is not None, lineage or Assessment()
    candidates = dm.gather_candidates(scraps)
    export_parity = export_parity or {}
    for c in candidates:
        c.stale = _stale_reason(c, lineage)
        c.export_parity = parity.describe(export_parity.get(c.name))
    paired = Paired.from_evaluation(scraps.evaluation)
    decision = dm.decide(candidates, thresholds, paired)
    ckpt = decision.winner_checkpoint
    gone = checked and bool(ckpt) and not Path(ckpt).exists()
    if lineage.stale or gone:
        why = lineage.sentences()[:-1] if lineage.stale else []
        if gone:
            why.append(f"The checkpoint it would recommend, {decision.winner_checkpoint}, no "
                       "longer exists.")  # fmt: skip
        decision = dm.withhold(decision, why, lineage.rerun)
    table = dm.comparison_table(candidates, decision)
    return ExperimentResult(
        name, Path(path), scraps, candidates, decision, table, dm.missing_evidence(scraps),
        lineage=lineage, export_parity=export_parity,
    )  # fmt: skip


def stale_reasons(result: ExperimentResult) -> dict[str, str | None]:
    """Why each candidate's numbers rest on a replaced run (None: current), by candidate: every
    table of the report marks such a row."""
    return {c.name: c.stale for c in result.candidates}


def _stale_reason(c: dm.CandidateEvidence, lineage: Assessment) -> str | None:
    """Why ``c``'s numbers rest on a replaced run: its evaluation row's inputs, or for training
    numbers its stage's (None: current)."""
    if c.source == "evaluation":
        names = ("dataset", f"candidate {c.name}", f"voice {c.name}")
        return lineage.stale_input(dm.EVALUATION, *names)
    stem = next((s for s, short in dm.TRAINING_STAGES.items() if short == c.name), None)
    return "; ".join(lineage.stale.get(stem, [])) or None


def analyse_experiment(
    experiment_path: str | os.PathLike,
    thresholds: dm.Thresholds | None = None,
    export_parity: dict[str, dict] | None = None,
) -> ExperimentResult:
    """Read every stage's latest results, assess their lineage (``voicebook.core.lineage``) and
    apply the decision matrix (with ``export_parity``: ``decision.parity.check_exports``)."""
    path = Path(experiment_path)
    scraps = read_experiment(path)
    if dm.EVALUATION in scraps:  # every rating on disk counts, not those of 03's last summary
        params = run_params(path, dm.EVALUATION)
        scraps[dm.EVALUATION] = lr.with_ratings_on_disk(scraps[dm.EVALUATION], path, params)
    result = analyse_scraps(path.name, scraps, thresholds, path, assess(path), export_parity)
    result.provenance = provenance(path)
    if not (read_records(path).get(dm.EVALUATION) or {}).get("inputs"):
        result.missing += stale_evaluation(result.provenance)  # recorded before lineage
    return result


def stale_evaluation(rows: list[dict[str, Any]]) -> list[str]:
    """Sentences naming training stages that ran again after the evaluation scored them
    (for records made before runs noted their inputs: ``voicebook.core.lineage`` does it now)."""
    ran = ran_at(rows)
    evaluated = ran.get(dm.EVALUATION)
    return [
        f"{stage} ran again ({ran[stage]}) after the evaluation ({evaluated}): the evaluation's "
        f"numbers are of its earlier run; re-run {dm.EVALUATION} to score the new one."
        for stage in dm.TRAINING_STAGES
        if evaluated and ran.get(stage, "") > evaluated
    ]


def find_experiment(experiment: str, outputs_dir: str | os.PathLike | None = None) -> Path:
    """The folder of an existing experiment (unlike ``experiment_dir``, never creates it)."""
    path = outputs_root(outputs_dir) / experiment
    if not path.is_dir():
        found = sorted(p.name for p in path.parent.glob("*") if p.is_dir())
        raise FileNotFoundError(
            f"No experiment {experiment!r} at {path}: check the name in `experiments` "
            f"(experiments there: {', '.join(found) or 'none'})."
        )
    return path


def comparison_of(results: list[ExperimentResult]) -> pd.DataFrame:
    """All candidates of several experiments in one table, with an ``experiment`` column."""
    tables = [r.table.assign(experiment=r.name) for r in results]
    if not tables:
        return pd.DataFrame(columns=["experiment", *dm.COMPARISON_COLUMNS])
    table = pd.concat(tables, ignore_index=True)
    return table[["experiment", *dm.COMPARISON_COLUMNS]]


def compare_experiments(
    paths: list[str | os.PathLike], thresholds: dm.Thresholds | None = None
) -> pd.DataFrame:
    """Several experiments side by side (e.g. runs at different learning rates)."""
    return comparison_of([analyse_experiment(p, thresholds) for p in paths])


def headline(d: Any) -> str:
    """The decision in one line: what to ship, or that nothing is ready."""
    if getattr(d, "stale", None):
        return "No recommendation: the evidence is stale (see why, and what to re-run)"
    if not d.ready:
        return f"Nothing is ready to ship (least bad: {html.escape(d.winner_label)})"
    return f"Ship: {html.escape(d.winner_label)}"


def verdict_box(d: Any) -> str:
    """The verdict box's classes: green only for a ready recommendation, red for stale
    evidence, amber when nothing is ready to ship."""
    if getattr(d, "stale", None):
        return "box alarm"
    return "box" if d.ready else "box warn"


def report_path(experiment: str, outputs_dir: str | os.PathLike | None = None) -> Path:
    """Where the report of ``experiment`` is (or will be) written; for the runner to print."""
    return outputs_root(outputs_dir) / experiment / REPORT_NAME


# --- figures and tables ----------------------------------------------------------------------


def stage_curves(scraps: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, pd.DataFrame]:
    """``{phase name: curves DataFrame}`` of the training stages that recorded curves.

    A phase that continued from a checkpoint (phase 2 from phase 1's step N) counts its steps
    from 0; its curve is shifted by N so that it continues its parent's on the shared axis
    (curves already recorded in the parent's step count are left as they are)."""
    out = {}
    for stage, s in dm.training_stages(scraps).items():
        curves = s.curves
        if not isinstance(curves, pd.DataFrame) or curves.empty:
            continue
        parent = re.search(r"(?:best_model|checkpoint)_(\d+)\.pth$", s.parent_checkpoint or "")
        if parent and curves["step"].min() < int(parent.group(1)):  # counted from 0
            curves = curves.assign(step=curves["step"] + int(parent.group(1)))
            stage = f"{stage} (from step {parent.group(1)})"
        out[f"{prefix}{stage}"] = curves
    return out


def phases_figure(curves: dict[str, pd.DataFrame], thresholds: dm.Thresholds | None = None) -> Any:
    """Mel CE and Text CE by step, every phase on shared axes, one colour per phase (eval solid,
    train dotted), steps plotted as recorded, the decision thresholds as grey dashes; None when
    there are no curves."""
    if not curves:
        return None
    t = thresholds or dm.Thresholds()
    lines = [
        Curve(f"{name} {split}", part["step"], part[metric], panel, colour=name, **style)
        for name, df in curves.items()
        for split, style in (("eval", EVAL_LINE), ("train", TRAIN_LINE))
        for part in [df[df["split"] == split].sort_values("step")]
        for panel, metric in enumerate(("loss_mel_ce", "loss_text_ce"))
        if not part.empty and metric in part and not part[metric].isna().all()
    ]
    rules = {0: (t.mel_ce_excellent, t.mel_ce_improved, t.mel_ce_marginal),
             1: (t.text_ce_max, t.text_ce_alarm)}  # fmt: skip
    title = "Training curves (grey dashes: decision thresholds)"
    return curves_figure(lines, ("Mel CE", "Text CE"), x_title="step", title=title,
                         stacked=True, rules=rules, height=650)  # fmt: skip


EVAL_LINE = {"mode": "lines+markers"}
TRAIN_LINE = {"mode": "lines", "dash": "dot", "width": 1, "opacity": 0.6}


def health_table(scraps: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every health event of every training stage, with a ``stage`` column."""
    rows = [
        {"stage": stage, **event}
        for stage, s in dm.training_stages(scraps).items()
        for event in s.health or []
    ]
    return pd.DataFrame(rows, columns=["stage", "step", "kind", "severity", "message"])


# One table writer for the whole page (voicebook.core.html): tables fit the page at 1280 px.
_table_html = page_html.table


# --- the dataset: what a person decides with (the card's one renderer) -----------------------


def _dataset_html(result: ExperimentResult) -> list[str]:
    """The dataset card's summary (``dataprep.card.summary_parts``, the same as ``card.html``'s
    top) with a link to the full card beside the report."""
    card = result.scraps.data_prep.dataset_card
    if not card:
        return ["<h2>Dataset</h2>", "<p>No dataset card: run 00_data_prep.</p>"]
    if "totals" not in card:
        older = "<p>The dataset card is of an older data prep: run 00_data_prep again.</p>"
        return ["<h2>Dataset</h2>", older]
    link = CARD_LINK if (result.path / CARD_LINK).is_file() else ""
    return ["<h2>Dataset</h2>", *card_summary_parts(card, level=3, link=link)]


# --- the page --------------------------------------------------------------------------------


def _figures_html(figures: list[go.Figure | None]) -> list[str]:
    """Figures as HTML divs (the page carries plotly's JavaScript once)."""
    return [
        page_html.figure(fig)
        if fig is not None
        else "<p>No training curves yet: run 01_phase1 / 02_phase2.</p>"
        for fig in figures
    ]


def _parity_html(result: ExperimentResult) -> list[str]:
    """Each exported candidate's export parity (``decision.parity``): "identical", or an alarm
    with the largest difference."""
    rows = [(c, c.export_parity) for c in result.candidates if c.export_parity]
    if not rows:
        return []
    esc = html.escape
    lines = "".join(
        f"<li{'' if p == parity.IDENTICAL else ' class=alarm'}>{esc(c.title)}: export parity: "
        f"{esc(p)}</li>"
        for c, p in rows
    )
    alarm = any(p != parity.IDENTICAL for _, p in rows)
    how = (
        f"<p>Each export, copied elsewhere and loaded as a user loads it (coqui's Xtts with "
        f"strict=True, and TTS.api), spoke the first {parity.PARITY_SENTENCES} test sentences "
        "with the evaluation's seed and sampling settings; its audio is compared with the "
        f"evaluation's, sample by sample (tolerance {parity.TOLERANCE:g}).</p>"
    )
    box = f'<div class="box{" alarm" if alarm else ""}"><ul>{lines}</ul></div>'
    return ["<h2>Export parity</h2>", how, box]


def render_report(result: ExperimentResult, others: list[ExperimentResult] | None = None) -> str:
    """The whole report page as one self-contained HTML string."""
    d, others = result.decision, others or []
    esc = html.escape
    items = "".join(f"<li>{esc(r)}</li>" for r in d.reasons)
    tier = esc(d.tier or "unknown")
    figures = [phases_figure(stage_curves(result.scraps), d.thresholds)]
    if others:
        every = {}
        for r in [result, *others]:
            every.update(stage_curves(r.scraps, prefix=f"{r.name}/"))
        figures.append(phases_figure(every, d.thresholds))
    figure_html = _figures_html(figures)
    health = health_table(result.scraps)
    missing = "".join(f"<li>{esc(m)}</li>" for m in result.missing) or "<li>Nothing.</li>"
    sections = [
        f"<h1>Decision report — {esc(result.name)}</h1>",
        f"<p>Generated {datetime.now().isoformat(timespec='seconds')}.</p>",
        f'<div class="{verdict_box(d)}"><h2>{headline(d)}</h2>',
        f"<p>Tier: <b>{tier}</b></p>",
        f"<ol>{items}</ol></div>",
        "<h2>Comparison of candidates</h2>",
        f"<p>{esc(split_label(result))}</p>",
        _table_html(result.table),
        "<p>gain_vs_previous = (previous Mel CE − this) / previous; "
        + "listening = overall mean (listening_n ratings).</p>",
        *sureness.section(result.scraps.evaluation, result.decision),
        *_parity_html(result),
        *_selection_html(result),
        *_versus_html(result),
        *_finetune_html(result),
        *_depth_html(result),
        *_listening_html(result),
        "<h2>Where the numbers come from</h2>",
        _provenance_html(result.provenance),
        "<h2>Training curves</h2>",
        figure_html[0],
        *_eval_cost_html(result),
    ]
    if others:
        sections += [
            "<h2>Experiments side by side</h2>",
            _table_html(comparison_of([result, *others])),
            "<h3>Training curves of every experiment</h3>",
            figure_html[1],
        ]
    sections += [
        *_dataset_html(result),
        "<h2>Health events</h2>",
        _table_html(health) if not health.empty else "<p>No health events recorded.</p>",
        f'<h2>What is missing</h2><div class="box warn"><ul>{missing}</ul></div>',
        "<h2>Thresholds used</h2>",
        _table_html(pd.DataFrame([d.to_dict()["thresholds"]])),
    ]
    return page_html.page(f"voicebook report — {result.name}", sections)


def split_label(result: ExperimentResult) -> str:
    """Which split the compared numbers are on, in words (the table's ``split`` column)."""
    splits = {c.split for c in result.candidates if c.split}
    if splits == {"test"}:
        return ("Every number below is on the test split: held-out clips that no phase and no "
                "voice search selected on.")  # fmt: skip
    if "validation" in splits:
        return ("Numbers marked split=validation are on the validation split, the clips the "
                "phases selected their best checkpoint on: they flatter the fine-tuned "
                "candidates (rebuild the dataset with 00_data_prep for a test split).")  # fmt: skip
    return "No held-out numbers yet."


def _versus_html(result: ExperimentResult) -> list[str]:
    """Training-free voice search against fine-tuning, when a search ran: every current voice
    beside the fine-tuned candidates, with what each cost."""
    from voicebook.voice_search import search as voice_search

    searched = voice_search.current_voices(result.path) if result.path.is_dir() else []
    if not searched and not result.scraps.voice_search.voice_search:
        return []
    table = result.scraps.evaluation.eval_table
    minutes = voice_search.stage_minutes(result.path) if result.path.is_dir() else {}
    versus = voice_search.versus_finetuning(table, searched, minutes, stale_reasons(result))
    if versus.empty:
        return ["<h2>Voice search against fine-tuning</h2>", "<p>Not evaluated yet: run 03.</p>"]
    return [
        "<h2>Voice search against fine-tuning</h2>",
        _table_html(versus),
        (
            "<p>Every searched voice (voice) beside the fine-tuned candidates. The searches "
            "selected each voice on the validation split; every number here is the evaluation's "
            "(split). voice_mel_ce = Mel CE given the one voice each candidate speaks with (what "
            "a search's latent half lowers); speaker_similarity = of its synthesised sentences "
            "(what the speaker half raises); minutes = what making the candidate cost (phase 2 "
            "includes phase 1; a searched voice adds its search).</p>"
        ),
    ]


def _selection_html(result: ExperimentResult) -> list[str]:
    """Each phase's kept best models with their figures on the validation split, its pick and
    why (``voicebook.training.select``)."""
    parts = []
    for stage, s in dm.training_stages(result.scraps).items():
        chosen = s.selection or {}
        kept = pd.DataFrame(chosen.get("kept") or [])
        if kept.empty:
            continue
        shown = kept.drop(columns=["checkpoint"], errors="ignore")
        how = chosen.get("select_by", "loss")
        cost = f"; the selection pass took {chosen['seconds']} s" if "seconds" in chosen else ""
        title = f"{stage.replace('phase', 'phase ')}: {len(kept)} kept, picked by {how}"
        why = chosen.get("why", "the lowest validation Mel CE")
        parts += [
            f"<h3>{html.escape(title)}</h3>",
            _table_html(shown),
            f"<p>{html.escape(why.rstrip('.'))}{cost}.</p>",
        ]
    if not parts:
        return []
    intro = (
        "<p>Each phase kept its best models by validation Mel CE and picked one on the "
        "validation split (never the test split); the evaluation scored the pick.</p>"
    )
    return ["<h2>Kept checkpoints and each phase's pick</h2>", intro, *parts]


def _finetune_html(result: ExperimentResult) -> list[str]:
    """LoRA against full fine-tuning: each phase-made candidate's scores beside its costs."""
    from voicebook.decision.finetune_compare import finetune_table

    table = finetune_table(result.scraps.evaluation.eval_table, stale_reasons(result))
    if table.empty:
        return []
    left_out = [c.title for c in result.candidates if c.name not in set(table["candidate"])]
    return [
        "<h2>Fine-tuning: LoRA against full</h2>",
        _table_html(table),
        (
            f"<p>Not in this table (no phase recorded what they cost): "
            f"{html.escape(', '.join(left_out))}.</p>"
            if left_out
            else ""
        ),
        (
            "<p>finetune = full (every GPT weight trains) or lora r&lt;rank&gt; (adapters, the "
            "base frozen); minutes = training time of that candidate's phase alone (resumed "
            "attempts added up); peak_memory_mb = the phase's peak (memory says what was "
            "measured); disk_mb = its run folder; checkpoint_mb = one periodic checkpoint (what "
            "resuming needs); forgetting_text_ce and forgetting_cer = Text CE and CER on the "
            "general test sentences (not the speaker's) minus the base's: above 0, the candidate "
            "reads general text worse than the model it started from.</p>"
        ),
    ]


def _eval_cost_html(result: ExperimentResult) -> list[str]:
    """Each phase's ``eval_every`` beside what its evaluations cost, as a share of its time."""
    from voicebook.decision.finetune_compare import phase_status
    from voicebook.training.result import recorded_param

    lines = []
    for stage in contract.TRAINING:
        best = result.scraps.phase(stage.stem).best_checkpoint
        status = phase_status(best) if best else None
        if not status or not status.get("train_seconds") or "eval_seconds" not in status:
            continue
        every = recorded_param(status, "eval_every")
        share = status["eval_seconds"] / status["train_seconds"]
        lines.append(
            f"<p>{html.escape(stage.short)}: eval_every {every} steps: {status.get('evals', 0)} "
            f"evaluations took {status['eval_seconds']:.0f} s, {share:.0%} of the phase's "
            f"{status['train_seconds']:.0f} s.</p>"
        )
    return lines


_DEPTH_NOTE = (
    "<p>Per source: each held-out clip's loss, one clip per batch, averaged per source, so "
    "<code>mel_ce[all]</code> is the clip-weighted mean of the sources (the comparison's "
    "<code>mel_ce</code> is the trainer's mean over batches of several clips, so the two differ "
    "a little). Cap hits: test sentences "
    "whose generation ran into the cap of audio tokens per character instead of stopping (a "
    "short sentence is always among them). DVAE: each held-out clip's mel encoded to codes and "
    "decoded again (normalised log-mel units; the base's tokenizer, the same for every "
    "candidate), beside its codebook use.</p>"
)


def _depth_html(result: ExperimentResult) -> list[str]:
    """The evaluation's depth checks: per source, cap hits, temperature sweep, the DVAE."""
    from voicebook.evaluation import depth as eval_depth

    evaluation = result.scraps.evaluation
    if not evaluation:
        return []
    tables = eval_depth.depth_tables(evaluation)
    if not tables:
        return ["<h2>Evaluation depth</h2>", "<p>Not measured: re-run 03_evaluation.</p>"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in eval_depth.depth_notes(evaluation))
    parts = ["<h2>Evaluation depth</h2>", _DEPTH_NOTE, f"<ul>{notes}</ul>" if notes else ""]
    for title, table in tables.items():
        parts += [f"<h3>{html.escape(title)}</h3>", _table_html(table)]
    return parts


_LISTENING_NOTE = (
    "<p>From the blind listening test of 03_evaluation (1–10 scores and A/B preferences). A rater "
    "who scored the hidden real recording below a synthesis of the same sentence loses that "
    "sentence's ratings; past {share:.0%} of their sentences (and more than one) all of them "
    "(MUSHRA's post-screening). A changed rating counts with its latest value.</p>"
)


def _candidate_names(result: ExperimentResult) -> list[str]:
    return [c.name for c in result.candidates]


def _listening_html(result: ExperimentResult) -> list[str]:
    """What listeners said: scores with n, A/B per pair, the reference check, what was left out."""
    evaluation = result.scraps.evaluation
    if not evaluation:
        return []
    parts = ["<h2>What listeners said</h2>", _LISTENING_NOTE.format(share=lr.MAX_SLIP_SHARE)]
    for title, table in lr.report_tables(evaluation, _candidate_names(result)).items():
        body = _table_html(table) if not table.empty else "<p>None.</p>"
        parts += [f"<h3>{html.escape(title)}</h3>", body]
    return parts


def _provenance_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No stage has recorded results in <code>results/</code> yet.</p>"
    note = (
        "<p>Each stage's latest run, however it was run; earlier runs' records are kept in "
        "<code>results/history/</code>.</p>"
    )
    return note + _table_html(pd.DataFrame(rows))


def decision_record(result: ExperimentResult) -> dict[str, Any]:
    """What ``decision.json`` holds: the recommendation, the table, what is missing."""
    return {
        "experiment": result.name,
        "generated_at": datetime.now().isoformat(timespec="seconds"),
        **result.decision.to_dict(),
        "candidates": json.loads(result.table.to_json(orient="records")),
        "export_parity": result.export_parity,
        "missing": result.missing,
        "provenance": result.provenance,
        "lineage": result.lineage.to_dict(),
        "listening": lr.listening_facts(result.scraps.evaluation, _candidate_names(result)),
        **sureness.record(result.scraps.evaluation),
    }


def write_report(
    experiment_path: str | os.PathLike,
    result: ExperimentResult,
    others: list[ExperimentResult] | None = None,
) -> Path:
    """Write ``report.html`` and ``decision.json``; the previous ones move to ``history/``
    (``report.<time>.html``, ``decision.<time>.json``)."""
    folder = Path(experiment_path)
    folder.mkdir(parents=True, exist_ok=True)
    page = render_report(result, others)
    record = json.dumps(decision_record(result), indent=2)
    report, decision_json = folder / REPORT_NAME, folder / DECISION_NAME
    for path, text in ((report, page), (decision_json, record)):
        to_history(path)
        write_text_atomic(path, text)
    return report
