"""The phase stage against coqui's own recipe, per training step, in one process.

The anchor follows ``recipes/ljspeech/xtts_v2/train_gpt_xtts.py`` of coqui-tts: its GPTArgs,
audio config and GPTTrainerConfig settings (8 loader workers, batch 3, AdamW, lr 5e-6,
MultiStepLR, eval at each epoch's end, start with eval), its data path (``load_tts_samples``,
coqui's ``XTTSDataset`` decoding every clip and running the DVAE at every step), and GPTTrainer
and Trainer as it builds them. For equal work it runs with grad accumulation 1 and no test
sentences, on the same base and dataset as the phase stage; the base's own size fields (layers,
channels, heads) go into GPTArgs, since the recipe's defaults are the full-size model's.

Rounds alternate: "recipe" (as written: coqui's dataset module sets torch to one thread),
"recipe, all cores" (the same with the machine's cores), and the phase stage
(``voicebook.training.run_phase``, same epochs, eval at each epoch's end). Each figure is the
median time between consecutive training steps' ends (a step in the steady state; see
``per_step``), with the mean over the loop including evaluation pauses beside it; start-up does
not count. The median over rounds is reported with the ratio to each recipe variant.
Targets (issue 11): phase <= 0.6x the recipe on the tiny base, <= 0.8x at full size on CPU.

``--profile`` splits a step into loading / mel + codes / forward / backward / optimizer, for
coqui's data path and for the cached one, on the same batches.

    .venv/bin/python benchmarks/bench_recipe.py [--rounds 3] [--epochs 4] [--base tiny|<folder>]
    .venv/bin/python benchmarks/bench_recipe.py --profile [--steps 12]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from voicebook import training
from voicebook.coqui.base import resolve_base
from voicebook.coqui.models import load_config
from voicebook.dataprep.demo import write_demo_dataset

BATCH = 3
CORES = os.cpu_count() or 1


def recipe_config(base: Path, dataset: Path, out: Path, epochs: int):
    """The recipe's GPTTrainerConfig, pointed at ``base`` and ``dataset``."""
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsAudioConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainerConfig

    size = load_config(base).model_args
    model_args = GPTArgs(
        max_conditioning_length=132300,
        min_conditioning_length=66150,
        debug_loading_failures=False,
        max_wav_length=255995,
        max_text_length=200,
        mel_norm_file=str(base / "mel_stats.pth"),
        dvae_checkpoint=str(base / "dvae.pth"),
        xtts_checkpoint=str(base / "model.pth"),
        tokenizer_file=str(base / "vocab.json"),
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        gpt_layers=size.gpt_layers,
        gpt_n_model_channels=size.gpt_n_model_channels,
        gpt_n_heads=size.gpt_n_heads,
        decoder_input_dim=size.decoder_input_dim,
        gpt_number_text_tokens=size.gpt_number_text_tokens,
    )
    dataset_config = BaseDatasetConfig(
        formatter="coqui",
        dataset_name="voicebook",
        path=str(dataset),
        meta_file_train="metadata_train.csv",
        meta_file_val="metadata_eval.csv",
        language="hu",
    )
    return GPTTrainerConfig(
        epochs=epochs,
        output_path=str(out),
        model_args=model_args,
        run_name="GPT_XTTS_v2.0_recipe",
        project_name="XTTS_trainer",
        dashboard_logger="tensorboard",
        logger_uri=None,
        audio=XttsAudioConfig(sample_rate=22050, dvae_sample_rate=22050, output_sample_rate=24000),
        datasets=[dataset_config],
        batch_size=BATCH,
        batch_group_size=48,
        eval_batch_size=BATCH,
        num_loader_workers=8,
        eval_split_max_size=256,
        print_step=50,
        plot_step=100,
        log_model_step=1000,
        save_step=10000,
        save_n_checkpoints=1,
        save_checkpoints=True,
        print_eval=False,
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2},
        lr=5e-06,
        lr_scheduler="MultiStepLR",
        lr_scheduler_params={
            "milestones": [50000 * 18, 150000 * 18, 300000 * 18],
            "gamma": 0.5,
            "last_epoch": -1,
        },
        test_sentences=[],  # equal work: the phase stage synthesises nothing while training
    )


def per_step(stamps: list[float]) -> float:
    """The median time between consecutive step ends: a training step in the steady state.

    The median leaves out the pauses for evaluations and checkpoints, which differ in number:
    the recipe starts with an evaluation in place of its first epoch, the phase stage writes a
    slim best model at each improving eval; ``mean_step`` gives the figure with them."""
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def mean_step(stamps: list[float]) -> float:
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def recipe_run(
    base: Path, dataset: Path, out: Path, epochs: int, threads: int
) -> tuple[float, int]:
    from trainer import Trainer, TrainerArgs
    from TTS.tts.datasets import load_tts_samples
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    config = recipe_config(base, dataset, out, epochs)
    model = GPTTrainer(config)
    torch.set_num_threads(threads)  # after the import that sets one thread, as in the recipe
    train, evals = load_tts_samples(
        config,
        eval_split=True,
        eval_split_max_size=config.eval_split_max_size,
        eval_split_size=config.eval_split_size,
    )
    stamps: list[float] = []
    trainer = Trainer(
        TrainerArgs(restore_path=None, skip_train_epoch=False, start_with_eval=True),
        config,
        output_path=str(out),
        model=model,
        train_samples=train,
        eval_samples=evals,
        parse_command_line_args=False,
        callbacks={"on_train_step_end": lambda _: stamps.append(time.perf_counter())},
    )
    trainer.fit()
    return per_step(stamps), mean_step(stamps)


