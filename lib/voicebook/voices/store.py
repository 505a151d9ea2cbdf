"""Every voice a search made, by name: where it lives and which checkpoint it was built on.

Each search is named (``voice_name``, by default ``<init_from>-<method>``) and keeps its files in
``voice_search/voices/<name>/``: ``search.json``, ``curves.csv``, ``speakers_xtts.pth`` (the
voice under its name) and ``reference_voice.pth``. A later search under the same name with other
parameters moves that voice's earlier files to ``voices/<name>/history/<n>/``; searches under
other names are left alone, so every voice stays current until it is searched again. The
stage's own files (``voice_search/search.json`` ...) are a copy of the latest search.

Read by the evaluation (every current voice is a candidate, on its checkpoint), by the phase
export (an export carries every voice built on its checkpoint) and by the report.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from voicebook.core import stages
from voicebook.core.fileio import write_json_atomic

SEARCH_DIR = Path(stages.VOICE_SEARCH.files[0]).parent  # voice_search/
VOICE_FILE, CURVES_FILE, SEARCH_FILE = (Path(f).name for f in stages.VOICE_SEARCH.files)
VOICES_DIR = "voices"
PHASES = tuple(s.short for s in stages.TRAINING)  # "phase1", "phase2": a search may start there


def voice_file_name(name: str) -> str:
    """A voice name as a folder name: letters, digits, '.', '_' and '-' (accents dropped)."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-") or "voice"


def default_voice_name(init_from: str, method: str) -> str:
    """``<init_from>-<method>``; a checkpoint path or export folder is named by its file stem
    (an export's folder by its phase: ``phase1/export`` is ``phase1-export``)."""
    spec = str(init_from).strip() or "base"
    if spec not in ("base", *PHASES):
        path = Path(spec)
        spec = f"{path.parent.name}-{path.name}" if path.name == "export" else path.stem
    return voice_file_name(f"{spec}-{method}")


def voice_folder(experiment_path: str | os.PathLike, name: str) -> Path:
    return Path(experiment_path) / SEARCH_DIR / VOICES_DIR / voice_file_name(name)


def _finished(search_file: Path) -> dict[str, Any] | None:
    """A search.json's summary when the search finished and its voice file is still there."""
    try:
        summary = json.loads(search_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if summary.get("state") != "finished" or not Path(summary.get("voice_file") or "").is_file():
        return None
    return summary


def current_voices(experiment_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every current voice's search summary (``search.json``), by name. A search made before
    voices were named (only ``voice_search/search.json``) counts as one voice."""
    folder = Path(experiment_path) / SEARCH_DIR
    found = [_finished(f) for f in sorted((folder / VOICES_DIR).glob(f"*/{SEARCH_FILE}"))]
    voices = [s for s in found if s]
    if not voices and (legacy := _finished(folder / SEARCH_FILE)):
        voices = [legacy]
    return voices


def same_file(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


def voices_on(experiment_path: str | os.PathLike, checkpoint: str | os.PathLike) -> list[dict]:
    """The current voices built on ``checkpoint`` (their latents fit that model only)."""
    return [
        v for v in current_voices(experiment_path) if same_file(v.get("checkpoint"), checkpoint)
    ]


def add_to_export(export_dir: str | os.PathLike, summaries: list[dict[str, Any]]) -> Path | None:
    """Each voice (its search summary) into the export's ``speakers_xtts.pth`` under its name,
    the export's other voices kept; ``export.json`` lists them as ``searched_voices``. Returns
    the speakers file (None when there was no voice to add)."""
    from voicebook.coqui.latents import add_voice, load_voice  # heavy (coqui-tts)

    export = Path(export_dir)
    if not summaries:
        return None
    for s in summaries:
        add_voice(
            export / VOICE_FILE, s["voice_name"], *load_voice(s["voice_file"], s["voice_name"])
        )
    info = export / "export.json"
    record = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    names = {*record.get("searched_voices", []), *(s["voice_name"] for s in summaries)}
    write_json_atomic(info, {**record, "searched_voices": sorted(names)})
    return export / VOICE_FILE
