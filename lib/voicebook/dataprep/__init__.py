"""The data-prep stage: raw recordings from several sources into one clean, explained dataset.

``prepare_dataset(DataPrepConfig(...), dataset_dir, tokenizer)`` writes ``wavs/``,
``metadata_train.csv`` / ``metadata_eval.csv`` (coqui formatter ``coqui``), ``rejected.csv``,
``clips.csv``, ``card.json`` and ``card.html``. Modules, in the order the data flows:

- ``sources``  read a source folder into jobs and early rejections (metadata.csv, subtitles, VAD)
- ``segments`` subtitle parsing, cue merging / splitting, voice activity
- ``transcribe`` untranscribed recordings: Whisper's words cut into clips, confidence, speaker
- ``review``   the ASR transcripts as a folder a person can correct and feed back
- ``process``  per job: decode, cut, trim, check, normalise loudness, write WAV (worker side)
- ``audio``    / ``text``: the audio and transcript checks themselves
- ``dataset``  orchestration, duplicates, stratified eval split, accounting, writing
- ``card``     card.json contents, quality rating rules, card.html with plotly charts
"""

from voicebook.dataprep.audio import AudioProblem
from voicebook.dataprep.card import (
    QUALITY_TIERS,
    card_figures,
    card_tables,
    rate_quality,
    show_voice_warnings,
    voice_warnings,
)
from voicebook.dataprep.config import DataPrepConfig, SourceSpec
from voicebook.dataprep.dataset import DatasetResult, account, eval_split, prepare_dataset
from voicebook.dataprep.sources import SourceError, describe_sources
from voicebook.dataprep.text import TextChecker, normalise_text

__all__ = [
    "QUALITY_TIERS",
    "AudioProblem",
    "DataPrepConfig",
    "DatasetResult",
    "SourceError",
    "SourceSpec",
    "TextChecker",
    "account",
    "card_figures",
    "card_tables",
    "describe_sources",
    "eval_split",
    "normalise_text",
    "prepare_dataset",
    "rate_quality",
    "show_voice_warnings",
    "voice_warnings",
]