def phase_run(
    base: Path, dataset: Path, out: Path, epochs: int, n_train: int
) -> tuple[float, float]:
    stamps: list[float] = []

    def on_row(row: dict) -> None:
        if row["split"] == "train":
            stamps.append(time.perf_counter())

    steps_per_epoch = -(-n_train // BATCH)
    params = training.params_for(
        "phase1",
        outputs_dir=str(out),
        dataset_dir=str(dataset),
        base_model=str(base),
        epochs=epochs,
        batch_size=BATCH,
        lr=5e-6,
        eval_every=steps_per_epoch,  # the recipe evaluates at each epoch's end
        save_every=10000,
        keep_checkpoints=1,
    )
    training.run_phase(params, on_row=on_row)
    return per_step(stamps), mean_step(stamps)


def compare(base: Path, rounds: int, epochs: int, n_train: int) -> None:
    variants = {"recipe (as written, 1 thread)": 1, f"recipe on all {CORES} cores": CORES}
    names = [*variants, "phase stage"]
    steady: dict[str, list[float]] = {name: [] for name in names}
    mean: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", n_train=n_train, n_eval=6)
        for i in range(rounds):
            for name in names:
                out = Path(tmp) / f"{i}-{len(steady[name])}-{names.index(name)}"
                if name in variants:
                    step, with_pauses = recipe_run(base, dataset, out, epochs, variants[name])
                else:
                    step, with_pauses = phase_run(base, dataset, out, epochs, n_train)
                steady[name].append(step)
                mean[name].append(with_pauses)
            line = ", ".join(f"{n} {steady[n][-1]:.3f} ({mean[n][-1]:.3f})" for n in names)
            print(f"round {i + 1}: {line} s/step, steady (mean with evals)", flush=True)
    phase = statistics.median(steady["phase stage"])
    for name in names:
        print(
            f"{name:32s}: {statistics.median(steady[name]):.3f} s/step steady, "
            f"{statistics.median(mean[name]):.3f} with evals (median of {rounds})"
        )
    for name in variants:
        ratio = phase / statistics.median(steady[name])
        ratio_mean = statistics.median(mean["phase stage"]) / statistics.median(mean[name])
        print(f"ratio phase / {name}: {ratio:.2f} steady, {ratio_mean:.2f} with evals")


def profile(base: Path, steps: int, n_train: int, device: str = "cpu") -> None:
    """Where a step goes, coqui's data path against the cached one, same batches."""
    from voicebook.coqui.config import gpt_trainer_config, gpt_trainer_model, load_samples

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", n_train=n_train, n_eval=6)
        for cached in (False, True):
            config = gpt_trainer_config(base, dataset, Path(tmp) / "p", batch_size=BATCH)
            model = gpt_trainer_model(config, cached=cached).to(device)
            train, _ = load_samples(config)
            torch.set_num_threads(CORES)
            parts = profile_steps(model, config, train, steps, torch.device(device))
            total = sum(parts.values())
            split = ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())
            name = "cached" if cached else "coqui"
            print(f"{name:7s}: {total / steps:.3f} s/step over {steps} steps: {split}", flush=True)


def profile_steps(model, config, samples, steps: int, device: torch.device) -> dict[str, float]:
    import random

    random.seed(1)
    loader = model.get_data_loader(config, is_eval=False, samples=list(samples), verbose=False)
    model.eval()
    model.xtts.gpt.train()
    optimizer = torch.optim.AdamW(model.xtts.gpt.parameters(), lr=5e-6)
    parts = dict.fromkeys(("loading", "mel + codes", "forward", "backward", "optimizer"), 0.0)
    batches, clock = iter(loader), time.perf_counter
    next(batches)  # warm-up: the cache fills here, once, outside the timings
    for _ in range(steps):
        t0 = clock()
        batch = next(batches, None) or next(batches := iter(loader))
        t1 = clock()
        batch = model.format_batch(batch)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = model.format_batch_on_device(batch)
        t2 = sync(device)
        _, losses = model.train_step(batch, None)
        t3 = sync(device)
        losses["loss"].backward()
        t4 = sync(device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = sync(device)
        for key, span in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            parts[key] += span
    return parts


def sync(device: torch.device) -> float:
    """The clock after the device's queued work (a GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-clips", type=int, default=24)
    parser.add_argument("--base", default="tiny", help="tiny, or a base folder (e.g. full size)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--steps", type=int, default=12, help="profiled steps per data path")
    parser.add_argument("--device", default="cpu", help="--profile on cpu or cuda")
    args = parser.parse_args()
    base = resolve_base(args.base)  # built/cached outside the timings
    if args.profile:
        profile(base, args.steps, args.train_clips, args.device)
    else:
        compare(base, args.rounds, args.epochs, args.train_clips)


if __name__ == "__main__":
    main()
