"""The tiny XTTS that voicebook builds itself, in the real XTTS v2 file layout.

A 2-layer, 128-channel GPT, a DVAE of the real shape (1024 codes) with its codebook seeded from
the demo audio, mel stats and a BPE vocab (with XTTS's special and language tokens) from the
demo corpus. It goes through the real coqui-tts loading and training code on a CPU. Its losses
are real; its audio is not speech.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from voicebook.coqui.layout import BASE_FILES, BaseModelError
from voicebook.coqui.limits import (
    AUDIO_TOKENS,
    OUTPUT_SAMPLE_RATE,
    SAMPLE_RATE,
    START_AUDIO_TOKEN,
    STOP_AUDIO_TOKEN,
)
from voicebook.coqui.models import build_dvae, dvae_mel, load_audio, load_xtts_files
from voicebook.core.paths import DEMO_DATA_DIR, cache_dir
from voicebook.core.subtitles import parse_subtitles

# XTTS v2's language tokens: the tiny vocab carries them all, like the real one.
XTTS_LANGUAGES = [
    "en",
    "es",
    "fr",
    "de",
    "it",
    "pt",
    "pl",
    "tr",
    "ru",
    "nl",
    "cs",
    "ar",
    "zh-cn",
    "hu",
    "ko",
    "ja",
    "hi",
]
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{x}]" for x in XTTS_LANGUAGES]
# Every letter a Latin-script corpus is likely to use, so the tiny vocab never needs [UNK]
# for them (BPE falls back to single characters).
_ALPHABET = list(
    "abcdefghijklmnopqrstuvwxyzáéíóöőúüűàâäãåæçèêëìîïñòôõøùûÿßčďěňřšťůžąćęłńśźżşğıœ"
    "0123456789.,?!:;'\"-()"
)
TINY_SPEAKER = "voicebook_demo"
TINY_BUILD_VERSION = 2  # bump when the tiny recipe changes, so caches rebuild


def demo_corpus_texts(corpus: Path = DEMO_DATA_DIR) -> list[str]:
    """All transcript text of the demo corpus (metadata.csv tables and .srt cues)."""
    texts: list[str] = []
    for table in sorted(corpus.rglob("metadata.csv")):
        for line in table.read_text(encoding="utf-8").splitlines()[1:]:
            if "|" in line:
                texts.append(line.split("|")[1])
    for subtitles in sorted(corpus.rglob("*.srt")):
        texts += [cue for *_, cue in parse_subtitles(subtitles.read_text(encoding="utf-8"))]
    return texts


def demo_corpus_clips(corpus: Path = DEMO_DATA_DIR, limit: int = 50) -> list[Path]:
    return sorted((corpus / "interview").glob("*.flac"))[:limit]


def train_tiny_vocab(texts: list[str], language: str, vocab_size: int = 600):
    """A BPE vocab in XTTS's format, trained on ``texts`` cleaned the way XTTS cleans them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.layers.xtts.tokenizer import multilingual_cleaners

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=_ALPHABET,
        show_progress=False,
    )
    tokenizer.train_from_iterator([multilingual_cleaners(t, language) for t in texts], trainer)
    return tokenizer


def tiny_config(vocab_file: Path, mel_stats_file: Path):
    """An XttsConfig for a 2-layer, 128-channel GPT with XTTS v2's audio-token layout."""
    from TTS.tts.configs.xtts_config import XttsAudioConfig, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import XttsArgs

    tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab_file)).tokenizer
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=128,
        gpt_n_heads=4,
        gpt_number_text_tokens=max(tokenizer.get_vocab().values()) + 1,
        gpt_start_text_token=tokenizer.token_to_id("[START]"),
        gpt_stop_text_token=tokenizer.token_to_id("[STOP]"),
        gpt_num_audio_tokens=AUDIO_TOKENS,  # XTTS v2 fine-tuning: 1024 DVAE codes + start + stop
        gpt_start_audio_token=START_AUDIO_TOKEN,
        gpt_stop_audio_token=STOP_AUDIO_TOKEN,
        gpt_use_perceiver_resampler=True,
        gpt_use_masking_gt_prompt_approach=True,
        decoder_input_dim=128,
        tokenizer_file="vocab.json",
    )
    config = XttsConfig(
        model_args=args,
        audio=XttsAudioConfig(
            sample_rate=SAMPLE_RATE,
            dvae_sample_rate=SAMPLE_RATE,
            output_sample_rate=OUTPUT_SAMPLE_RATE,
        ),
        languages=list(XTTS_LANGUAGES),
    )
    config.model_args.mel_norm_file = str(mel_stats_file.name)
    return config


