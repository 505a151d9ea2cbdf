"""Evaluation depth: the checks that the evaluation's averages hide.

- **per source**: each candidate's Mel CE and Text CE on the held-out clips of each source
  (quiz show, interview...), so that forgetting one speaking style shows; clip-weighted, so the
  clip-weighted mean over sources is the ``all`` row exactly;
- **the tokenizer's reconstruction**: the DVAE encodes each held-out clip's mel to codes and
  decodes it; mel MSE, MAE and peak error per source (the DVAE is the base's, frozen in
  fine-tuning: one set of numbers for every candidate);
- **cap hits**: how many test sentences ran into the token cap (``voicebook.measures.takes.token_cap``)
  without the GPT stopping by itself; a short sentence is always among them (runaway
  generation on short text is a known XTTS failure);
- **reference clips**: which ones the voice was taken from (``voicebook.voices.references``
  chooses them);
- **temperature sweep**: the test sentences at each temperature, per candidate.

The model work is in ``voicebook.coqui.probes``; this module chooses, aggregates and words.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voicebook.core.stages import EvaluationScraps
from voicebook.core.values import as_structure
from voicebook.evaluation import codebook
from voicebook.evaluation import measures as ev
from voicebook.measures.text import character_error_rate
from voicebook.speaker import SpeakerSimilarity
from voicebook.voices.references import AUTO, FIRST

ALL = codebook.ALL  # the row of every clip together
LOSSES = ("mel_ce", "text_ce")
SWEEP_SETTING = "temperature_sweep"  # eval_settings' key: the temperatures swept
SWEEP_COLUMNS = ["candidate", "temperature", "n_sentences", "cap_hits", "speaker_similarity",
                 "rtf", "cer"]  # fmt: skip


def column(metric: str, source: str) -> str:
    """The eval table's column of one metric on one source, e.g. ``mel_ce[quiz]``."""
    return f"{metric}[{source}]"


def sweep_temperatures(config: Any) -> list[float]:
    """``config.temperature_sweep`` as numbers (a list, or its text from papermill -p)."""
    spec = as_structure(config.temperature_sweep)
    return [float(t) for t in ([spec] if isinstance(spec, (int, float)) else spec or [])]


# --- per source ----------------------------------------------------------------------------


def sources_of(dataset_dir: Path) -> dict[str, str]:
    """``{audio_file as the dataset lists it: source}`` of every clip."""
    clips = codebook.dataset_clips(dataset_dir)
    return dict(zip(clips["audio_file"].astype(str), clips["source"].astype(str)))


def _relative(path: str, dataset_dir: Path) -> str:
    return os.path.relpath(path, dataset_dir)


def by_source(per_clip: pd.DataFrame, metrics: tuple[str, ...] = LOSSES) -> pd.DataFrame:
    """Per source (then ``all``): ``n_clips`` and the clip mean of each metric. Every clip counts
    once, so ``sum(n_clips * mean) / sum(n_clips)`` over the sources is the ``all`` row."""
    grouped = per_clip.groupby("source", sort=True)[list(metrics)]
    table = grouped.mean().assign(n_clips=grouped.size()).reset_index()
    every = {"source": ALL, "n_clips": len(per_clip), **per_clip[list(metrics)].mean().to_dict()}
    table = pd.concat([table, pd.DataFrame([every])], ignore_index=True)
    return table[["source", "n_clips", *metrics]]


def clip_table(
    base_dir: Path,
    dataset_dir: Path,
    checkpoint: Path | None,
    work_dir: Path,
    config: Any,
    device: Any = "cpu",
    *,
    losses: Any = None,
) -> pd.DataFrame:
    """One candidate's per-clip Mel CE and Text CE (``probes.clip_losses``) with each clip's
    source (``audio_file`` relative to the dataset): what the per-source table and the
    bootstrap over clips are made of. ``losses``: the checkpoint's ``CheckpointLosses`` when
    the caller already built it (the evaluation shares one per checkpoint)."""
    from voicebook.coqui.losses import CheckpointLosses
    from voicebook.coqui.probes import clip_losses

    losses = losses or CheckpointLosses(
        base_dir, checkpoint, work_dir, language=config.language, seed=config.seed, device=device
    )
    max_clips = config.max_eval_batches * config.eval_batch_size  # the clips eval_losses sees
    rows = clip_losses(losses, dataset_dir, max_clips=max_clips)
    per_clip = pd.DataFrame(rows, columns=["audio_file", *LOSSES])
    per_clip["audio_file"] = [_relative(f, dataset_dir) for f in per_clip.audio_file]
    source = sources_of(dataset_dir)
    per_clip["source"] = [source.get(f, ALL) for f in per_clip.audio_file]
    return per_clip


