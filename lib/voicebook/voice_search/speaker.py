"""The speaker half of a voice search: ``speaker_embedding`` by speaker similarity.

An XTTS voice has two halves. The GPT hears only ``gpt_cond_latent`` (searched by Mel CE,
``voicebook.voice_search.search``); XTTS's HiFi-GAN decoder hears only the 512-d ``speaker_embedding``,
so Mel CE cannot see it. This half scores a candidate embedding by what it makes the decoder
say: each clip's GPT latents, teacher-forced on the clip's own audio codes with the voice's
latent (``coqui.latents.teacher_forced_latents``: no autoregressive generation), are decoded
with the candidate embedding, and the decoded audio's resemblyzer embedding is compared with the
speaker's clips (``voicebook.speaker``, the measure the evaluation reports).

Cheap enough to run a population per generation because:
- the GPT latents are computed once (the latent half is finished before this one starts);
- only a window of ``window_s`` seconds from the middle of each clip is decoded (resemblyzer
  embeds 1.6 s partials: one window is one or two partials);
- resemblyzer's embedding is recomputed in torch (``TorchSpeakerEncoder``: its own LSTM, the
  same mel filterbank as librosa), so the whole chain is batched and differentiable, which the
  gradient method needs. It matches ``SpeakerSimilarity.embed_waves`` (a test checks) except
  that no voice-activity trimming is done: the windows are cut from speech.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voicebook.speaker import SpeakerSimilarity

RESEMBLYZER_RATE = 16_000  # resemblyzer's hparams.sampling_rate (checked in TorchSpeakerEncoder)
PARTIAL_RATE, PARTIAL_COVERAGE = 1.3, 0.75  # resemblyzer's embed_utterance defaults
INT16_MAX = 2**15 - 1  # resemblyzer measures loudness in int16 units


class TorchSpeakerEncoder:
    """resemblyzer's ``embed_utterance`` on a batch of equal-length 16 kHz waves, in torch."""

    def __init__(self, scorer: SpeakerSimilarity):
        import librosa  # heavy: only where a speaker half runs
        from resemblyzer import hparams

        if hparams.sampling_rate != RESEMBLYZER_RATE:
            raise RuntimeError(f"resemblyzer expects {hparams.sampling_rate} Hz audio now.")
        self.encoder = scorer.encoder
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.n_fft = int(RESEMBLYZER_RATE * hparams.mel_window_length / 1000)
        self.hop = int(RESEMBLYZER_RATE * hparams.mel_window_step / 1000)
        bank = librosa.filters.mel(
            sr=RESEMBLYZER_RATE, n_fft=self.n_fft, n_mels=hparams.mel_n_channels
        )
        self.mel_bank = torch.from_numpy(bank).float()
        self.target_dbfs = hparams.audio_norm_target_dBFS

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def normalise_volume(self, waves: torch.Tensor) -> torch.Tensor:
        """resemblyzer's ``normalize_volume(increase_only=True)``, the gain held constant."""
        rms = (waves * INT16_MAX).pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-8)
        change = self.target_dbfs - 20 * torch.log10(rms / INT16_MAX)
        return waves * (10 ** (change.clamp_min(0) / 20)).detach()

    def mel(self, waves: torch.Tensor) -> torch.Tensor:
        """librosa's power mel spectrogram (centred, zero-padded), (b, frames, 40)."""
        window = torch.hann_window(self.n_fft, device=waves.device)
        spec = torch.stft(waves, self.n_fft, self.hop, window=window, center=True,
                          pad_mode="constant", return_complex=True).abs().pow(2)  # fmt: skip
        return torch.einsum("mf,bft->btm", self.mel_bank.to(waves.device), spec)

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """(b, samples) 16 kHz waves to (b, 256) unit embeddings, differentiable."""
        waves = self.normalise_volume(waves.to(self.device))
        wav_slices, mel_slices = self.encoder.compute_partial_slices(
            waves.shape[-1], PARTIAL_RATE, PARTIAL_COVERAGE
        )
        if wav_slices[-1].stop >= waves.shape[-1]:
            waves = F.pad(waves, (0, wav_slices[-1].stop - waves.shape[-1]))
        mels = self.mel(waves)
        partials = torch.stack([mels[:, s] for s in mel_slices], dim=1)  # (b, k, 160, 40)
        embeds = self.encoder(partials.flatten(0, 1)).view(*partials.shape[:2], -1)
        return F.normalize(embeds.mean(1), dim=-1)


