"""The phase stage against coqui's own recipe: per training step in one process, and as whole
processes.

The anchor follows ``recipes/ljspeech/xtts_v2/train_gpt_xtts.py`` of coqui-tts: its GPTArgs,
audio config and GPTTrainerConfig settings (8 loader workers, batch 3, AdamW, lr 5e-6,
MultiStepLR, eval at each epoch's end, start with eval), its data path (``load_tts_samples``,
coqui's ``XTTSDataset`` decoding every clip and running the DVAE at every step), and GPTTrainer
and Trainer as it builds them. For equal work it runs with grad accumulation 1 and no test
sentences, on the same base and dataset as the phase stage; the base's own size fields (layers,
channels, heads) go into GPTArgs, since the recipe's defaults are the full-size model's.

**Equal cadence.** The recipe evaluates, and saves a best model when the eval loss improved,
only at an epoch's end (coqui's Trainer saves no best model after its step evaluations), and
writes no periodic checkpoint before its ``save_step`` 10000. So its cadence is set by the epoch
length: ``--eval-every N`` gives it N x 3 training clips (an epoch of N steps). The phase stage
gets ``eval_every=N`` (a best model at each improving evaluation, written in the background)
and ``save_every`` 10000 too. Both start with an evaluation (the recipe's ``start_with_eval``
spends its first epoch on it).

Rounds alternate: "recipe" (as written: coqui's dataset module sets torch to one thread),
"recipe, all cores" (the same with the machine's cores), and the phase stage
(``voicebook.training.run_phase``). **Headline: the mean time per step with the pauses**
(evaluations, best-model saves: first to last step's end, divided by the steps between); the
median step (the steady state) is beside it. Start-up does not count here; ``--whole`` counts it.
Targets (issue 25): with pauses <= 0.8x the recipe at full size on CPU with an eval every 4 steps.

``--whole`` times whole processes on the tiny base: ``papermill 01_phase1.ipynb`` (kernel start,
imports, model build, cache checks, first eval, training, export, scraps) against a script that
follows the recipe, both for ``--steps`` steps at the same cadence; it prints where the phase
notebook's time goes. Target (issue 25): <= 0.5x at 200 steps.

``--profile`` splits a step into loading / mel + codes / forward / backward / optimizer, for
coqui's data path and for the cached one, on the same batches.

    .venv/bin/python benchmarks/bench_recipe.py [--rounds 3] [--epochs 4] [--eval-every 8]
    .venv/bin/python benchmarks/bench_recipe.py --base <full-size folder> --eval-every 4 --epochs 3 \
        --rounds 1 --all-cores-only
    .venv/bin/python benchmarks/bench_recipe.py --whole [--steps 200] [--lib other/checkout/lib]
    (--lib: the phase stage from another checkout, for before/after; each side runs in a process
    of its own)
    .venv/bin/python benchmarks/bench_recipe.py --profile [--steps 12]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# voicebook is imported where it is used: ``--recipe-process`` (the recipe as a script of its
# own, for --whole) imports what such a script imports, and nothing of voicebook.

BATCH = 3
CORES = os.cpu_count() or 1
REPO = Path(__file__).resolve().parents[1]


def recipe_model_args(base: Path):
    """The recipe's GPTArgs, with the base's files and its size fields."""
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs

    size = json.loads((base / "config.json").read_text())["model_args"]
    return GPTArgs(
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
        gpt_layers=size["gpt_layers"],
        gpt_n_model_channels=size["gpt_n_model_channels"],
        gpt_n_heads=size["gpt_n_heads"],
        decoder_input_dim=size["decoder_input_dim"],
        gpt_number_text_tokens=size["gpt_number_text_tokens"],
    )


def recipe_config(base: Path, dataset: Path, out: Path, epochs: int):
    """The recipe's GPTTrainerConfig, pointed at ``base`` and ``dataset``."""
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsAudioConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainerConfig

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
        model_args=recipe_model_args(base),
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
    from voicebook import training

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


def compare(
    base: Path, rounds: int, epochs: int, eval_every: int, all_cores_only: bool, lib: Path
) -> None:
    """Per step, each side in a process of its own (at full size one side's leftover memory
    would crowd the other's), the phase stage importing ``lib``."""
    from voicebook.dataprep.demo import write_demo_dataset

    n_train = eval_every * BATCH  # an epoch of eval_every steps: the recipe's eval and save cadence
    variants = {"recipe (as written, 1 thread)": 1, f"recipe on all {CORES} cores": CORES}
    if all_cores_only:  # the full-size target is against this one
        del variants["recipe (as written, 1 thread)"]
    names = [*variants, "phase stage"]
    steady: dict[str, list[float]] = {name: [] for name in names}
    mean: dict[str, list[float]] = {name: [] for name in names}
    print(f"base {base}; {n_train} train clips, batch {BATCH}: eval (and best) every {eval_every}")
    print(f"phase stage from {lib.resolve()}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", n_train=n_train, n_eval=6)
        for i in range(rounds):
            for name in names:
                out = Path(tmp) / f"{i}-{names.index(name)}"
                threads = variants.get(name, 0)  # 0: the phase stage
                side = [str(base), str(dataset), str(out), str(epochs), str(n_train), str(threads)]
                step, with_pauses = _side_process(side, lib)
                steady[name].append(step)
                mean[name].append(with_pauses)
            line = ", ".join(f"{n} {mean[n][-1]:.3f} ({steady[n][-1]:.3f})" for n in names)
            print(f"round {i + 1}: {line} s/step with pauses (steady)", flush=True)
    report(names, variants, mean, steady, rounds)


