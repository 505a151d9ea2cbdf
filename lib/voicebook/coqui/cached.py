"""coqui's GPTTrainer reading cached DVAE codes instead of decoding audio and running the DVAE.

``CachedGPTTrainer`` is GPTTrainer with two changes, both below:

- its data loaders use ``CachedXTTSDataset``: each item carries the clip's cached codes
  (``features.FeatureCache``, filled on first use, on the model's device) instead of its padded
  waveform, and the clip is read once (coqui reads it twice: whole, then for the prompt slice);
- ``format_batch_on_device`` computes only the conditioning mels; the codes are already there.

Sampling, the conditioning windows, skipped clips and the eval order are coqui's, draw for draw:
the dataset keeps ``XTTSDataset``'s ``__getitem__`` and its random calls. Training and
evaluation (Mel CE / Text CE) both build this model, so the numbers come from one path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from TTS.tts.layers.xtts.trainer.dataset import XTTSDataset
from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

from voicebook.coqui.features import FeatureCache, feature_cache_for, prompt_slice
from voicebook.coqui.models import load_audio


class CachedXTTSDataset(XTTSDataset):
    """XTTSDataset whose items carry ``audio_codes`` (cached) in place of the waveform."""

    def __init__(self, *args: Any, codes: dict[str, torch.Tensor], **kwargs: Any):
        self.codes = codes
        super().__init__(*args, **kwargs)

    def load_item(self, sample: dict) -> tuple:
        text = str(sample["text"])
        tseq = self.get_text(text, sample["language"])
        audiopath = sample["audio_file"]
        if not text.strip():
            raise ValueError(f"empty transcript for {audiopath}")
        wav = load_audio(audiopath, self.sample_rate)
        if wav.shape[-1] < 0.5 * self.sample_rate:  # coqui's rule: ultra-short clips are skipped
            raise ValueError(f"{audiopath} is shorter than 0.5 s")
        source = audiopath
        if not self.use_masking_gt_prompt_approach and sample.get("reference_path"):
            source = sample["reference_path"]
        clip = wav if source == audiopath else load_audio(source, self.sample_rate)
        cond, cond_len, cond_idxs = prompt_slice(
            clip, self.max_conditioning_length, self.min_conditioning_length, self.is_eval
        )
        if self.use_masking_gt_prompt_approach:
            cond_len = torch.nan
        else:
            cond_idxs = torch.nan
        return tseq, audiopath, wav, cond, cond_len, cond_idxs

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["audio_codes"] = self.codes[item["filenames"]]  # KeyError: not cached (unreadable)
        del item["wav"]  # the codes stand for it; only its length is still needed
        return item

    def collate_fn(self, batch: list[dict]) -> dict:
        """coqui's collate with padded codes instead of padded waveforms."""
        size = len(batch)
        out = {key: [item[key] for item in batch] for key in batch[0]}
        for key in ("wav_lengths", "text_lengths", "conditioning", "cond_lens", "cond_idxs"):
            out[key] = torch.stack(out[key])
        for key in ("cond_idxs", "cond_lens"):
            if torch.any(out[key].isnan()):
                out[key] = None
        text = torch.zeros(size, int(out["text_lengths"].max()), dtype=torch.int32)
        codes = torch.zeros(size, max(len(c) for c in out["audio_codes"]), dtype=torch.long)
        for i in range(size):
            text[i, : out["text_lengths"][i]] = out["text"][i]
            codes[i, : len(out["audio_codes"][i])] = out["audio_codes"][i]
        # Past each clip's own codes, the GPT replaces the padding with its stop token.
        out["padded_text"], out["audio_codes"] = text, codes
        return out


class CachedGPTTrainer(GPTTrainer):
    """GPTTrainer on cached DVAE codes (see the module doc)."""

    def __init__(self, config: Any, features: FeatureCache | None = None):
        super().__init__(config)
        self.features = features or feature_cache_for(config)
        self._codes: dict[str, torch.Tensor] = {}

    def codes_for(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Codes of the samples' clips: computed once (on this model's device), then read."""
        clips = [s["audio_file"] for s in samples if s["audio_file"] not in self._codes]
        if clips:
            self.features.fill(clips, self.dvae, self.torch_mel_spectrogram_dvae)
            present = [c for c in clips if self.features.path(c).is_file()]
            self._codes.update(self.features.table(present))
        return self._codes

    def get_data_loader(
        self, config: Any, *, is_eval: bool = False, samples: list | None = None, verbose=True
    ) -> DataLoader:
        codes = self.codes_for(samples or [])
        dataset = CachedXTTSDataset(
            self.config,
            samples,
            self.xtts.tokenizer,
            config.audio.sample_rate,
            is_eval,
            codes=codes,
        )
        # coqui ignores its sampler at eval so that runs stay comparable; so do we.
        sampler = None if is_eval else self.get_sampler(config, dataset)
        return DataLoader(
            dataset,
            sampler=sampler,
            shuffle=False,
            drop_last=False,
            batch_size=config.eval_batch_size if is_eval else config.batch_size,
            collate_fn=dataset.collate_fn,
            num_workers=config.num_eval_loader_workers if is_eval else config.num_loader_workers,
            pin_memory=False,
        )

    @torch.no_grad()
    def format_batch_on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "audio_codes" not in batch:  # a batch from coqui's own dataset
            return super().format_batch_on_device(batch)
        batch["text_inputs"] = batch.pop("padded_text")
        conditioning = batch.pop("conditioning")
        size, n_cond, channels, length = conditioning.size()
        mels = self.torch_mel_spectrogram_style_encoder(
            conditioning.view(size * n_cond, channels, length)
        )
        batch["cond_mels"] = mels.view(size, n_cond, mels.size(1), mels.size(2))
        return batch
