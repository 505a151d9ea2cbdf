"""XTTS v2's hard limits, defined once (coqui-tts 0.28; ``tests/test_models.py`` checks the
ones coqui holds itself against its code, so an upgrade that moves them fails a test).

Pure constants: data prep and the health checks import this without loading torch or coqui.
"""

from __future__ import annotations

SAMPLE_RATE = 22050  # the GPT's and the DVAE's input rate (training clips are resampled to it)
OUTPUT_SAMPLE_RATE = 24000  # the HiFi-GAN decoder's output rate
# XTTSDataset silently skips clips outside these (and substitutes another sample):
MAX_WAV_SAMPLES = 255995  # GPTArgs.max_wav_length, ~11.6 s at 22.05 kHz
MIN_SECONDS = 0.5  # XTTSDataset.load_item drops shorter clips
MAX_TEXT_TOKENS = 200  # GPTArgs.max_text_length, counted on tokenizer.encode(text, lang)
MAX_SECONDS = MAX_WAV_SAMPLES / SAMPLE_RATE
# Conditioning audio GPTTrainer cuts from each clip (coqui's recipe: 3 to 6 s).
MAX_CONDITIONING_SAMPLES = 6 * SAMPLE_RATE
MIN_CONDITIONING_SAMPLES = 3 * SAMPLE_RATE

# VoiceBpeTokenizer.char_limits: longer texts get truncated audio at inference; data prep
# rejects them. Languages not listed get DEFAULT_CHAR_LIMIT.
CHAR_LIMITS = {
    "en": 250,
    "de": 253,
    "fr": 273,
    "es": 239,
    "it": 213,
    "pt": 203,
    "pl": 224,
    "zh": 82,
    "ar": 166,
    "cs": 186,
    "ru": 182,
    "nl": 251,
    "tr": 226,
    "ja": 71,
    "hu": 224,
    "ko": 95,
    "hi": 150,
}
DEFAULT_CHAR_LIMIT = 250

# The DVAE's codebook and the GPT's audio-token layout for XTTS v2 fine-tuning.
N_CODES = 1024
AUDIO_TOKENS = N_CODES + 2  # the codes + start + stop
START_AUDIO_TOKEN, STOP_AUDIO_TOKEN = N_CODES, N_CODES + 1

# The GPT emits ~21.5 audio tokens per second (1024-sample hops at 22.05 kHz); speech runs at
# ~14 characters per second, i.e. ~1.5 tokens per character. Evaluation caps generation at
# this many tokens per character (a margin for slow speech), so a model that never stops (the
# tiny base) yields audio proportional to the text instead of the GPT's maximum (~28 s).
AUDIO_TOKENS_PER_CHAR = 2.5
MIN_AUDIO_TOKENS = 30


def char_limit(language: str) -> int:
    """The most characters XTTS takes in one text of ``language`` ("zh-cn" counts as "zh")."""
    return CHAR_LIMITS.get(language.split("-")[0], DEFAULT_CHAR_LIMIT)
