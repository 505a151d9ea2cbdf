"""Speech-recognition speed and accuracy: ``voicebook.asr`` (faster-whisper) as data prep and
the evaluation run it.

Two recordings, made once: the demo's Hungarian interview clips joined with 0.6 s pauses
(``--seconds`` long, 100 s by default), and English espeak-ng speech of the same length. Each
is transcribed the way data prep does it (VAD, word timestamps, beam 5) and the way the
evaluation's CER does it (one clip at a time: here the demo clips one by one), and the script
prints x real time (audio seconds per wall-clock second; the first call, which warms the model
up, is left out) and the CER against the spoken text. ``audio_s_per_cpu_s`` divides by the CPU time the process
used instead (all of CTranslate2's threads): on a machine shared with other jobs the wall clock
says more about the neighbours than about the model.

Usage::

    .venv/bin/python benchmarks/bench_asr.py [--model base] [--threads 2] [--seconds 100]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import time

import numpy as np
import pandas as pd

from voicebook.asr import load_recognizer
from voicebook.core.paths import DEMO_DATA_DIR
from voicebook.dataprep.audio import decode
from voicebook.measures.text import character_error_rate

ENGLISH = (
    "The weather was lovely this morning, so we walked down to the market. I bought fresh "
    "bread and a few apples for the week. Later we met some old friends near the river, and "
    "they told us about their long trip across the mountains. Next question: which river flows "
    "through the heart of London? Honestly, I think everyone can win a little tonight."
)
PAUSE_S = 0.6


def demo_interview(seconds: float) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """The demo's interview clips at 16 kHz, joined with pauses up to ``seconds``."""
    table = pd.read_csv(DEMO_DATA_DIR / "interview" / "metadata.csv", sep="|")
    clips, texts, total = [], [], 0.0
    for row in table.itertuples():
        clip = decode(DEMO_DATA_DIR / "interview" / row.audio_file, 16000).samples
        if total + len(clip) / 16000 > seconds:
            break
        clips.append(clip)
        texts.append(row.text)
        total += len(clip) / 16000 + PAUSE_S
    gap = np.zeros(int(PAUSE_S * 16000), np.float32)
    return np.concatenate([x for c in clips for x in (c, gap)]), texts, clips


def english(seconds: float) -> tuple[np.ndarray, str]:
    wav = subprocess.run(["espeak-ng", "-v", "en", "--stdout", ENGLISH], check=True,
                         capture_output=True).stdout  # fmt: skip
    import soundfile as sf
    import soxr

    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    y = soxr.resample(y, sr, 16000)
    repeats = max(1, int(seconds // (len(y) / 16000 + PAUSE_S)))
    gap = np.zeros(int(PAUSE_S * 16000), np.float32)
    return np.concatenate([y, gap] * repeats), " ".join([ENGLISH] * repeats)


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process: all of CTranslate2's threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    args = parser.parse_args()
    (hu, hu_texts, hu_clips), (en, en_text) = demo_interview(args.seconds), english(args.seconds)
    (_, load_s, _) = timed(load_recognizer, args.model, "hu", args.device, args.threads)
    recognizers = {
        lang: load_recognizer(args.model, lang, args.device, args.threads) for lang in ("hu", "en")
    }
    for r in recognizers.values():
        r.beam_size = args.beam
    recognizers["hu"].segments(hu[: 16000 * 5])  # warm-up, not timed
    print(
        f"model {args.model} on {args.device}, {args.threads} threads, beam {args.beam}; loaded in {load_s:.1f} s"
    )
    rows = []
    for lang, audio, said in (("hu", hu, " ".join(hu_texts)), ("en", en, en_text)):
        segments, took, cpu = timed(recognizers[lang].segments, audio)
        heard = " ".join(s.text for s in segments)
        rows.append({"recording": f"{lang} {len(audio) / 16000:.0f} s", "way": "data prep",
                     "segments": len(segments), "x_real_time": len(audio) / 16000 / took,
                     "audio_s_per_cpu_s": len(audio) / 16000 / cpu,
                     "cer": character_error_rate(said, heard)})  # fmt: skip
    start, cpu, cers = time.perf_counter(), time.process_time(), []
    for clip, text in zip(hu_clips, hu_texts):
        cers.append(character_error_rate(text, recognizers["hu"].text(clip)))
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    audio_s = sum(len(c) for c in hu_clips) / 16000
    rows.append({"recording": f"hu {len(hu_clips)} clips, {audio_s:.0f} s", "way": "CER, per clip",
                 "segments": len(hu_clips), "x_real_time": audio_s / took,
                 "audio_s_per_cpu_s": audio_s / cpu, "cer": float(np.mean(cers))})  # fmt: skip
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
