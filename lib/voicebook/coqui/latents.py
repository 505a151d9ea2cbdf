"""A voice's conditioning latents against a frozen XTTS GPT, with coqui-tts's own code.

An XTTS voice is a ``gpt_cond_latent`` (the perceiver's 32 x d output that prompts the GPT) and a
512-d ``speaker_embedding`` (for the HiFi-GAN decoder). ``LatentObjective.mel_ce`` is the
teacher-forced Mel CE of the frozen GPT on clips given candidate latents: coqui's
``GPT.forward(..., cond_latents=...)``, which bypasses the conditioning encoder, over a batch of
candidates x clips at once. Each clip's text tokens and DVAE audio codes never change for a
base, so ``precompute_clips`` makes them once.

"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from voicebook.coqui.config import load_samples, reading_config, usable_samples
from voicebook.coqui.features import ClipCoder
from voicebook.coqui.limits import SAMPLE_RATE
from voicebook.coqui.models import load_xtts
from voicebook.core.fileio import write_file_atomic

IGNORE = -1  # coqui's ignore_index for padded targets


def load_frozen_xtts(base_dir: str | os.PathLike, checkpoint: str | os.PathLike | None, device):
    """The base (or a checkpoint on it) for inference, with every weight frozen."""
    model = load_xtts(base_dir, checkpoint, device)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def clip_samples(
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    language: str,
    *,
    train: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Train and eval samples of the data-prep dataset in ``language``, read as the trainer
    reads them (only the clips coqui's XTTSDataset keeps). ``train=False`` leaves the train
    split unread (an empty list): coqui's check loads every clip's audio."""
    # Only samples are read: no batch is drawn and nothing is seeded.
    config = reading_config(
        base_dir, dataset_dir, work_dir, language=language, batch_size=1, seed=0
    )
    train_samples, evals = load_samples(config)
    kept = usable_samples(config, train_samples, SAMPLE_RATE) if train else []
    return kept, usable_samples(config, evals, SAMPLE_RATE)


@dataclass
class ClipBatch:
    """Padded text tokens and DVAE codes of some clips (what GPT.forward takes)."""

    text: torch.Tensor  # (n, t) int
    text_lengths: torch.Tensor  # (n,)
    codes: torch.Tensor  # (n, m) long
    wav_lengths: torch.Tensor  # (n,)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: list[int] | torch.Tensor) -> ClipBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        text_len, wav_len = self.text_lengths[index], self.wav_lengths[index]
        n_codes = int(self.codes_per_clip[index].max())
        return ClipBatch(
            self.text[index, : int(text_len.max())],
            text_len,
            self.codes[index, :n_codes],
            wav_len,
            [self.paths[i] for i in index.tolist()],
        )

    @property
    def codes_per_clip(self) -> torch.Tensor:
        return (self.codes >= 0).sum(dim=1)

    def to(self, device) -> ClipBatch:
        return ClipBatch(
            self.text.to(device),
            self.text_lengths.to(device),
            self.codes.to(device),
            self.wav_lengths.to(device),
            self.paths,
        )


@torch.no_grad()
def precompute_clips(
    model: Any, base_dir: str | os.PathLike, samples: list[dict], device
) -> ClipBatch:
    """Text tokens (coqui's tokenizer) and DVAE codes (the base's DVAE, as GPTTrainer makes
    them) of every sample, once. Codes are right-padded with -1 (``codes_per_clip`` counts)."""
    coder = ClipCoder(base_dir, device)
    texts, codes, wav_lengths = [], [], []
    for sample in samples:
        tokens = model.tokenizer.encode(str(sample["text"]), sample["language"])
        texts.append(torch.tensor(tokens, dtype=torch.long))
        clip_codes, n_samples = coder(sample["audio_file"])
        codes.append(clip_codes)
        wav_lengths.append(n_samples)
    return ClipBatch(
        torch.nn.utils.rnn.pad_sequence(texts, batch_first=True),
        torch.tensor([len(t) for t in texts]),
        torch.nn.utils.rnn.pad_sequence(codes, batch_first=True, padding_value=IGNORE),
        torch.tensor(wav_lengths),
        [s["audio_file"] for s in samples],
    )


