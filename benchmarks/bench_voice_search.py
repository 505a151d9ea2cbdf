"""Voice search on a prepared experiment, for every method: each half's effect, the recovery
from a corrupted start, time per generation; and the gain from scoring a population at once.

Run (after ``voicebook run --experiment demo --stages 00_data_prep 01_phase1 02_phase2``):
``.venv/bin/python benchmarks/bench_voice_search.py --experiment demo --init-from base phase2``.
The demo's phases hardly listen to the voice latent (noise of 2x its RMS moves their Mel CE by
~1e-3), so the recovery is also measured on a phase 1 that does (a high lr):
``voicebook run --experiment vsrec --stages 00_data_prep 01_phase1 -p max_steps 8 -p lr 5e-4``,
then ``... bench_voice_search.py --experiment vsrec --init-from phase1 --recovery-only``.

Per model (``--init-from``) the frozen model, clips and start voice are loaded once
(``voice_search.prepare``); per method the two halves run as the stage runs them, with the stage
notebook's default settings unless overridden:

- latent half: validation Mel CE, start -> kept (lower is better);
- speaker half: validation speaker similarity of decoded audio, from the start voice, after the
  latent half (its cross effect: the embedding is still the start's), and kept (higher is better);
- recovery: the reference latent plus noise (``--noise`` x its RMS per element) raises validation
  Mel CE by a gap; ``closed`` is the share of it the latent half closes (patience off,
  ``--recovery-generations``), ``voice_search_recovery``;
- s/gen: seconds per generation of each half.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from voicebook.coqui import latents as coqui
from voicebook.coqui.base import resolve_base
from voicebook.core.device import resolve_device
from voicebook.core.paths import experiment_dir
from voicebook.voice_search import search as vs
from voicebook.voice_search.recovery import recover
from voicebook.voice_search.speaker import TorchSpeakerEncoder, decoded_similarity, speaker_data

HEADER = (
    f"{'init_from':<9} {'method':<9} {'mel start':>9} {'mel kept':>9} {'sim start':>9} "
    f"{'sim +lat':>9} {'sim kept':>9} {'corrupt':>8} {'recov':>8} {'closed':>7} "
    f"{'s/gen lat':>9} {'s/gen spk':>9} {'min':>5}"
)


def start_similarity(setup: vs.Setup, params: vs.SearchConfig) -> float:
    """Validation similarity of the start voice (its latent's decoded windows, its embedding)."""
    data = speaker_data(
        setup.model, coqui, setup.start[0], setup.clips, params.speaker_window_s, setup.scorer
    )
    decode = lambda latents, embeddings: coqui.decode(setup.model, latents, embeddings)
    with torch.no_grad():
        score = decoded_similarity(
            decode, coqui.decoder_sample_rate(setup.model), TorchSpeakerEncoder(setup.scorer),
            setup.start[1].reshape(1, -1, 1), data["eval_windows"], data["eval_voice"],
        )  # fmt: skip
    return float(score[0])


def bench_recovery(args: argparse.Namespace) -> None:
    """Only the corrupted-start recovery, per model and method (cheap: no decoding)."""
    exp = experiment_dir(args.experiment)
    print(f"{'init_from':<9} {'method':<9} {'reference':>9} {'corrupt':>8} {'gap':>7} "
          f"{'recov':>8} {'closed':>7} {'gens':>4} {'s/gen':>6}")  # fmt: skip
    for init_from in args.init_from:
        params = vs.SearchConfig(experiment=args.experiment, init_from=init_from,
                                 population=args.population, search_speaker=False)  # fmt: skip
        setup = vs.prepare(params, exp, Path(tempfile.mkdtemp()))
        for method in args.methods:
            p = dataclasses.replace(params, method=method, patience=0,
                                    generations=args.recovery_generations)  # fmt: skip
            r = recover(p, setup, args.noise)
            print(
                f"{init_from:<9} {method:<9} {r.reference_mel_ce:>9.4f} {r.corrupted_mel_ce:>8.4f} "
                f"{r.corrupted_mel_ce - r.reference_mel_ce:>7.4f} {r.recovered_mel_ce:>8.4f} "
                f"{r.closed:>7.0%} {r.generations:>4} {r.seconds_per_generation:>6.2f}",
                flush=True,
            )


def bench_methods(args: argparse.Namespace) -> None:
    exp = experiment_dir(args.experiment)
    print(HEADER)
    for init_from in args.init_from:
        work = Path(tempfile.mkdtemp())
        params = vs.SearchConfig(
            experiment=args.experiment, init_from=init_from, population=args.population,
            generations=args.generations, speaker_generations=args.speaker_generations,
        )  # fmt: skip
        setup = vs.prepare(params, exp, work)
        sim_start = start_similarity(setup, params)
        for method in args.methods:
            p = dataclasses.replace(params, method=method)
            started = time.perf_counter()
            latent = vs.latent_half(p, setup)
            speaker = vs.speaker_half(p, setup, latent.value)
            minutes = (time.perf_counter() - started) / 60
            lat, spk = latent.outcome, speaker.outcome
            r = recover(dataclasses.replace(p, patience=0, generations=args.recovery_generations),
                        setup, args.noise)  # fmt: skip
            print(
                f"{init_from:<9} {method:<9} {lat.start_heldout:>9.4f} {lat.best_heldout:>9.4f} "
                f"{sim_start:>9.4f} {1 - spk.start_heldout:>9.4f} {1 - spk.best_heldout:>9.4f} "
                f"{r.corrupted_mel_ce:>8.4f} {r.recovered_mel_ce:>8.4f} {r.closed:>7.0%} "
                f"{lat.curves['seconds'].iloc[1:].mean():>9.2f} "
                f"{spk.curves['seconds'].iloc[1:].mean():>9.2f} {minutes:>5.1f}",
                flush=True,
            )
        print(f"{init_from}: reference (uncorrupted) validation Mel CE {r.reference_mel_ce:.4f}")


def bench_batching(args: argparse.Namespace, population: int = 8, minibatch: int = 4) -> None:
    """Candidates scored per second: one forward pass per candidate vs the whole population."""
    exp = experiment_dir(args.experiment)
    base = resolve_base("tiny")
    device = resolve_device("auto")
    train, _ = coqui.clip_samples(base, exp / "dataset", Path(tempfile.mkdtemp()), "hu")
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
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--init-from", nargs="+", default=["base"])
    parser.add_argument("--methods", nargs="+", default=list(vs.METHODS))
    parser.add_argument("--generations", type=int, default=vs.SearchConfig.generations)
    parser.add_argument("--speaker-generations", type=int, default=vs.SearchConfig.speaker_generations)  # fmt: skip
    parser.add_argument("--population", type=int, default=vs.SearchConfig.population)
    parser.add_argument("--noise", type=float, default=2.0)
    parser.add_argument("--recovery-generations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-batching", action="store_true")
    parser.add_argument("--recovery-only", action="store_true", help="only bench_recovery")
    args = parser.parse_args()
    if args.recovery_only:
        return bench_recovery(args)
    bench_methods(args)
    if not args.no_batching:
        bench_batching(args)


if __name__ == "__main__":
    main()
