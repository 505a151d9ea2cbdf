"""The phase's pick among its kept best models, on what people hear, on the validation split.

A phase keeps its ``keep_best`` best models by validation Mel CE (``coqui.trainer``). Loss does
not say which one sounds best, so with ``select_by="evidence"`` each kept model speaks the
validation clips' transcripts (``select_takes`` takes each, the same seeds and one voice for
all: the first validation clips) and the evaluation's measures score the takes
(``voicebook.measures``: CER, speaker similarity to the validation clips, Distill-MOS, tempo
and the failure flags). The walk starts from the lowest Mel CE; another kept model replaces the
one held only when the paired bootstrap calls it better on at least one measure and worse on
none (``voicebook.measures.paired``), the decision's rule. ``select_by="loss"`` (or no speech
recogniser) picks the lowest Mel CE, as before. Nothing here reads the test split.

The pick is the phase's "best" from then on (``checkpoints.resolve_checkpoint``): phase 2's
``resume_from``, the export and the evaluation take it; ``status.json``'s ``selection`` holds
every kept model's figures and why the pick was made.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core.paths import EVAL_META
from voicebook.training.files import write_json
from voicebook.training.result import PhaseResult

SELECT_DIR = "selection"  # <stage>/selection/<step>/: the takes of each kept model
REFERENCES = 2  # the first validation clips: the one voice every kept model speaks in
MEASURES = ("cer", "speaker_similarity", "mos", "rate_error", "failure")


def kept_table(status: dict[str, Any]) -> pd.DataFrame:
    """The kept best models, best Mel CE first: step, mel_ce, text_ce, checkpoint."""
    kept = [k for k in status.get("kept", []) if Path(k["checkpoint"]).is_file()]
    return pd.DataFrame(kept, columns=["step", "mel_ce", "text_ce", "checkpoint"])


def select_checkpoint(result: PhaseResult, transcribe: Any = None) -> PhaseResult:
    """Pick among the phase's kept models (see the module doc), record it in ``status.json``
    and return the result with it. ``transcribe``: a recogniser (default: ``select_asr_model``)."""
    start = time.perf_counter()
    params, status = result.params, dict(result.status)
    kept = kept_table(status)
    how = params.get("select_by", "loss")
    if kept.empty or _already_made(status, kept, params):
        return result
    if how == "evidence" and len(kept) > 1:
        transcribe = transcribe or _recogniser(params)
    if how == "evidence" and len(kept) > 1 and transcribe is not None:
        figures, comparisons, pick, why = _by_evidence(result, kept, transcribe)
    else:
        figures, comparisons, pick = kept.assign(name=_names(kept)), [], kept.iloc[0]
        why = _loss_reason(kept, how, transcribe is None and how == "evidence")
    status["pick"] = {
        "select_by": how if comparisons or how == "loss" else "loss",
        "picked_step": int(pick["step"]),
        "picked_checkpoint": str(pick["checkpoint"]),
        "why": why,
        "kept": figures.drop(columns=["name"]).to_dict(orient="records"),
        "comparisons": comparisons,
        "select_takes": int(params.get("select_takes", 1)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    status["picked_checkpoint"] = str(pick["checkpoint"])
    write_json(result.phase_dir / "status.json", status)
    return dataclasses.replace(result, status=status)


def _already_made(status: dict[str, Any], kept: pd.DataFrame, params: dict[str, Any]) -> bool:
    """Whether ``status`` holds a pick among these same kept models, made the same way."""
    made = status.get("pick") or {}
    same = [k["step"] for k in made.get("kept", [])] == kept["step"].tolist()
    how = made.get("select_by") == params.get("select_by") or len(kept) == 1
    takes = made.get("select_takes") == int(params.get("select_takes", 1))
    return bool(made) and same and how and takes and Path(made["picked_checkpoint"]).is_file()


def _names(kept: pd.DataFrame) -> list[str]:
    return [f"step {s}" for s in kept["step"]]


def _loss_reason(kept: pd.DataFrame, how: str, no_asr: bool) -> str:
    best = kept.iloc[0]
    reason = f"step {best['step']}: the lowest validation Mel CE ({best['mel_ce']:.4f})"
    if len(kept) == 1:
        return f"{reason}; the only kept model."
    if no_asr:
        return f"{reason}; select_by='evidence' needs a speech recogniser (select_asr_model)."
    return f"{reason} (select_by={how!r})."


def _recogniser(params: dict[str, Any]) -> Any:
    from voicebook.asr import load_recognizer

    model = params.get("select_asr_model", "base")
    return (
        load_recognizer(model, params["language"], params.get("device", "auto")) if model else None
    )


def _validation(result: PhaseResult) -> tuple[list[Path], list[str]]:
    """The validation split's clips and transcripts (never the test split)."""
    dataset = Path(result.params.get("dataset_dir") or result.phase_dir.parent / "dataset")
    meta = pd.read_csv(dataset / EVAL_META, sep="|")
    return [dataset / f for f in meta["audio_file"]], meta["text"].astype(str).tolist()


