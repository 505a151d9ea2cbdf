"""An export folder loaded the ways a user loads it, with coqui-tts alone (no voicebook loader).

voicebook's own loader (``coqui.models.load_xtts``) is lenient (``strict=False``, mel stats from
``mel_stats.pth``); a user of the export is not: they call coqui's
``Xtts.init_from_config`` + ``load_checkpoint(..., strict=True)`` or
``TTS.api.TTS(model_path=folder, config_path=folder/config.json)``, and name a voice of the
folder's ``speakers_xtts.pth``. ``USER_LOADERS`` are those two ways; the export parity check
(``voicebook.decision.parity``) speaks with each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

USER_LOADERS = ("xtts_strict", "tts_api")


def load_like_a_user(folder: str | os.PathLike, how: str, device: str = "cpu") -> Any:
    """coqui's ``Xtts`` of an export folder, loaded as ``how`` says (one of ``USER_LOADERS``)."""
    folder = Path(folder)
    if how == "xtts_strict":
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        model = Xtts.init_from_config(config)
        model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True, strict=True)
    elif how == "tts_api":
        from TTS.api import TTS

        api = TTS(
            model_path=str(folder), config_path=str(folder / "config.json"), progress_bar=False
        )
        model = api.synthesizer.tts_model
    else:
        raise ValueError(f"how={how!r}: use one of {', '.join(USER_LOADERS)}.")
    model.to(torch.device(device))
    model.eval()
    return model


def user_voice(model: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (gpt_cond_latent, speaker_embedding) a user gets by naming voice ``name`` of the
    folder's ``speakers_xtts.pth`` (coqui's speaker manager, as ``TTS.api``'s ``speaker=``)."""
    speakers = model.speaker_manager.speakers if model.speaker_manager else {}
    if name not in speakers:
        raise KeyError(f"Voice {name!r} is not in the export's speakers_xtts.pth.")
    voice = speakers[name]
    return voice["gpt_cond_latent"], voice["speaker_embedding"]
