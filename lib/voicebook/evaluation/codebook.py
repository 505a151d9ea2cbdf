"""Tokenizer diagnostics: how much of the DVAE's 1024-code book a dataset's audio uses.

Each clip is turned into DVAE codes exactly as GPTTrainer does for training (DVAE mel from
``mel_stats.pth``, ``dvae.get_codebook_indices``); per source we report codes used of 1024,
the entropy of code usage (bits) and its perplexity (2**entropy: the number of equally likely
codes that would give the same entropy).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import entropy
from tqdm.auto import tqdm

from voicebook.coqui.limits import N_CODES
from voicebook.core.paths import EVAL_META, TRAIN_META

ALL = "all"


def usage_stats(codes: np.ndarray, n_codes: int = N_CODES) -> dict[str, float]:
    """Codes used, utilisation, entropy (bits) and perplexity of a sequence of code indices."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel(), minlength=n_codes)
    h = float(entropy(counts, base=2)) if counts.sum() else 0.0
    return {
        "frames": int(counts.sum()),
        "codes_used": int((counts > 0).sum()),
        "codes_total": n_codes,
        "utilisation": float((counts > 0).mean()),
        "entropy_bits": h,
        "perplexity": float(2**h),
    }


def dataset_clips(dataset_dir: str | Path) -> pd.DataFrame:
    """Every clip of the dataset (train and eval) with its source: ``audio_file, split, source``.

    The source comes from data prep's ``clips.csv`` (``audio_file, ..., source``) when there is
    one; else from the file name's prefix matched against the source names in ``card.json``
    (clips are named ``<source>_<item>``), or before ``__``; else one group ``all``.
    """
    folder = Path(dataset_dir)
    tables = []
    for split, meta in (("train", TRAIN_META), ("eval", EVAL_META)):
        table = pd.read_csv(folder / meta, sep="|")
        tables.append(table.assign(split=split))
    clips = pd.concat(tables, ignore_index=True)
    if (folder / "clips.csv").is_file():
        known = pd.read_csv(folder / "clips.csv", dtype=str).set_index("audio_file")["source"]
        clips["source"] = clips["audio_file"].map(known)
    if "source" not in clips.columns or clips["source"].isna().any():
        names = _card_sources(folder / "card.json")
        clips["source"] = [_source_of(Path(f).stem, names) for f in clips["audio_file"]]
    return clips[["audio_file", "split", "source"]]


def _card_sources(card: Path) -> list[str]:
    if not card.is_file():
        return []
    data = json.loads(card.read_text(encoding="utf-8"))
    sources = data.get("sources", data.get("per_source", []))
    if isinstance(sources, dict):
        return [str(k) for k in sources]
    return [str(s.get("name", s.get("source"))) for s in sources if isinstance(s, dict)]


def _source_of(stem: str, names: Iterable[str]) -> str:
    for name in sorted(names, key=len, reverse=True):  # longest first: "quiz2" before "quiz"
        if stem == name or stem.startswith(f"{name}_"):
            return name
    return stem.split("__")[0] if "__" in stem else ALL


def codebook_usage(
    base_dir: str | Path,
    dataset_dir: str | Path,
    max_clips_per_source: int = 0,
    device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Per source (and ``all``): DVAE code usage statistics over the dataset's clips.

    ``max_clips_per_source`` > 0 takes only each source's first clips (train, then eval; a
    cheap, deterministic sample); the ``clips`` entry says how many were used. The DVAE runs
    on ``device`` (auto | cpu | cuda).
    """
    from voicebook.coqui.features import ClipCoder
    from voicebook.core.device import resolve_device

    coder = ClipCoder(base_dir, resolve_device(device))
    clips = dataset_clips(dataset_dir)
    if max_clips_per_source > 0:
        clips = clips.groupby("source", sort=False).head(max_clips_per_source)
    codes: dict[str, list[np.ndarray]] = {}
    for file, source in tqdm(list(zip(clips.audio_file, clips.source)), desc="DVAE codes"):
        clip_codes, _ = coder(Path(dataset_dir) / file)
        codes.setdefault(source, []).append(clip_codes.numpy())
    result = {src: usage_stats(np.concatenate(c)) | {"clips": len(c)} for src, c in codes.items()}
    if len(result) > 1 or ALL not in result:
        everything = np.concatenate([x for c in codes.values() for x in c])
        result[ALL] = usage_stats(everything) | {"clips": len(clips)}
    return result
