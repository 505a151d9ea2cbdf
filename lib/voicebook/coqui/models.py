"""Loading XTTS v2's pieces through coqui-tts: the model, its config, tokenizer and DVAE.

Every base is a folder in the XTTS v2 layout (``voicebook.coqui.base.BASE_FILES``); the tiny base
goes through exactly these loaders, so it exercises the real code paths on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from voicebook.coqui.layout import validate_base_dir
from voicebook.coqui.limits import N_CODES, SAMPLE_RATE
from voicebook.coqui.lora import apply_checkpoint, checked_weights, lora_info


def load_tokenizer(base_dir: str | os.PathLike):
    """coqui's XTTS tokenizer for a base folder."""
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    return VoiceBpeTokenizer(vocab_file=str(Path(base_dir) / "vocab.json"))


def load_config(base_dir: str | os.PathLike):
    """The base's ``config.json`` as coqui's XttsConfig."""
    from TTS.tts.configs.xtts_config import XttsConfig

    config = XttsConfig()
    config.load_json(str(Path(base_dir) / "config.json"))
    return config


def load_xtts(
    base_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    merge: bool = True,
):
    """Load a base (or a fine-tuned checkpoint on top of it) for inference on ``device``.

    ``checkpoint`` may be a trainer checkpoint (keys prefixed ``xtts.``), a slim best model or
    export, a LoRA checkpoint (its adapters merged into the weights it sits on; ``merge=False``
    keeps them as adapters), or None for the base's own ``model.pth``.
    """
    info = lora_info(checkpoint)
    weights = checked_weights(info, checkpoint) if info else checkpoint
    model = _xtts_from(base_dir, weights, eval=True)
    if info:
        apply_checkpoint(model, checkpoint, merge=merge)
    model.to(device)
    model.eval()  # Xtts.eval() returns None
    return model


class XttsLoader:
    """Checkpoints of one base loaded one after another into one Xtts, for a caller that uses
    each model before it loads the next (the evaluation's candidates, a phase's kept models).

    The first ``load`` is ``load_xtts``. A later one reads only the weights into the model it
    returned, when they set every one of its tensors (``_sets_every_tensor``); otherwise it is
    a fresh ``load_xtts`` again. Building an Xtts (GPT, HiFi-GAN, speaker encoder, initialised
    at random and then overwritten) costs more than reading the weights, and a model whose
    every tensor comes from the file is the same model whichever way it was made.
    """

    def __init__(self, base_dir: str | os.PathLike, device: str | torch.device = "cpu"):
        self.base_dir, self.device = validate_base_dir(base_dir), device
        self.model: Any = None

    def load(self, checkpoint: str | os.PathLike | None = None):
        """The model of ``checkpoint`` (None: the base's), merged as ``load_xtts`` merges a
        LoRA checkpoint; the model a previous ``load`` returned is this same object."""
        info = lora_info(checkpoint)
        weights = checked_weights(info, checkpoint) if info else checkpoint
        path = Path(weights or self.base_dir / "model.pth")
        state = (
            None if self.model is None else self.model.get_compatible_checkpoint_state_dict(path)
        )
        if state is None or not _sets_every_tensor(self.model, state):
            self.model = load_xtts(self.base_dir, checkpoint, self.device)
            return self.model
        self.model.load_state_dict(state, strict=False)
        self.model.mel_stats = torch.load(self.base_dir / "mel_stats.pth", weights_only=True)
        if info:
            apply_checkpoint(self.model, checkpoint, merge=True)
        self.model.to(self.device)
        self.model.eval()
        return self.model


def _sets_every_tensor(model: Any, state: dict[str, torch.Tensor]) -> bool:
    """Whether loading ``state`` leaves no tensor of ``model`` as it was: each is named in
    ``state`` (``mel_stats`` aside: the base's file sets it), and a tensor under two names (the
    inference GPT shares its embeddings) gets the same values under both."""
    named: dict[int, list[str]] = {}
    for key, tensor in model.state_dict().items():
        if key != "mel_stats":
            named.setdefault(tensor.data_ptr(), []).append(key)
    for keys in named.values():
        given = [state[k] for k in keys if k in state]
        if not given or any(not torch.equal(given[0], other) for other in given[1:]):
            return False
    return True