def source_columns(per_source: pd.DataFrame) -> dict[str, float]:
    """The eval-table columns of one candidate: ``mel_ce[<source>]``, ``text_ce[<source>]``."""
    rows = per_source[per_source["source"] != ALL]
    return {
        column(metric, r["source"]): float(r[metric])
        for metric in LOSSES
        for r in rows.to_dict("records")
    }


def forgetting_notes(per_source: pd.DataFrame, base: str = ev.BASE) -> list[str]:
    """Sentences naming candidates whose overall Mel CE fell below the base's while one source's
    rose above it: a speaking style forgotten that the mean hides."""
    if per_source is None or per_source.empty or base not in set(per_source["candidate"]):
        return []
    mel = per_source.pivot_table(index="candidate", columns="source", values="mel_ce")
    notes = []
    for candidate in mel.index.drop(base):
        if not mel.loc[candidate, ALL] < mel.loc[base, ALL]:
            continue
        for source in mel.columns.drop(ALL):
            mine, theirs = mel.loc[candidate, source], mel.loc[base, source]
            if mine > theirs:
                notes.append(
                    f"{candidate}: Mel CE fell overall ({mel.loc[base, ALL]:.3g} → "
                    f"{mel.loc[candidate, ALL]:.3g}) but rose on {source} ({theirs:.3g} → "
                    f"{mine:.3g}): it may be forgetting that source's speaking style."
                )
    return notes


# --- the DVAE's reconstruction -------------------------------------------------------------


