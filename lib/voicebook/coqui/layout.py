"""The XTTS v2 file layout every base model folder has (the real release, a local copy, the tiny
base), and the check that a folder holds it. Light: no torch, no coqui-tts."""

from __future__ import annotations

import os
from pathlib import Path

BASE_FILES = (
    "model.pth",
    "dvae.pth",
    "mel_stats.pth",
    "vocab.json",
    "config.json",
    "speakers_xtts.pth",
)


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
