"""Evaluation speed on this machine: speaker-similarity throughput and synthesis real-time factor.

Run: ``.venv/bin/python benchmarks/bench_evaluation.py [--clips 40]``. Targets: similarity at
least 20 clips/s on 2 CPU cores. Synthesis is timed on the tiny base with the evaluation's
generation cap; its RTF says how the code path performs, not how fast real XTTS speaks.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from voicebook.coqui.base import resolve_base
from voicebook.coqui.models import load_xtts
from voicebook.coqui.tiny import demo_corpus_clips
from voicebook.evaluation import measures as em
from voicebook.evaluation import scoring as ev

SIMILARITY_TARGET = 20.0  # clips per second


def bench_similarity(n_clips: int) -> float:
    clips = demo_corpus_clips(limit=n_clips + 3)
    scorer = ev.SpeakerSimilarity(clips[:3])
    scorer.score(clips[3:4])  # warm-up (first resample, first LSTM call)
    todo = clips[3 : 3 + n_clips]
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = scorer.score(todo)
    rate = len(todo) / (time.perf_counter() - start)
    cpu_ms = 1000 * (time.process_time() - cpu_start) / len(todo)
    print(
        f"speaker similarity: {rate:.1f} clips/s over "
        f"{len(todo)} demo clips (target >= {SIMILARITY_TARGET:.0f}: "
        f"{'met' if rate >= SIMILARITY_TARGET else 'MISSED'}); {cpu_ms:.0f} CPU-ms per clip; "
        f"mean similarity to the speaker {scores.mean():.3f}"
    )
    return rate


def bench_synthesis(tmp_dir: str) -> float:
    from pathlib import Path

    base = resolve_base("tiny")
    model = load_xtts(base)
    refs = demo_corpus_clips(limit=2)
    sentences = ev.default_test_sentences("hu")
    em.synthesize(model, sentences[:1], refs, Path(tmp_dir) / "warmup")
    samples = em.synthesize(model, sentences, refs, Path(tmp_dir) / "bench")
    rtf = ev.real_time_factor(samples)
    print(
        f"synthesis (tiny base, capped at {ev.AUDIO_TOKENS_PER_CHAR} audio tokens/char): "
        f"RTF {rtf:.2f} over {len(samples)} sentences, {samples.audio_s.sum():.1f} s of audio "
        f"in {samples.synth_s.sum():.1f} s"
    )
    return rtf


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=40, help="clips for the similarity timing")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}")
    bench_similarity(args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        bench_synthesis(tmp)


if __name__ == "__main__":
    main()
