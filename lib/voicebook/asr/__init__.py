"""Speech recognition (faster-whisper), one module for data prep and the evaluation.

``load_recognizer(asr_model, language, device)`` -> ``Recognizer`` (or None when ``asr_model``
is ``""``): ``.segments(audio)`` with word timestamps and confidences for cutting recordings,
``.text(clip)`` for CER. ``asr_model="base"`` works offline (``voicebook.asr.models``).
"""

from voicebook.asr.models import DEFAULT_ASR_MODEL, AsrModelError, assemble_base, resolve_model
from voicebook.asr.recognizer import Recognizer, Segment, Word, load_recognizer, mean_logprob

__all__ = [
    "DEFAULT_ASR_MODEL",
    "AsrModelError",
    "Recognizer",
    "Segment",
    "Word",
    "assemble_base",
    "load_recognizer",
    "mean_logprob",
    "resolve_model",
]
