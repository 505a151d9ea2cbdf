"""A small prepared dataset cut from the bundled demo corpus, for tests and benchmarks.

The data-prep stage's output format (``wavs/`` plus ``metadata_train.csv`` and
``metadata_eval.csv`` in coqui's ``coqui`` format), without running data prep: the first
``n_train + n_eval`` interview clips, already 22.05 kHz mono, written as 16-bit WAVs.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from voicebook.coqui.limits import SAMPLE_RATE
from voicebook.core.paths import DEMO_DATA_DIR, EVAL_META, TRAIN_META

HEADER = "audio_file|text|speaker_name"


def write_demo_dataset(folder: str | Path, n_train: int = 12, n_eval: int = 3) -> Path:
    """``folder`` holding ``n_train`` + ``n_eval`` demo clips (kept if it is already there)."""
    folder = Path(folder)
    if (folder / EVAL_META).is_file():
        return folder
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    table = DEMO_DATA_DIR / "interview" / "metadata.csv"
    rows = [r.split("|") for r in table.read_text(encoding="utf-8").splitlines()[1:]]
    lines = []
    for flac, text in rows[: n_train + n_eval]:
        audio, rate = sf.read(table.parent / flac)
        if rate != SAMPLE_RATE:
            raise ValueError(
                f"{table.parent / flac} is {rate} Hz; the demo clips are {SAMPLE_RATE}"
            )
        wav = f"wavs/{Path(flac).stem}.wav"
        sf.write(folder / wav, audio, rate, subtype="PCM_16")
        lines.append(f"{wav}|{text}|demo")
    (folder / TRAIN_META).write_text("\n".join([HEADER, *lines[:n_train]]) + "\n")
    (folder / EVAL_META).write_text("\n".join([HEADER, *lines[n_train:]]) + "\n")
    return folder
