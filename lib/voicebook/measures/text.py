"""Text measures of a take: the character error rate of what a recogniser heard, and the
normalisation CER and the failure flags share (lower case, no punctuation)."""

from __future__ import annotations

import re
import unicodedata


def normalise_for_cer(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character edit distance over the reference length, after lower-casing and dropping
    punctuation (so 1.0 can be exceeded by a long wrong hypothesis)."""
    from torchaudio.functional import edit_distance

    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    if not ref:
        raise ValueError("Cannot compute a CER against an empty reference text.")
    return edit_distance(list(ref), list(hyp)) / len(ref)