def compute_mel_stats(clips: list[Path]) -> torch.Tensor:
    """Per-channel mean of XTTS's DVAE log-mel over ``clips`` (what ``mel_stats.pth`` holds)."""
    mel = dvae_mel(None)
    frames = torch.cat([mel(load_audio(p))[0] for p in clips], dim=-1)
    stats = frames.mean(dim=-1)
    # Keep every divisor away from zero (the DVAE mel is divided by these).
    return torch.where(stats.abs() < 0.1, torch.full_like(stats, -0.1), stats)


@torch.no_grad()
def seed_codebook_from_data(dvae: Any, clips: list[Path], mel_stats_file: Path) -> None:
    """Set the DVAE's 1024 codes to encoder outputs of real frames (a k-means++-free seeding).

    A purely random codebook maps nearly every frame to a handful of codes, which makes Mel CE
    trivially low; seeding from data gives the tiny base a realistic code distribution.
    """
    mel = dvae_mel(mel_stats_file)
    frames = []
    for clip in clips:
        encoded = dvae.encoder(dvae.norm(mel(load_audio(clip))))
        frames.append(encoded.permute(0, 2, 1).reshape(-1, encoded.shape[1]))
    frames = torch.cat(frames)
    n_codes = dvae.codebook.n_embed
    picks = torch.randperm(len(frames))[:n_codes]
    if len(picks) < n_codes:  # a very small corpus: repeat frames with a little noise
        picks = picks[torch.randint(len(picks), (n_codes,))]
    embed = frames[picks] + 0.01 * torch.randn(n_codes, frames.shape[1])
    dvae.codebook.embed.copy_(embed.T)
    dvae.codebook.embed_avg.copy_(embed.T)


def _tiny_key(texts: list[str], clips: list[Path]) -> str:
    digest = hashlib.sha256(f"v{TINY_BUILD_VERSION}".encode())
    for text in texts:
        digest.update(text.encode())
    for clip in clips:
        digest.update(clip.read_bytes())
    return digest.hexdigest()[:10]


def build_tiny_base(
    dest: str | os.PathLike | None = None,
    corpus: Path = DEMO_DATA_DIR,
    language: str = "hu",
    seed: int = 0,
) -> Path:
    """Build (once, then cached) a tiny XTTS in the real XTTS v2 file layout.

    Vocab and mel stats come from ``corpus``; GPT, DVAE (real shape, 1024 codes) and HiFi-GAN
    decoder are randomly initialised with ``seed``. Returns the folder.
    """
    texts, clips = demo_corpus_texts(corpus), demo_corpus_clips(corpus)
    if not texts or not clips:
        raise BaseModelError(
            f"Cannot build the tiny base: no transcripts or clips under {corpus}. "
            "Restore data/demo from git (or run scripts/make_demo_corpus.py)."
        )
    folder = Path(dest) if dest else cache_dir() / f"tiny-{_tiny_key(texts, clips)}"
    if all((folder / name).is_file() for name in BASE_FILES):
        return folder
    # One folder per process: parallel trials or test workers may build the same base at once.
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write_tiny_files(partial, texts, clips, language, seed)
    try:
        partial.replace(folder)  # atomic; fails where the folder exists
    except OSError:
        if all((folder / name).is_file() for name in BASE_FILES):
            shutil.rmtree(partial)  # another process finished first: the build is deterministic
        else:
            _move_files(partial, folder)  # an interrupted earlier build left the folder
    return folder


def _move_files(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        item.replace(dst / item.name)
    src.rmdir()


def _write_tiny_files(
    folder: Path, texts: list[str], clips: list[Path], language: str, seed: int
) -> None:
    from TTS.tts.models.xtts import Xtts

    torch.manual_seed(seed)
    train_tiny_vocab(texts, language).save(str(folder / "vocab.json"))
    torch.save(compute_mel_stats(clips), folder / "mel_stats.pth")

    config = tiny_config(folder / "vocab.json", folder / "mel_stats.pth")
    config.save_json(str(folder / "config.json"))
    model = Xtts(config)
    model.mel_stats = torch.load(folder / "mel_stats.pth", weights_only=True)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, folder / "model.pth")

    dvae = build_dvae()
    seed_codebook_from_data(dvae, clips, folder / "mel_stats.pth")
    torch.save(dvae.state_dict(), folder / "dvae.pth")

    model = load_xtts_files(folder, config)
    gpt_latent, speaker_embedding = model.get_conditioning_latents([str(p) for p in clips[:4]])
    torch.save(
        {TINY_SPEAKER: {"gpt_cond_latent": gpt_latent, "speaker_embedding": speaker_embedding}},
        folder / "speakers_xtts.pth",
    )
    (folder / "TINY_BASE.json").write_text(
        json.dumps(
            {
                "what": "tiny XTTS built by voicebook: real code paths, random weights, no speech",
                "build_version": TINY_BUILD_VERSION,
                "seed": seed,
                "language": language,
                "n_texts": len(texts),
                "clips": [p.name for p in clips],
            },
            indent=2,
        )
    )
