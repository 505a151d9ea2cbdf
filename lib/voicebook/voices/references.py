"""The reference clips a voice is made from, chosen one way by the voice search and the
evaluation: the first *train* clips (``"first"``), the train clips nearest their mean speaker
embedding (``"auto"``), or the files given.

Always train clips: the evaluation scores Mel CE and speaker similarity on the held-out clips,
and a voice made from one of them would be scored on the clip it was made from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voicebook.core.paths import EVAL_META, TRAIN_META
from voicebook.core.values import as_structure
from voicebook.speaker import SpeakerSimilarity

FIRST, AUTO = "first", "auto"  # the reference_clips modes besides a list of files


def eval_clips(dataset_dir: Path) -> list[Path]:
    """Every held-out clip of the dataset, in its listed order."""
    meta = pd.read_csv(Path(dataset_dir) / EVAL_META, sep="|")
    return [Path(dataset_dir) / p for p in meta["audio_file"]]


def train_clips(dataset_dir: Path) -> list[Path]:
    """Every train clip of the dataset, in its listed order."""
    meta = pd.read_csv(Path(dataset_dir) / TRAIN_META, sep="|")
    return [Path(dataset_dir) / p for p in meta["audio_file"]]


def reference_clips(dataset_dir: Path, n: int) -> list[Path]:
    """The first ``n`` train clips (deterministic), used as the voice reference for all."""
    return train_clips(dataset_dir)[: max(n, 1)]


def nearest_clips(embeddings: np.ndarray, clips: list[Any], n: int) -> list[Any]:
    """The ``n`` clips whose embeddings are nearest (cosine) the mean embedding, nearest first."""
    if len(clips) != len(embeddings):
        raise ValueError(f"{len(clips)} clips but {len(embeddings)} embeddings.")
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    closeness = unit @ (mean / np.linalg.norm(mean))
    order = np.argsort(-closeness, kind="stable")
    return [clips[i] for i in order[: max(n, 1)]]


def choose_reference_clips(
    spec: Any, dataset_dir: Path, n: int, scorer: SpeakerSimilarity | None = None
) -> list[Path]:
    """The clips every candidate's voice is made from: ``"first"`` the first ``n`` train clips,
    ``"auto"`` the ``n`` train clips nearest their mean speaker embedding (``scorer``'s encoder
    embeds them when given), else a file or a list of files (relative to the dataset folder, or
    not)."""
    spec = as_structure(spec)
    if spec == FIRST:
        return reference_clips(dataset_dir, n)
    if spec == AUTO:
        train = train_clips(dataset_dir)
        scorer = scorer or SpeakerSimilarity.without_reference()
        return nearest_clips(scorer.embed(train), train, n)
    files = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec or [])
    if not files:
        raise ValueError("reference_clips is empty: use 'first', 'auto' or a list of wav files.")
    found = [_existing(Path(dataset_dir), f) for f in files]
    missing = [str(f) for f, p in zip(files, found) if p is None]
    if missing:
        raise FileNotFoundError(
            f"reference_clips names {', '.join(missing)}, which do(es) not exist (neither as "
            f"given nor under {dataset_dir}): fix the list, or use 'first' or 'auto'."
        )
    return found


def _existing(dataset_dir: Path, file: str | os.PathLike) -> Path | None:
    for path in (Path(file).expanduser(), dataset_dir / file):
        if path.is_file():
            return path
    return None
