"""The evaluation's takes: every candidate speaks the test sentences and the stress set
``takes`` times with the same seeds and the same voice, and every take is measured
(``voicebook.measures``): CER, speaker similarity, Distill-MOS, tempo, failure flags.

The stress set holds, per language, what users of XTTS see fail most: 1-3-word prompts,
sentences ending in ``?`` and ``!``, one near the language's character limit, and numbers with
abbreviations. Its takes count in the failure rates; the quality measures (CER, similarity,
MOS, tempo) are the test sentences'.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from voicebook.core.paths import TRAIN_META
from voicebook.core.values import as_structure
from voicebook.measures import scoring as take_scoring
from voicebook.measures import takes as mt
from voicebook.measures.failures import FLAGS

STRESS_SENTENCES = {
    "hu": [
        "Köszönöm.",
        "Na és?",
        "Tényleg ez a helyes válasz?",
        "Ez fantasztikus, gratulálok!",
        "Dr. Kiss 2024-ben 15 kérdésből 12-re válaszolt, kb. 3 perc alatt.",
        (
            "A mai adásban hat versenyző mérkőzik meg egymással, és aki a legtöbb kérdésre "
            "helyesen válaszol a történelem, a földrajz, a zene és a sport témaköréből, az viszi "
            "haza a fődíjat, valamint egy hétvégét a Balaton partján."
        ),
    ],
    "en": [
        "Thanks.",
        "Really?",
        "Is that really the right answer?",
        "That is fantastic, congratulations!",
        "Dr. Smith answered 12 of 15 questions in approx. 3 minutes on 5 May 2024.",
        (
            "Tonight six players compete against each other, and whoever answers the most "
            "questions correctly on history, geography, music and sport takes home the grand "
            "prize, together with a lovely long weekend for two by the sea in Cornwall."
        ),
    ],
}
QUALITY = ("cer", "speaker_similarity", "mos", "rate_error")  # means over the test sentences


def stress_sentences(config: Any) -> list[str]:
    """The stress set to speak: ``config.stress_sentences``, else the language's (none when
    ``config.stress_set`` is off or the language has no default)."""
    if not config.stress_set:
        return []
    given = as_structure(config.stress_sentences)  # papermill -p passes text
    given = [given] if isinstance(given, str) else list(given or [])
    return given or list(STRESS_SENTENCES.get(config.language, []))


def sampler(config: Any) -> mt.Sampler:
    """The evaluation's pinned sampler settings."""
    return mt.Sampler(**config.sampling())


def take_scorer(config: Any, dataset: Path, similarity: Any, transcribe: Any, device: Any):
    """The per-take measures, loaded once per evaluation: ``similarity`` (the held-out clips'
    mean voice), the recogniser, Distill-MOS (``config.mos``) and the speaker's own tempo from
    the train clips."""
    from voicebook.measures.quality import DistillMos

    train = pd.read_csv(Path(dataset) / TRAIN_META, sep="|")
    rate = take_scoring.speaker_rate(zip([Path(dataset) / f for f in train.audio_file],
                                         train.text))  # fmt: skip
    mos = DistillMos(device) if config.mos else None
    return take_scoring.TakeScorer(similarity, transcribe, mos, rate)


def speak(model: Any, name: str, config: Any, voice: Any, out_dir: Path, scorer: Any):
    """``name``'s takes of the test sentences and the stress set, measured: one row per take
    (``candidate`` first)."""
    table = mt.sentence_table(config.sentences(), stress_sentences(config))
    found = mt.synthesize_takes(
        model, table, voice, out_dir, takes=config.takes, seed=config.seed,
        sampler=sampler(config), language=config.language,
        tokens_per_char=config.audio_tokens_per_char,
    )  # fmt: skip
    found.insert(0, "candidate", name)
    return scorer.score(found)


def first_takes(takes: pd.DataFrame) -> pd.DataFrame:
    """The first take of each test sentence: the samples the listening test plays."""
    first = takes[(takes["take"] == 1) & (takes["set"] == "test")]
    keep = ["candidate", "sentence_id", "text", "wav", "audio_s", "synth_s", "codes", "cap",
            "speaker_similarity", "cer"]  # fmt: skip
    return first[[k for k in keep if k in first]].reset_index(drop=True)


def summary(takes: pd.DataFrame) -> dict[str, Any]:
    """A candidate's eval-table numbers from its takes: the quality means over the test
    sentences' takes, the failures per 100 takes (every sentence) and the counts behind them."""
    test = takes[takes["set"] == "test"]
    out = {m: float(test[m].mean()) if m in test and test[m].notna().any() else math.nan
           for m in QUALITY}  # fmt: skip
    for flag in (*FLAGS, "failure"):
        known = takes[flag].dropna() if flag in takes else pd.Series(dtype=bool)
        out[f"{flag}_per_100"] = 100 * known.astype(bool).mean() if len(known) else math.nan
    out["n_takes"] = len(takes)
    out["takes_per_sentence"] = int(takes["take"].max()) if len(takes) else 0
    return out