def _by_evidence(result: PhaseResult, kept: pd.DataFrame, transcribe: Any):
    """Takes of every kept model, scored and compared pairwise; the walk's pick and why."""
    from voicebook.measures import paired

    takes = _scored_takes(result, kept, transcribe)
    names = _names(kept)
    per_model = takes.groupby("candidate", sort=False)[list(MEASURES)].mean()
    figures = kept.assign(name=names).join(per_model.astype(float), on="name")
    held, found, steps = names[0], [], dict(zip(names, kept.index, strict=True))
    why = f"{held} has the lowest validation Mel CE ({kept.iloc[0]['mel_ce']:.4f})"
    for name in names[1:]:
        versus = paired.comparisons(takes, None, [name], [held], take_metrics=MEASURES)
        found += [c.to_dict() for c in versus]
        said = paired.summary(versus, name, held)
        if paired.beats(versus):  # the decision's rule
            why = (f"{name} beats {held}: better on {', '.join(said['better'])}, worse on "
                   f"none (paired bootstrap over the validation sentences)")  # fmt: skip
            held = name
        else:
            why += f"; {name} is not better on what people hear ({_verdicts(said)})"
    return figures, found, kept.loc[steps[held]], why + "."


def _verdicts(said: dict[str, list[str]]) -> str:
    parts = [f"{v} on {', '.join(m)}" for v, m in said.items() if m]
    return "; ".join(parts) or "nothing measured"


def _scored_takes(result: PhaseResult, kept: pd.DataFrame, transcribe: Any) -> pd.DataFrame:
    """Every kept model's takes of the validation transcripts, scored by the evaluation's
    measures (``voicebook.measures.scoring.TakeScorer``)."""
    from voicebook.coqui.base import resolve_base
    from voicebook.coqui.latents import reference_voice
    from voicebook.coqui.models import XttsLoader
    from voicebook.core.device import resolve_device
    from voicebook.measures import takes as mt
    from voicebook.measures.quality import DistillMos
    from voicebook.measures.scoring import TakeScorer, speaker_rate
    from voicebook.speaker import SpeakerSimilarity

    p = result.params
    clips, texts = _validation(result)
    device, base = resolve_device(p.get("device", "auto")), resolve_base(p["base_model"])
    scorer = TakeScorer(SpeakerSimilarity(clips, device=device), transcribe,
                        DistillMos(device), speaker_rate(zip(clips, texts)))  # fmt: skip
    sentences, found = mt.sentence_table(texts), []
    references, models = clips[:REFERENCES], XttsLoader(base, device)  # one Xtts, reloaded
    for name, row in zip(_names(kept), kept.itertuples(), strict=True):
        model = models.load(row.checkpoint)
        out = result.phase_dir / SELECT_DIR / str(row.step)
        spoken = mt.synthesize_takes(
            model, sentences, reference_voice(model, references), out,
            takes=int(p.get("select_takes", 1)), seed=int(p.get("seed", 1)),
            language=p["language"],
        )  # fmt: skip
        found.append(scorer.score(spoken).assign(candidate=name))
    return pd.concat(found, ignore_index=True)