@torch.no_grad()
def clip_latents(model: Any, paths: list[str | os.PathLike]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clip's own voice: gpt_cond_latents (k, 32, d) and speaker embeddings (k, 512, 1)."""
    latents, speakers = zip(*(model.get_conditioning_latents(str(p)) for p in paths), strict=True)
    return torch.cat(latents).cpu(), torch.cat(speakers).cpu()


@torch.no_grad()
def reference_voice(
    model: Any, paths: list[str | os.PathLike]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The voice coqui makes from reference clips: (1, 32, d) latent, (1, 512, 1) embedding."""
    latent, speaker = model.get_conditioning_latents([str(p) for p in paths])
    return latent.cpu(), speaker.cpu()


class LatentObjective:
    """Teacher-forced Mel CE of a frozen GPT on clips, for a batch of candidate latents."""

    def __init__(self, gpt: Any, max_rows: int = 64):
        self.gpt = gpt.eval()
        self.max_rows = max_rows  # candidates x clips in one forward pass (memory bound)

    @property
    def device(self) -> torch.device:
        return next(self.gpt.parameters()).device

    def mel_ce(self, latents: torch.Tensor, clips: ClipBatch) -> torch.Tensor:
        """Mel CE per candidate (shape (p,)) over ``clips``, token-weighted like coqui's loss.

        ``latents`` is (p, 32, d); gradients flow to it when it requires them.
        """
        per_chunk = max(1, self.max_rows // len(clips))
        clips = clips.to(self.device)
        latents = latents.to(self.device)
        return torch.cat([self._chunk(c, clips) for c in latents.split(per_chunk)])

    def _chunk(self, latents: torch.Tensor, clips: ClipBatch) -> torch.Tensor:
        p, n = len(latents), len(clips)

        def repeat(t: torch.Tensor) -> torch.Tensor:  # candidate-major rows: p blocks of n clips
            return t.repeat(p, *([1] * (t.dim() - 1)))

        codes = clips.codes.clamp(min=0)  # padding beyond each clip's codes is ignored below
        cond = latents.repeat_interleave(n, dim=0)
        # forward() sizes a conditioning mask from cond_mels even when cond_latents is given
        # (get_logits rebuilds it from the latents): a placeholder of the right batch size.
        placeholder = cond.new_zeros(p * n, 1, 1, cond.shape[1])
        _, _, logits = self.gpt(
            repeat(clips.text),
            repeat(clips.text_lengths),
            repeat(codes),
            repeat(clips.wav_lengths),
            cond_mels=placeholder,
            cond_latents=cond,
        )
        targets = repeat(self.mel_targets(codes, clips.wav_lengths))
        loss = F.cross_entropy(
            logits,
            targets,
            ignore_index=IGNORE,
            label_smoothing=self.gpt.label_smoothing,
            reduction="none",
        )
        valid = (targets != IGNORE).float()
        return (loss * valid).view(p, -1).sum(1) / valid.view(p, -1).sum(1)

    def mel_targets(self, codes: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        """The Mel targets ``GPT.forward`` builds (stop-token padding, ignored tail), rebuilt
        here because it only returns their batch mean, and the search needs one per candidate."""
        gpt = self.gpt
        code_lengths = torch.ceil(wav_lengths / gpt.code_stride_len).long() + 3
        max_len = int(code_lengths.max())
        if max_len > codes.shape[-1]:
            codes = F.pad(codes, (0, max_len - codes.shape[-1]))
        codes = F.pad(codes[:, :max_len], (0, 1), value=gpt.stop_audio_token)
        codes = gpt.set_mel_padding(codes, code_lengths - 3)
        _, targets = gpt.set_inputs_and_targets(codes, gpt.start_audio_token, gpt.stop_audio_token)
        for row, length in enumerate(code_lengths):
            targets[row, length + 1 :] = IGNORE
        return targets.long()

    def coqui_mel_ce(self, latent: torch.Tensor, clips: ClipBatch) -> float:
        """coqui's own batch loss for one latent (1, 32, d): what ``mel_ce`` must agree with."""
        clips = clips.to(self.device)
        n = len(clips)
        cond = latent.to(self.device).expand(n, -1, -1)
        _, loss, _ = self.gpt(
            clips.text,
            clips.text_lengths,
            clips.codes.clamp(min=0),
            clips.wav_lengths,
            cond_mels=cond.new_zeros(n, 1, 1, cond.shape[1]),
            cond_latents=cond,
        )
        return float(loss)


@torch.no_grad()
def heldout_mel_ce(
    model: Any,
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    latent: torch.Tensor,
    work_dir: str | os.PathLike,
    language: str,
    clips: ClipBatch | None = None,
) -> float:
    """Mel CE of ``model``'s GPT on the dataset's held-out clips given one voice latent: the
    number the voice search reports, for any model and voice. ``clips``: the held-out clips'
    tokens and codes when already made (``heldout_clips``: the same for every model of one
    base, so an evaluation reads the clips and runs the DVAE once)."""
    if clips is None:
        clips = heldout_clips(model, base_dir, dataset_dir, work_dir, language)
    clips = clips.to(next(model.gpt.parameters()).device)
    latent = latent.reshape(1, *latent.shape[-2:])
    return float(LatentObjective(model.gpt).mel_ce(latent, clips)[0])


def heldout_clips(
    model: Any,
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    language: str,
) -> ClipBatch:
    """The dataset's held-out clips as ``heldout_mel_ce`` scores them: text tokens (the base's
    tokenizer) and DVAE codes (the base's DVAE), which fine-tuning never changes."""
    _, evals = clip_samples(base_dir, dataset_dir, work_dir, language, train=False)
    return precompute_clips(model, base_dir, evals, next(model.gpt.parameters()).device)


# --- the decoder's half of a voice ----------------------------------------------------------


@torch.no_grad()
def teacher_forced_latents(gpt: Any, latent: torch.Tensor, clips: ClipBatch) -> list[torch.Tensor]:
    """What XTTS's HiFi-GAN decoder turns into speech, for each clip's own audio codes given the
    voice ``latent`` (1, 32, d): one (T, d) tensor per clip. ``Xtts.inference`` calls coqui's
    ``GPT.forward(..., return_latent=True)`` after generating codes; here the codes are the clip's
    real ones (teacher forcing), so nothing is generated."""
    device = next(gpt.parameters()).device
    latent = latent.reshape(1, *latent.shape[-2:]).to(device)
    out = []
    for i in range(len(clips)):
        one = clips.select([i]).to(device)
        n_codes = int(one.codes_per_clip[0])
        latents = gpt(
            one.text,
            one.text_lengths,
            one.codes[:, :n_codes],
            torch.tensor([n_codes * gpt.code_stride_len], device=device),  # as inference passes
            cond_latents=latent,
            return_latent=True,
        )
        out.append(latents[0].cpu())
    return out


def decoder_frames_per_second(model: Any) -> float:
    """GPT latents per second of audio, as the HiFi-GAN decoder reads them."""
    decoder = model.hifigan_decoder
    return decoder.input_sample_rate / decoder.ar_mel_length_compression


def decoder_sample_rate(model: Any) -> int:
    """The sample rate of the audio XTTS's HiFi-GAN decoder writes."""
    return int(model.hifigan_decoder.output_sample_rate)


def decode(model: Any, gpt_latents: torch.Tensor, speaker_embeddings: torch.Tensor) -> torch.Tensor:
    """XTTS's HiFi-GAN decoder: (b, T, d) GPT latents and (b, 512, 1) speaker embeddings to
    (b, samples) audio at ``decoder_sample_rate``; differentiable in both."""
    device = next(model.hifigan_decoder.parameters()).device
    wav = model.hifigan_decoder(gpt_latents.to(device), g=speaker_embeddings.to(device))
    return wav.reshape(len(gpt_latents), -1)


# --- voice files in XTTS's speakers_xtts.pth format ----------------------------------------------


def voice_entry(gpt_cond_latent: torch.Tensor, speaker_embedding: torch.Tensor) -> dict:
    """One voice as ``speakers_xtts.pth`` holds it (keys in the order coqui unpacks them)."""
    return {
        "gpt_cond_latent": gpt_cond_latent.detach().cpu().reshape(1, *gpt_cond_latent.shape[-2:]),
        "speaker_embedding": speaker_embedding.detach().cpu().reshape(1, -1, 1),
    }


def _write_voices(path: Path, voices: dict[str, dict]) -> Path:
    # A symbolic link there (an export linking the base's file) is replaced, never written through.
    return write_file_atomic(path, lambda partial: torch.save(voices, partial))


def save_voice(
    path: str | os.PathLike,
    name: str,
    gpt_cond_latent: torch.Tensor,
    speaker_embedding: torch.Tensor,
) -> Path:
    """Write ``{name: {gpt_cond_latent, speaker_embedding}}`` (XTTS's ``speakers_xtts.pth``
    layout), atomically."""
    return _write_voices(Path(path), {name: voice_entry(gpt_cond_latent, speaker_embedding)})


def add_voice(
    speakers_file: str | os.PathLike,
    name: str,
    gpt_cond_latent: torch.Tensor,
    speaker_embedding: torch.Tensor,
) -> Path:
    """Add (or replace) voice ``name`` in a ``speakers_xtts.pth``, keeping its other voices.

    A link (an export folder links the base's file) becomes a real file: the base's own file
    is never changed.
    """
    path = Path(speakers_file)
    voices = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
    voices[name] = voice_entry(gpt_cond_latent, speaker_embedding)
    return _write_voices(path, voices)


def add_reference_voice(
    model_dir: str | os.PathLike, clips: list[str | os.PathLike], name: str, device="cpu"
) -> Path:
    """Give a model folder (base layout, e.g. an export) the voice its ``clips`` make, under
    ``name`` in its ``speakers_xtts.pth``: inference then needs no reference audio."""
    folder = Path(model_dir)
    model = load_xtts(folder, folder / "model.pth", device)
    latent, speaker = reference_voice(model, clips)
    return add_voice(folder / "speakers_xtts.pth", name, latent, speaker)


def load_voice(
    path: str | os.PathLike, name: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gpt_cond_latent, speaker_embedding) of voice ``name`` (default: the file's only one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No voice file at {path}: run the voice-search stage first.")
    voices = torch.load(path, map_location="cpu", weights_only=True)
    if name is None and len(voices) == 1:
        name = next(iter(voices))
    if name not in voices:
        raise KeyError(f"Voice {name!r} is not in {path}; it holds {', '.join(voices)}.")
    voice = voices[name]
    return voice["gpt_cond_latent"], voice["speaker_embedding"]


def speak(model: Any, text: str, language: str, voice_file: str | os.PathLike, name=None):
    """Synthesise ``text`` with a voice file's latents (no reference audio); returns the wav."""
    latent, speaker = load_voice(voice_file, name)
    device = next(model.parameters()).device
    out = model.inference(text, language, latent.to(device), speaker.to(device))
    return out["wav"]