def middle_windows(latents: list[torch.Tensor], frames: int) -> torch.Tensor:
    """The middle ``frames`` GPT latents of each clip (fewer when a clip is shorter than that:
    all windows take the shortest clip's length), stacked (n, frames, d)."""
    frames = max(1, min(frames, *(len(t) for t in latents)))
    starts = [(len(t) - frames) // 2 for t in latents]
    return torch.stack([t[s : s + frames] for t, s in zip(latents, starts, strict=True)])


def minibatch_of(n: int, minibatch: int, seed: int, generation: int) -> list[int]:
    """Generation ``g``'s clips: a seeded draw, the same for every candidate of it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + generation)
    return torch.randperm(n, generator=generator)[: min(minibatch, n)].tolist()


def decoded_similarity(decode, rate: int, encoder: TorchSpeakerEncoder, embeddings: torch.Tensor, windows: torch.Tensor, voice: torch.Tensor, max_rows: int = 8) -> torch.Tensor:  # fmt: skip
    """Mean resemblyzer similarity to ``voice`` of the audio ``decode`` makes of ``windows``
    (n, T, d) with each candidate embedding (p, 512, 1): (p,). ``max_rows`` candidates x windows
    are decoded at once (memory bound)."""
    import torchaudio.functional as AF  # heavy: only where a speaker half runs

    p, n = len(embeddings), len(windows)
    latents = windows.repeat(p, 1, 1)  # candidate-major rows: p blocks of n windows
    speakers = embeddings.repeat_interleave(n, dim=0)
    scores = []
    for rows in torch.arange(p * n).split(max_rows):
        wav16 = AF.resample(decode(latents[rows], speakers[rows]), rate, RESEMBLYZER_RATE)
        scores.append(encoder.embed(wav16) @ voice.to(wav16.device))
    return torch.cat(scores).view(p, n).mean(1)


class SpeakerObjective:
    """1 - speaker similarity of audio the decoder makes with candidate embeddings.

    ``train``: generation ``g``'s minibatch of training windows against the training clips'
    mean voice; ``heldout``: every validation window against the validation clips' mean voice
    (where the search selects). ``decode(latents, embeddings)`` is the model's decoder
    (``coqui.latents.decode``) at ``rate`` Hz.
    """

    def __init__(self, space, decode, rate: int, encoder: TorchSpeakerEncoder, data: dict, minibatch: int, seed: int):  # fmt: skip
        self.space, self.decode, self.rate, self.encoder = space, decode, rate, encoder
        self.train_windows, self.eval_windows = data["train_windows"], data["eval_windows"]
        self.train_voice = torch.as_tensor(data["train_voice"]).float()
        self.eval_voice = torch.as_tensor(data["eval_voice"]).float()
        self.minibatch, self.seed, self.dim = minibatch, seed, space.dim

    def similarity(self, embeddings: torch.Tensor, windows: torch.Tensor, voice: torch.Tensor):
        """Mean similarity over ``windows`` per candidate embedding (p, 512, 1): (p,)."""
        return decoded_similarity(self.decode, self.rate, self.encoder, embeddings, windows, voice)

    def train(self, x: torch.Tensor, generation: int) -> torch.Tensor:
        pick = minibatch_of(len(self.train_windows), self.minibatch, self.seed, generation)
        embeddings = self.space.latents(x)
        return 1 - self.similarity(embeddings, self.train_windows[pick], self.train_voice).to(
            x.device
        )

    @torch.no_grad()
    def heldout(self, x: torch.Tensor) -> float:
        embeddings = self.space.latents(x.reshape(1, -1))
        return float(1 - self.similarity(embeddings, self.eval_windows, self.eval_voice)[0])


class EmbeddingSpace:
    """A search space over speaker embeddings (p, 512, 1), made of a latent space over (1, 512)
    rows: ``MixSpace`` then mixes per-clip embeddings and adds a bias along random directions
    of all 512 channels (its "slot" is the one row), ``FullSpace`` frees every channel."""

    def __init__(self, space):
        self.space, self.dim = space, space.dim

    @staticmethod
    def rows(embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings.reshape(len(embeddings), 1, -1)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.latents(x).reshape(len(x), -1, 1)


def speaker_data(model: Any, coqui: Any, latent: torch.Tensor, clips: dict, window_s: float, scorer: SpeakerSimilarity, mean_voices: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """What a speaker objective scores with: the middle windows of the training and validation
    clips' teacher-forced GPT latents (given the kept ``latent``) and each split's mean
    resemblyzer voice (its real recordings, ``scorer``). ``mean_voices``: those already
    made, by their clips (the searches of one stage share them: the recordings do not change
    with the model searched); new ones are added to it."""
    frames = round(window_s * coqui.decoder_frames_per_second(model))
    data, voices = {}, {} if mean_voices is None else mean_voices
    for split in ("train", "eval"):
        batch = clips[split]
        data[f"{split}_windows"] = middle_windows(
            coqui.teacher_forced_latents(model.gpt, latent, batch), frames
        )
        key = tuple(str(p) for p in batch.paths)
        if key not in voices:
            mean = scorer.embed(batch.paths).mean(axis=0)
            voices[key] = torch.from_numpy(mean / np.linalg.norm(mean))
        data[f"{split}_voice"] = voices[key]
    return data