def reconstruction_by_source(per_clip: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{source: {clips, mse, mae, peak}}`` (then ``all``) from per-clip error sums: means over
    every mel value compared, so ``all`` weighs each source by its frames."""

    def stats(rows: pd.DataFrame) -> dict[str, float]:
        n = rows["elements"].sum()
        return {
            "clips": len(rows),
            "mse": float(rows["sq_error"].sum() / n),
            "mae": float(rows["abs_error"].sum() / n),
            "peak": float(rows["peak"].max()),
        }

    out = {str(s): stats(rows) for s, rows in per_clip.groupby("source", sort=True)}
    return out | {ALL: stats(per_clip)}


def dvae_reconstruction(
    base_dir: Path, dataset_dir: Path, device: Any = "cpu"
) -> dict[str, dict[str, float]]:
    """The base DVAE's reconstruction of the held-out clips, per source."""
    from voicebook.coqui.probes import dvae_clip_errors

    clips = codebook.dataset_clips(dataset_dir)
    clips = clips[clips["split"] == "eval"]
    if clips.empty:
        return {}
    per_clip = pd.DataFrame(
        dvae_clip_errors(base_dir, [dataset_dir / f for f in clips.audio_file], device)
    )
    return reconstruction_by_source(per_clip.assign(source=clips["source"].tolist()))


def reconstruction_table(
    recon: dict[str, dict[str, float]], usage: dict[str, dict[str, float]] | None = None
) -> pd.DataFrame:
    """One row per source: the DVAE's reconstruction beside its codebook use (when given)."""
    table = pd.DataFrame.from_dict(recon, orient="index").rename_axis("source")
    table = table.rename(columns=lambda c: f"recon_{c}" if c != "clips" else "eval_clips")
    if usage:
        use = pd.DataFrame.from_dict(usage, orient="index")[["codes_used", "perplexity"]]
        table = table.join(use, how="outer")
    order = [*sorted(set(table.index) - {ALL}), *([ALL] if ALL in table.index else [])]
    return table.loc[order].reset_index()


# --- cap hits and the temperature sweep ----------------------------------------------------


def cap_hits(samples: pd.DataFrame, short_sentence: str | None = None) -> dict[str, Any]:
    """``cap_hits`` (test sentences whose generation ran into the cap) and ``short_cap_hit``
    (whether the short sentence did; None when it is not among them)."""
    hit = samples["codes"] >= samples["cap"]
    short = samples["text"] == short_sentence
    return {
        "cap_hits": int(hit.sum()),
        "short_cap_hit": bool(hit[short].any()) if short.any() else None,
    }


def temperature_sweep(
    model: Any,
    candidate: str,
    config: Any,
    voice: tuple[Any, Any],
    out_dir: Path,
    scorer: SpeakerSimilarity,
    transcribe: Callable[[Path], str] | None = None,
) -> pd.DataFrame:
    """The test sentences at each temperature of ``config.temperature_sweep`` (other settings as
    configured): one row per temperature with similarity, cap hits, RTF and CER."""
    rows = []
    for temperature in sweep_temperatures(config):
        samples = ev.synthesize(
            model, config.sentences(), [], out_dir / f"temperature_{temperature:g}",
            language=config.language, seed=config.seed, voice=voice,
            tokens_per_char=config.audio_tokens_per_char,
            sampling=config.sampling() | {"temperature": temperature},
        )  # fmt: skip
        cer = math.nan
        if transcribe is not None:
            cer = float(np.mean([character_error_rate(t, transcribe(Path(w)))
                                 for t, w in zip(samples.text, samples.wav)]))  # fmt: skip
        rows.append({
            "candidate": candidate, "temperature": temperature,
            "n_sentences": len(samples), "cap_hits": cap_hits(samples)["cap_hits"],
            "speaker_similarity": float(scorer.score(samples["wav"]).mean()),
            "rtf": ev.real_time_factor(samples), "cer": cer,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def gathered(depth: dict[str, Any], candidates: list[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stage's per-source table (one row per candidate and source) and temperature sweep,
    from what ``evaluation.evaluate`` collected per checkpoint and per candidate."""
    per_source = [
        depth["per_source"][key].assign(candidate=c.name)
        for c in candidates
        if (key := str(c.checkpoint or "")) in depth["per_source"]
    ]
    columns = ["candidate", "source", "n_clips", *LOSSES]
    per_source = pd.concat(per_source, ignore_index=True)[columns] if per_source else None
    sweeps = [s for s in depth["sweep"] if not s.empty]
    return (
        pd.DataFrame(columns=columns) if per_source is None else per_source,
        pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame(columns=SWEEP_COLUMNS),
    )


def settings(config: Any, references: list[Path], dataset_dir: Path | None) -> dict[str, Any]:
    """What the synthesis ran with (the ``eval_settings`` scrap)."""
    spec = as_structure(config.reference_clips)
    shown = [_relative(str(p), dataset_dir) if dataset_dir else str(p) for p in references]
    return {
        **config.sampling(),
        SWEEP_SETTING: sweep_temperatures(config),
        "reference_mode": spec if spec in (FIRST, AUTO) else "files",
        "reference_clips": shown,
        "audio_tokens_per_char": config.audio_tokens_per_char,
        "short_test_sentence": next((s for s in config.sentences() if ev.is_short(s)), None),
        "seed": config.seed,
    }


# --- what the report and the decision notebook show ---------------------------------------


def per_source_wide(per_source: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: ``mel_ce[all]``, ``mel_ce[<source>]``..., then the same for
    Text CE."""
    if per_source is None or per_source.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(per_source["candidate"]))
    sources = [ALL, *sorted(set(per_source["source"]) - {ALL})]
    wide = per_source.pivot_table(index="candidate", columns="source", values=list(LOSSES))
    columns = {(m, s): column(m, s) for m in LOSSES for s in sources}
    wide = wide[list(columns)].set_axis(list(columns.values()), axis=1).loc[order]
    return wide.rename_axis(None).rename_axis("candidate").reset_index()


def settings_sentence(settings: dict[str, Any]) -> str:
    """What the synthesis ran with, in one sentence."""
    clips = settings.get("reference_clips") or []
    sweep = settings.get(SWEEP_SETTING) or []
    return (
        f"Test sentences sampled at temperature {settings.get('temperature')} "
        f"(repetition_penalty {settings.get('repetition_penalty')}, top_p "
        f"{settings.get('top_p')}, top_k {settings.get('top_k')}, length_penalty "
        f"{settings.get('length_penalty')}), {settings.get('takes', 1)} take(s) each; the voice "
        f"from {len(clips)} train clip(s) ({settings.get('reference_mode')}): {', '.join(clips)}; "
        "generation "
        f"capped at {settings.get('audio_tokens_per_char')} audio tokens per character; short "
        f"sentence: {settings.get('short_test_sentence')!r}"
        + (f"; temperature sweep: {', '.join(f'{t:g}' for t in sweep)}." if sweep else ".")
    )


def depth_tables(evaluation: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """``{title: table}`` of the evaluation stage's depth checks that it recorded (an older
    run recorded none of them)."""
    evaluation, tables = EvaluationScraps.of(evaluation), {}
    wide = per_source_wide(evaluation.eval_per_source)
    if not wide.empty:
        tables["Mel CE and Text CE per source"] = wide
    table = evaluation.eval_table
    if table is not None and "cap_hits" in table:
        caps = ["candidate", "n_sentences", "cap_hits", "short_cap_hit"]
        tables["Generation that ran into the token cap"] = table[caps]
    sweep = evaluation.temperature_sweep
    if sweep is not None and not sweep.empty:
        tables["Temperature sweep"] = sweep
    recon = evaluation.dvae_reconstruction
    if recon:
        usage = evaluation.codebook or None
        tables["The DVAE tokenizer per source"] = reconstruction_table(recon, usage)
    return tables


def depth_notes(evaluation: dict[str, Any]) -> list[str]:
    """The settings sentence and any source a candidate seems to forget."""
    evaluation = EvaluationScraps.of(evaluation)
    settings = evaluation.eval_settings
    notes = [settings_sentence(settings)] if settings else []
    return notes + forgetting_notes(evaluation.eval_per_source)
