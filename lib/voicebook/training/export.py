"""A phase's ``export/`` folder: the chosen checkpoint, slim, ready for inference."""

from __future__ import annotations

from pathlib import Path

from voicebook.core import runs
from voicebook.core.paths import EVAL_META
from voicebook.training.checkpoints import resolve_checkpoint
from voicebook.training.result import PhaseResult
from voicebook.voices import store as voices


def export_phase(result: PhaseResult, checkpoint: str | int = "best") -> Path:
    """Write ``<stage>/export/`` for the best, final, a step's, or a given checkpoint."""
    from voicebook.coqui.base import resolve_base
    from voicebook.training.bundle import export_folder

    exp = result.phase_dir.parent
    path = resolve_checkpoint(exp, result.stage, checkpoint, f"export_checkpoint={checkpoint!r}")
    params = result.params
    dataset = Path(params["dataset_dir"] or exp / "dataset")
    device = params.get("device", "cpu")
    folder = export_folder(
        path,
        resolve_base(params["base_model"]),
        result.phase_dir / "export",
        _reference_clip(dataset),
        device=device,
    )
    # the voices searched on this checkpoint stay in its export (a re-export rebuilt the file)
    voices.add_to_export(folder, voices.voices_on(exp, path))
    runs.wrote(result.stage, "export", folder)
    return folder


def _reference_clip(dataset: Path) -> Path | None:
    """The first eval clip of the dataset: a held-out sample of the voice."""
    meta = dataset / EVAL_META
    lines = meta.read_text(encoding="utf-8").splitlines()[1:] if meta.is_file() else []
    return dataset / lines[0].split("|")[0] if lines else None