def _side_process(side: list[str], lib: Path) -> tuple[float, float]:
    """Run one side (``side_process``) in its own process, ``lib`` first on its path; its
    steady and with-pauses s/step."""
    run = _measuring().run_measured("code", _SIDE, side, lib)
    result = next((line for line in reversed(run.output.splitlines()) if line.startswith("{")), "")
    if run.returncode != 0 or not result:
        raise SystemExit(f"a side of the comparison failed ({side}):\n{run.output[-3000:]}")
    figures = json.loads(result)
    return figures["steady"], figures["with_pauses"]


def _measuring():
    """``tests/fullsize.py``: runs a snippet in a subprocess with another lib first on its path
    (``run_measured``) and measures it."""
    sys.path.insert(0, str(REPO / "tests"))
    import fullsize

    return fullsize


def side_process(argv: list[str]) -> None:
    """``BASE DATASET OUT EPOCHS N_TRAIN THREADS``: one side of ``compare`` (THREADS 0: the
    phase stage), printing its figures as JSON."""
    base, dataset, out, epochs, n_train, threads = argv
    paths = (Path(base), Path(dataset), Path(out), int(epochs))
    if int(threads):
        step, with_pauses = recipe_run(*paths, int(threads))
    else:
        step, with_pauses = phase_run(*paths, int(n_train))
    print(json.dumps({"steady": step, "with_pauses": with_pauses}))


def report(names, variants, mean, steady, rounds) -> None:
    med = {n: statistics.median(mean[n]) for n in names}
    med_steady = {n: statistics.median(steady[n]) for n in names}
    for name in names:
        print(
            f"{name:32s}: {med[name]:.3f} s/step with pauses, {med_steady[name]:.3f} steady "
            f"(median of {rounds})"
        )
    for name in variants:
        ratio, ratio_steady = (
            med["phase stage"] / med[name],
            med_steady["phase stage"] / med_steady[name],
        )
        print(f"HEADLINE ratio phase / {name}: {ratio:.2f} with pauses ({ratio_steady:.2f} steady)")


def profile(base: Path, steps: int, n_train: int, device: str = "cpu") -> None:
    """Where a step goes, coqui's data path against the cached one, same batches."""
    from voicebook.coqui.config import gpt_trainer_config, gpt_trainer_model, load_samples
    from voicebook.dataprep.demo import write_demo_dataset
    from voicebook.training import Phase1Config

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", n_train=n_train, n_eval=6)
        for cached in (False, True):
            config = gpt_trainer_config(
                base, dataset, Path(tmp) / "p",
                **Phase1Config(batch_size=BATCH).trainer_settings("run", 0),
            )  # fmt: skip
            model = gpt_trainer_model(config, cached=cached).to(device)
            train, _ = load_samples(config)
            torch.set_num_threads(CORES)
            parts = profile_steps(model, config, train, steps, torch.device(device), cached)
            total = sum(parts.values())
            split = ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())
            name = "cached" if cached else "coqui"
            print(f"{name:7s}: {total / steps:.3f} s/step over {steps} steps: {split}", flush=True)


def profile_steps(
    model, config, samples, steps: int, device: torch.device, cached: bool
) -> dict[str, float]:
    import random

    random.seed(1)
    loader = model.get_data_loader(config, is_eval=False, samples=list(samples), verbose=False)
    model.eval()
    model.xtts.gpt.train()
    # each data path with its side's AdamW: the recipe's (foreach), the phase stage's (fused)
    optimizer = torch.optim.AdamW(model.xtts.gpt.parameters(), lr=5e-6, fused=cached)
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


NOTEBOOK = REPO / "notebooks" / "01_phase1.ipynb"


def recipe_process(argv: list[str]) -> None:
    """``--recipe-process BASE DATASET OUT EPOCHS``: the recipe as its own script (for --whole)."""
    base, dataset, out, epochs = argv
    step, with_pauses = recipe_run(Path(base), Path(dataset), Path(out), int(epochs), threads=1)
    print(f"recipe: {step:.3f} s/step steady, {with_pauses:.3f} with pauses")


