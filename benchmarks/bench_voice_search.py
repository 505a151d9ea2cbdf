"""Voice search on a prepared experiment: held-out Mel CE, time per generation and minutes for
every method, and the gain from scoring a population in one batched forward pass.

Run (after ``voicebook run --experiment vs_demo --stages data phase1 -p max_steps 20``):
``.venv/bin/python benchmarks/bench_voice_search.py --experiment vs_demo [--init-from base phase1]``.
Each method runs the whole stage (``run_search``) in its own temporary experiment, on the
experiment's dataset, with the stage notebook's default settings unless overridden.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from voicebook.coqui import latents as coqui
from voicebook.coqui.base import resolve_base
from voicebook.core.device import resolve_device
from voicebook.core.paths import experiment_dir
from voicebook.voice_search import search as vs


def bench_methods(args: argparse.Namespace) -> None:
    exp = experiment_dir(args.experiment)
    print(
        f"{'init_from':<9} {'method':<9} {'start':>8} {'best':>8} {'gain':>7} {'gens':>4} "
        f"{'s/gen':>6} {'search min':>10} {'total min':>9}"
    )
    for init_from in args.init_from:
        checkpoint = vs.resolve_checkpoint(exp, init_from)
        for method in args.methods:
            with tempfile.TemporaryDirectory() as out:
                params = vs.SearchParams(
                    experiment="bench",
                    outputs_dir=out,
                    dataset_dir=str(exp / "dataset"),
                    init_from=str(checkpoint) if checkpoint else "base",
                    method=method,
                    generations=args.generations,
                    population=args.population,
                    step_size=args.step_size,
                    patience=args.patience,
                )
                s = vs.run_search(params).summary
            print(
                f"{init_from:<9} {method:<9} {s['start_mel_ce']:>8.4f} {s['best_mel_ce']:>8.4f} "
                f"{s['start_mel_ce'] - s['best_mel_ce']:>7.4f} {s['generations']:>4} "
                f"{s['seconds_per_generation']:>6.2f} {s['search_minutes']:>10.2f} "
                f"{s['minutes']:>9.2f}"
            )


def bench_batching(args: argparse.Namespace, population: int = 8, minibatch: int = 4) -> None:
    """Candidates scored per second: one forward pass per candidate vs the whole population."""
    exp = experiment_dir(args.experiment)
    base = resolve_base("tiny")
    device = resolve_device("auto")
    train, _ = coqui.clip_samples(base, exp / "dataset", Path(tempfile.mkdtemp()))
    model = coqui.load_frozen_xtts(base, None, device)
    clips = coqui.precompute_clips(model, base, train[:minibatch], device)
    latents, _ = coqui.clip_latents(model, clips.paths)
    latents = latents[torch.arange(population) % len(latents)]
    objective = coqui.LatentObjective(model.gpt)
    with torch.no_grad():
        objective.mel_ce(latents, clips)  # warm-up
        timings = {}
        for name, run in (
            ("one at a time", lambda: [objective.mel_ce(x[None], clips) for x in latents]),
            ("batched", lambda: objective.mel_ce(latents, clips)),
        ):
            start = time.perf_counter()
            for _ in range(args.rounds):
                run()
            timings[name] = args.rounds * population / (time.perf_counter() - start)
    print(
        f"scoring {population} candidates x {minibatch} clips on {device}: "
        + ", ".join(f"{k} {v:.1f} candidates/s" for k, v in timings.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="vs_demo")
    parser.add_argument("--init-from", nargs="+", default=["base"])
    parser.add_argument("--methods", nargs="+", default=list(vs.METHODS))
    parser.add_argument("--generations", type=int, default=vs.SearchParams.generations)
    parser.add_argument("--population", type=int, default=vs.SearchParams.population)
    parser.add_argument("--step-size", type=float, default=vs.SearchParams.step_size)
    parser.add_argument("--patience", type=int, default=vs.SearchParams.patience)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_methods(args)
    bench_batching(args)


if __name__ == "__main__":
    main()
