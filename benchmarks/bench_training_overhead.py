"""What the phase stage adds over a bare coqui-tts training script, per training step.

Runs the same tiny config (tiny base, same clips, batch, lr, eval and save intervals, epochs) as
a bare ``Trainer(...).fit()`` script and as ``voicebook.training.run_phase``, alternating, in one
process, and prints the mean wall time per step over each training loop (first to last step, so
evaluations and checkpoints inside the loop count; start-up does not) and their ratio.
Target: the phase stage adds no more than 5%.

    .venv/bin/python benchmarks/bench_training_overhead.py [--epochs 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from voicebook import training
from voicebook.coqui.base import resolve_base
from voicebook.coqui.config import gpt_trainer_config, load_samples
from voicebook.dataprep.demo import write_demo_dataset

CONFIG = {
    "lr": 5e-4,
    "batch_size": 3,
    "eval_every": 10,
    "save_every": 20,
    "keep_checkpoints": 2,
    "seed": 1,
}


def per_step(stamps: list[float]) -> float:
    """Mean seconds per step between the first and the last step's end."""
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def bare_run(dataset: Path, out: Path, epochs: int) -> tuple[float, int]:
    """The coqui-tts script a person would write by hand, timed at each step's end."""
    from trainer import Trainer, TrainerArgs
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    stamps: list[float] = []
    config = gpt_trainer_config(
        resolve_base("tiny"), dataset, out,
        **training.Phase1Config(epochs=epochs, **CONFIG).trainer_settings("run", 0),
    )  # fmt: skip
    model = GPTTrainer(config)
    train, evals = load_samples(config)
    trainer = Trainer(
        TrainerArgs(),
        config,
        output_path=out,
        model=model,
        train_samples=train,
        eval_samples=evals,
        parse_command_line_args=False,
        callbacks={"on_train_step_end": lambda _: stamps.append(time.perf_counter())},
    )
    trainer.fit()
    return per_step(stamps), len(stamps)


def phase_run(dataset: Path, out: Path, epochs: int) -> tuple[float, int]:
    """The same training as a phase-1 stage (recording, guards, best-at-every-eval, status)."""
    stamps: list[float] = []

    def on_row(row: dict) -> None:
        if row["split"] == "train":
            stamps.append(time.perf_counter())

    params = training.params_for(
        "phase1", outputs_dir=str(out), dataset_dir=str(dataset), epochs=epochs, **CONFIG
    )
    training.run_phase(params, on_row=on_row)
    return per_step(stamps), len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    resolve_base("tiny")  # build/cache outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", n_train=24, n_eval=6)
        bare, phase = [], []
        for i in range(args.rounds):
            seconds, steps = bare_run(dataset, Path(tmp) / f"bare{i}", args.epochs)
            bare.append(seconds)
            seconds_phase, steps_phase = phase_run(dataset, Path(tmp) / f"phase{i}", args.epochs)
            phase.append(seconds_phase)
            print(
                f"round {i + 1}: bare {seconds:.3f} s/step ({steps} steps), "
                f"phase {seconds_phase:.3f} s/step ({steps_phase} steps)"
            )
    b, p = statistics.median(bare), statistics.median(phase)
    ratio = p / b
    print(f"bare coqui-tts script : {b:.3f} s/step (median of {args.rounds})")
    print(f"phase stage           : {p:.3f} s/step (median of {args.rounds})")
    print(
        f"ratio phase/bare      : {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target <= +5%: "
        f"{'met' if ratio <= 1.05 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
