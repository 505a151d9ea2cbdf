"""Speaker embeddings (resemblyzer, weights in its wheel): how alike clips sound to one voice.

Used by the evaluation (speaker similarity of each candidate's speech) and by data prep (keeping
only the speaker's turns of an interview).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


class SpeakerSimilarity:
    """Cosine similarity of clips to a speaker's mean resemblyzer embedding.

    Embeddings are resemblyzer's ``embed_utterance`` (1.6 s partials, L2-normed mean), computed
    with the partials of many clips batched through the LSTM at once: the same numbers, several
    times faster on a CPU than one clip at a time.
    """

    def __init__(self, reference_clips: list[Path], batch_partials: int = 512, device="cpu"):
        if not reference_clips:
            raise ValueError("Speaker similarity needs at least one reference clip.")
        self._start(batch_partials, device)
        self.set_reference(self.embed(reference_clips))

    @classmethod
    def without_reference(cls, batch_partials: int = 512, device="cpu") -> SpeakerSimilarity:
        """An encoder whose reference is set later (``set_reference``), e.g. from a centroid."""
        scorer = cls.__new__(cls)
        scorer._start(batch_partials, device)
        return scorer

    def _start(self, batch_partials: int, device) -> None:
        from resemblyzer import VoiceEncoder

        self.device = torch.device(device)
        self.encoder = VoiceEncoder(self.device, verbose=False)
        self.batch_partials = batch_partials

    def set_reference(self, embeddings: np.ndarray) -> None:
        """The voice to compare with: the normalised mean of ``embeddings`` (n, 256)."""
        self.clip_embeddings = embeddings  # (n_clips, 256), unit length
        mean = embeddings.mean(axis=0)
        self.reference = mean / np.linalg.norm(mean)

    @staticmethod
    def load(clip: Path | str) -> np.ndarray:
        """16 kHz, loudness-normalised, long silences cut (VAD), as resemblyzer expects."""
        import librosa
        from resemblyzer import hparams

        raw, _ = librosa.load(str(clip), sr=hparams.sampling_rate)
        return SpeakerSimilarity.prepare(raw)

    @staticmethod
    def prepare(samples_16k: np.ndarray) -> np.ndarray:
        """16 kHz audio made ready as ``load`` makes a file's (normalised, long silences cut)."""
        from resemblyzer import audio, hparams

        raw = np.asarray(samples_16k, dtype=np.float32)
        wav = audio.preprocess_wav(raw)
        if len(wav) < hparams.sampling_rate // 10:  # VAD kept ~nothing (noise): use it all
            wav = audio.normalize_volume(raw, hparams.audio_norm_target_dBFS, increase_only=True)
        return wav

    def _partials(self, wav: np.ndarray) -> np.ndarray:
        from resemblyzer import audio

        wav_slices, mel_slices = self.encoder.compute_partial_slices(len(wav), 1.3, 0.75)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = audio.wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def embed(self, clips: Iterable[Path | str]) -> np.ndarray:
        """One unit-length embedding per clip, shape (n_clips, 256)."""
        return self.embed_waves([self.load(c) for c in clips])

    def embed_waves(self, waves: list[np.ndarray]) -> np.ndarray:
        """One unit-length embedding per prepared 16 kHz waveform (``load`` / ``prepare``)."""
        if not waves:
            return np.zeros((0, 256), dtype=np.float32)
        partials = [self._partials(w) for w in waves]
        stacked = torch.from_numpy(np.concatenate(partials))
        with torch.no_grad():
            batches = stacked.split(self.batch_partials)
            embeds = torch.cat([self.encoder(b.to(self.device)).cpu() for b in batches])
        embeds = embeds.numpy()
        per_clip = np.split(embeds, np.cumsum([len(p) for p in partials])[:-1])
        means = np.stack([e.mean(axis=0) for e in per_clip])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    def score(self, clips: Iterable[Path | str]) -> np.ndarray:
        """One similarity in [-1, 1] per clip (embeddings are unit length)."""
        clips = list(clips)
        return self.embed(clips) @ self.reference if clips else np.array([])