def whole(base: Path, steps: int, eval_every: int, rounds: int, lib: Path) -> None:
    """Whole processes: the phase notebook under papermill against the recipe as a script."""
    fullsize = _measuring()  # run_measured: a subprocess's wall time and its train rows' times

    from voicebook.dataprep.demo import write_demo_dataset

    epochs = -(-steps // eval_every)  # an epoch of eval_every steps (see the module doc)
    print(f"whole processes, {steps} steps, eval (and best) every {eval_every}; base {base}")
    print(f"lib {lib.resolve()} (the notebook's kernel and the recipe script import it)")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_demo_dataset(Path(tmp) / "dataset", eval_every * BATCH, n_eval=6)
        seconds: dict[str, list[float]] = {"recipe script": [], "phase notebook": []}
        for i in range(rounds):
            out = Path(tmp) / str(i)
            args = [str(base), str(dataset), str(out / "recipe"), str(epochs + 1)]  # +1: eval
            recipe = fullsize.run_measured("code", _RECIPE, args, lib)
            assert recipe.returncode == 0, recipe.output[-3000:]
            phase = _notebook_run(fullsize, (base, dataset, out, lib), steps, epochs, eval_every)
            seconds["recipe script"].append(recipe.seconds)
            seconds["phase notebook"].append(phase.seconds)
            print(f"round {i + 1}: recipe {recipe.seconds:.1f} s, phase {phase.seconds:.1f} s")
            _breakdown(phase, out)
    recipe_s, phase_s = (statistics.median(v) for v in seconds.values())
    print(
        f"HEADLINE whole process, {steps} steps: phase notebook {phase_s:.1f} s, recipe script "
        f"{recipe_s:.1f} s: {phase_s / recipe_s:.2f}x (median of {rounds})"
    )


_RECIPE = f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench_recipe; "
_RECIPE += "bench_recipe.recipe_process(sys.argv[1:])"
_SIDE = _RECIPE.replace("recipe_process", "side_process")


def _notebook_run(fullsize, where, steps, epochs, eval_every):
    base, dataset, out, lib = where
    values = {
        "experiment": "whole",
        "outputs_dir": str(out),
        "base_model": str(base),
        "dataset_dir": str(dataset),
        "lr": 5e-6,
        "epochs": epochs,
        "max_steps": steps,
        "batch_size": BATCH,
        "eval_every": eval_every,
        "save_every": 10000,  # the recipe's save_step: no periodic checkpoint inside the run
        "keep_checkpoints": 1,
        "device": "cpu",
    }
    args = [str(NOTEBOOK), str(out / "phase1.ipynb"), "-k", "voicebook", "--cwd"]
    args += [str(NOTEBOOK.parent)]
    for name, value in values.items():
        args += ["-p", name, str(value)]
    run = fullsize.run_measured("module", "papermill", args, lib, watch=out / "whole" / "phase1")
    assert run.returncode == 0, run.output[-3000:]
    return run


def _breakdown(run, out: Path) -> None:
    """Where the phase notebook's process spends its time, from papermill's cell times, the
    phase's ``startup_seconds`` and the time its first train row appeared."""
    import datetime

    import nbformat

    nb = nbformat.read(out / "phase1.ipynb", as_version=4)
    when = datetime.datetime.fromisoformat
    start = when(nb.metadata.papermill.start_time)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    first_cell = when(cells[0].metadata.papermill.start_time)
    end = when(nb.metadata.papermill.end_time)
    status = json.loads((out / "whole" / "phase1" / "status.json").read_text())
    startup = status.get("startup_seconds", {})
    parts = {"python + papermill start": run.seconds - (end - start).total_seconds()}
    parts["kernel start"] = (first_cell - start).total_seconds()
    for index, cell in enumerate(cells):
        duration = cell.metadata.papermill.duration or 0.0
        if "run_phase" in cell.source:
            parts.update({f"  run_phase: {k}": v for k, v in startup.items()})
            parts["  run_phase: training + final eval"] = duration - sum(startup.values())
        else:
            parts[f"cell {index + 1}: {cell.source.splitlines()[0][:40]}"] = duration
    first_row = run.train_row_times[0] if run.train_row_times else float("nan")
    for name, value in parts.items():
        print(f"    {name:52s} {value:7.2f} s")
    print(f"    first train row at {first_row:.1f} s of {run.seconds:.1f} s (0.2 s polling)")


def main() -> None:
    if sys.argv[1:2] == ["--recipe-process"]:
        recipe_process(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-clips", type=int, default=24, help="--profile's clips")
    parser.add_argument(
        "--eval-every", type=int, default=8, help="steps between evals (and best saves)"
    )
    parser.add_argument("--whole", action="store_true", help="whole processes, tiny base")
    parser.add_argument(
        "--lib", type=Path, default=REPO / "lib", help="the checkout's lib the phase stage runs"
    )
    parser.add_argument("--base", default="tiny", help="tiny, or a base folder (e.g. full size)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--steps", type=int, default=None, help="--profile: steps per data path (12); --whole: 200"
    )
    parser.add_argument("--device", default="cpu", help="--profile on cpu or cuda")
    parser.add_argument(
        "--all-cores-only", action="store_true", help="skip the recipe as written (1 thread)"
    )
    args = parser.parse_args()
    from voicebook.coqui.base import resolve_base

    base = resolve_base(args.base)  # built/cached outside the timings
    if args.profile:
        profile(base, args.steps or 12, args.train_clips, args.device)
    elif args.whole:
        whole(base, args.steps or 200, args.eval_every, args.rounds, args.lib)
    else:
        compare(base, args.rounds, args.epochs, args.eval_every, args.all_cores_only, args.lib)


if __name__ == "__main__":
    main()
