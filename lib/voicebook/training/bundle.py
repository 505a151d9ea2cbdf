"""Export a trained checkpoint for inference: a slim model and a ready-to-use folder.

A trainer checkpoint carries the optimizer state, the DVAE and mel front-ends, all only needed
for training (a full-size one is 3x the weights). The phases write their best models slim too
(``write_slim``); only the periodic checkpoints, which resume needs, keep it all.
``slim_checkpoint`` keeps the XTTS weights alone (keys without the ``xtts.`` prefix, loadable
by coqui-tts's ``Xtts.load_checkpoint``). ``export_folder`` writes that model with the base's
``config.json`` and ``vocab.json``, a reference clip, and the base's ``dvae.pth`` and
``mel_stats.pth`` (hard links or copies, never symbolic links: the folder is self-contained),
so the folder is itself a base folder (``voicebook.coqui.base.load_xtts(folder)``) for evaluation.
A LoRA phase's checkpoint (adapters only, ``voicebook.coqui.lora``) is exported merged: a
standard XTTS ``model.pth``. Its ``speakers_xtts.pth`` carries the voice: the base's speakers
plus ``EXPORT_VOICE``, the latents the exported model makes of the reference clip, so
inference needs no reference audio (``speaker=EXPORT_VOICE``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from voicebook.core.fileio import write_file_atomic

TRAINING_ONLY = ("dvae.", "torch_mel_spectrogram_dvae.", "torch_mel_spectrogram_style_encoder.")
EXPORT_VOICE = "voicebook_reference"  # the exported voice's name in speakers_xtts.pth


def slim_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inference weights of a model state (a trainer's ``xtts.``-prefixed one or a slim
    one), on the CPU."""
    slim = {}
    for key, tensor in state.items():
        key = key.removeprefix("xtts.")
        if not key.startswith(TRAINING_ONLY):
            slim[key] = tensor.detach().cpu()
    return slim


def slim_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The inference weights of a trainer checkpoint (or of an already slim one)."""
    return slim_weights(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])


def write_slim(state: dict[str, torch.Tensor], dest: str | os.PathLike, **info: object) -> Path:
    """Write ``{"model": slim weights, **info}`` to ``dest`` atomically (a kill never leaves
    half a file under the real name); returns ``dest``. Loadable wherever a trainer checkpoint
    is: ``Xtts.load_checkpoint``, GPTTrainer's ``xtts_checkpoint``, ``slim_state_dict``."""
    content = {"model": slim_weights(state), **info}
    return write_file_atomic(dest, lambda partial: torch.save(content, partial))


def slim_checkpoint(
    checkpoint: str | os.PathLike, dest: str | os.PathLike, base_dir: str | os.PathLike = ""
) -> Path:
    """Write ``dest`` with only the inference weights of ``checkpoint``; returns ``dest``. A
    LoRA checkpoint (adapters only) is merged into the full weights it sits on first, so
    ``dest`` is always a standard XTTS ``model.pth``; that needs the base folder ``base_dir``."""
    from voicebook.coqui.lora import lora_info

    if lora_info(checkpoint) is not None:
        from voicebook.coqui.models import merged_weights

        if not base_dir:
            raise ValueError(f"{checkpoint} is a LoRA checkpoint: merging it needs base_dir.")
        return write_slim(merged_weights(base_dir, checkpoint), dest, merged_from=str(checkpoint))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    return write_slim(state, dest)


def _own_copy(src: Path, dst: Path) -> None:
    """A file of the export's own: a hard link where the file system allows (no space taken),
    else a copy. Never a symbolic link: an export is copied to other machines, where a link
    into this machine's cache would arrive broken."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src.resolve(), dst)
    except OSError:  # another file system, or none with hard links
        shutil.copy2(src, dst)


def export_folder(
    checkpoint: str | os.PathLike,
    base_dir: str | os.PathLike,
    dest: str | os.PathLike,
    reference_clip: str | os.PathLike | None = None,
    device: str = "cpu",
) -> Path:
    """A ready-to-use inference folder for ``checkpoint``; returns it.

    Holds ``model.pth`` (slim), ``config.json``, ``vocab.json``, ``reference.wav`` (the voice to
    clone from), the base's DVAE and mel stats (self-contained: ``_own_copy``), and
    ``speakers_xtts.pth`` (the base's
    speakers, plus the reference clip's voice as ``EXPORT_VOICE`` when there is a clip);
    ``export.json`` records where everything came from. Re-exporting replaces only these
    derived files. ``device`` runs the model that makes the reference voice.
    """
    base, dest = Path(base_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    slim_checkpoint(checkpoint, dest / "model.pth", base)
    for name in ("config.json", "vocab.json"):
        shutil.copy2(base / name, dest / name)
    for name in ("dvae.pth", "mel_stats.pth", "speakers_xtts.pth"):
        _own_copy(base / name, dest / name)
    if reference_clip:
        from voicebook.coqui.latents import add_reference_voice
        from voicebook.core.device import resolve_device

        shutil.copy2(reference_clip, dest / "reference.wav")
        add_reference_voice(dest, [dest / "reference.wav"], EXPORT_VOICE, resolve_device(device))
    (dest / "export.json").write_text(
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "base": str(base),
                "reference_clip": str(reference_clip) if reference_clip else None,
                "voice": EXPORT_VOICE if reference_clip else None,
            },
            indent=2,
        )
    )
    return dest
