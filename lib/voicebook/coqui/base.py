"""Base models: the real XTTS v2, a local folder, or the tiny XTTS that voicebook builds itself.

Every base is a folder in the XTTS v2 file layout (``BASE_FILES``), loaded through the same
coqui-tts code (``voicebook.coqui.models.load_xtts``). This module knows where a base
comes from; the layout is ``voicebook.coqui.layout``.
"""

from __future__ import annotations

import os
from pathlib import Path

from voicebook.coqui.layout import BASE_FILES, BaseModelError, validate_base_dir
from voicebook.core.paths import cache_dir

__all__ = ["BASE_FILES", "BaseModelError", "download_xtts_v2", "resolve_base", "validate_base_dir"]

XTTS_V2_REPO = "coqui/XTTS-v2"


def resolve_base(spec: str | os.PathLike = "tiny") -> Path:
    """Return a folder in the XTTS v2 layout for ``spec``: 'tiny', 'xtts_v2' or a folder path."""
    if str(spec) == "tiny":
        # Lazy: torch and coqui-tts load only when the tiny base is wanted.
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