def _xtts_from(base_dir: str | os.PathLike, weights: str | os.PathLike | None, *, eval: bool):
    """coqui's Xtts of a base with the full weights in ``weights`` (None: the base's)."""
    from TTS.tts.models.xtts import Xtts

    base = validate_base_dir(base_dir)
    config = load_config(base)
    model = Xtts(config)
    model.load_checkpoint(
        config,
        checkpoint_dir=str(base),
        checkpoint_path=str(weights or base / "model.pth"),
        vocab_path=str(base / "vocab.json"),
        eval=eval,
        strict=False,
    )
    model.mel_stats = torch.load(base / "mel_stats.pth", weights_only=True)
    return model


def merged_weights(base_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> dict:
    """The full XTTS state of a LoRA checkpoint: its adapters merged into the weights it sits
    on, with the keys of a standard ``model.pth`` (what the export writes)."""
    info = lora_info(checkpoint)
    if info is None:
        raise ValueError(f"{checkpoint} is not a LoRA checkpoint (it has no 'lora' entry).")
    model = _xtts_from(base_dir, checked_weights(info, checkpoint), eval=False)
    apply_checkpoint(model, checkpoint, merge=True)
    return model.state_dict()


def load_xtts_files(folder: Path, config: Any):
    """Load model.pth from a folder still being written (no speakers file yet)."""
    from TTS.tts.models.xtts import Xtts

    model = Xtts(config)
    model.load_checkpoint(
        config,
        checkpoint_dir=str(folder),
        vocab_path=str(folder / "vocab.json"),
        eval=True,
        strict=True,
    )
    return model


def build_dvae():
    """A DVAE in the shape GPTTrainer builds for XTTS v2 fine-tuning (1024 codes)."""
    from TTS.tts.layers.xtts.dvae import DiscreteVAE

    return DiscreteVAE(
        channels=80,
        normalization=None,
        positional_dims=1,
        num_tokens=N_CODES,
        codebook_dim=512,
        hidden_dim=512,
        num_resnet_blocks=3,
        kernel_size=3,
        num_layers=2,
        use_transposed_convs=False,
    )


def load_dvae(base_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The base's DVAE (``dvae.pth``), ready to turn DVAE mels into codes."""
    dvae = build_dvae()
    dvae.load_state_dict(torch.load(Path(base_dir) / "dvae.pth", weights_only=True), strict=False)
    return dvae.to(device).eval()


def load_audio(path: str | os.PathLike, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A clip as coqui's XTTS reads it: mono float32 ``(1, samples)`` at ``rate``, in [-1, 1].

    soundfile reads a clip already at ``rate`` (the data-prep WAVs and the demo corpus): the same
    samples as coqui's torchaudio/torchcodec loader, about 100x faster, which matters since the
    trainer reads a clip at every step. Other rates and formats go through coqui's loader.
    """
    try:
        samples, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError:  # soundfile cannot read it (its LibsndfileError is a RuntimeError)
        file_rate = None
    if file_rate != rate:
        from TTS.tts.models.xtts import load_audio as coqui_load_audio

        return coqui_load_audio(str(path), rate)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return torch.from_numpy(mono).unsqueeze(0).clip_(-1, 1)


def dvae_mel(mel_norm_file: str | os.PathLike | None, device: str | torch.device = "cpu"):
    """XTTS's DVAE log-mel front-end, normalised by ``mel_norm_file`` (None: raw)."""
    from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram

    norm = str(mel_norm_file) if mel_norm_file else None
    return TorchMelSpectrogram(mel_norm_file=norm, sampling_rate=SAMPLE_RATE).to(device)
