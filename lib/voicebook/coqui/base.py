"""Base models: the real XTTS v2, a local folder, or the tiny XTTS that voicebook builds itself.

Every base is a folder in the XTTS v2 file layout (``BASE_FILES``), loaded through the same
coqui-tts code (``voicebook.coqui.models.load_xtts``). This module knows the layout and where a
base comes from; everything that touches coqui-tts is in ``voicebook.coqui``. The names that
moved there are still importable from here (``load_xtts``, ``build_tiny_base``, ...).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from voicebook.core.paths import cache_dir

BASE_FILES = (
    "model.pth",
    "dvae.pth",
    "mel_stats.pth",
    "vocab.json",
    "config.json",
    "speakers_xtts.pth",
)
XTTS_V2_REPO = "coqui/XTTS-v2"
# Names that live in voicebook.coqui, re-exported here for code written before the move.
_MOVED = {
    "load_xtts": "models",
    "load_dvae": "models",
    "load_config": "models",
    "load_tokenizer": "models",
    "build_dvae": "models",
    "load_xtts_files": "models",
    "build_tiny_base": "tiny",
    "demo_corpus_texts": "tiny",
    "demo_corpus_clips": "tiny",
    "TINY_SPEAKER": "tiny",
    "XTTS_LANGUAGES": "tiny",
}


def __getattr__(name: str) -> Any:
    # Lazy: importing voicebook.coqui.base must not load torch and coqui-tts.
    if name in _MOVED:
        return getattr(importlib.import_module(f"voicebook.coqui.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BaseModelError(FileNotFoundError):
    """A base model folder that cannot be used, with the fix in the message."""


def validate_base_dir(path: str | os.PathLike) -> Path:
    """Check that ``path`` holds every XTTS v2 file; the error lists all that are missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BaseModelError(
            f"Base model folder {folder} does not exist. Pass 'tiny', 'xtts_v2' or a folder "
            f"holding {', '.join(BASE_FILES)}."
        )
    missing = [name for name in BASE_FILES if not (folder / name).is_file()]
    if missing:
        raise BaseModelError(
            f"Base model folder {folder} is missing {', '.join(missing)}. Copy them from the XTTS "
            "v2 release (or pass base_model='xtts_v2' on a host with internet to download them)."
        )
    return folder


def resolve_base(spec: str | os.PathLike = "tiny") -> Path:
    """Return a folder in the XTTS v2 layout for ``spec``: 'tiny', 'xtts_v2' or a folder path."""
    if str(spec) == "tiny":
        from voicebook.coqui.tiny import build_tiny_base

        return build_tiny_base()
    if str(spec) == "xtts_v2":
        return download_xtts_v2()
    return validate_base_dir(spec)


def download_xtts_v2(dest: str | os.PathLike | None = None) -> Path:
    """Fetch the real XTTS v2 files once into the cache (needs internet)."""
    from huggingface_hub import snapshot_download

    folder = Path(dest) if dest else cache_dir() / "xtts_v2"
    if all((folder / name).is_file() for name in BASE_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id=XTTS_V2_REPO, allow_patterns=list(BASE_FILES), local_dir=folder)
    except Exception as exc:  # offline hosts land here
        raise BaseModelError(
            f"Could not download XTTS v2 into {folder} ({type(exc).__name__}: {exc}). On a host "
            "without internet, copy the XTTS v2 files there by hand and pass that folder."
        ) from exc
    return validate_base_dir(folder)
