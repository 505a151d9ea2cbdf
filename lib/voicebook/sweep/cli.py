"""``voicebook sweep``: the command line into a sweep and its resources; exit 0, 1 (a trial
failed: the same command again re-runs only it) or 2 (a wrong request)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from voicebook import runner
from voicebook.core.fileio import FolderBusy
from voicebook.core.values import parse_value
from voicebook.sweep.spec import SweepError, SweepSpec
from voicebook.sweep.tuner import Resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``voicebook sweep``'s arguments."""
    add = parser.add_argument
    add("--name", required=True, help="outputs/<name>/ holds the whole sweep")
    add(
        "-p",
        "--param",
        nargs="+",
        action="append",
        default=[],
        metavar="KEY V",
        help="KEY V1 [V2 ...]: one value is fixed, several are a grid axis",
    )
    add("--trials", help="YAML list of parameter sets, one per trial (crossed with axes)")
    add("-f", "--params-file", action="append", default=[], help="fixed parameters")
    add("--stages", nargs="+", help=f"default all: {' '.join(runner.STAGES)}")
    add("--address", help="a running Ray cluster, HEAD_IP:6379 (default: a new one here)")
    add("--gpus-per-trial", type=float, help="default 1 with GPUs, else 0")
    add("--cpus-per-trial", type=float, default=Resources.cpus_per_trial)
    add("--outputs-dir", help="default $VOICEBOOK_OUTPUTS or outputs/ (shared on a cluster)")
    add("--storage", help="Tune's storage: default the sweep folder; a URI on a cluster")
    add(
        "--scheduler",
        choices=["asha", "none"],
        default=Resources.scheduler,
        help="asha: stop trials whose eval Mel CE falls behind",
    )
    add(
        "--grace-steps",
        type=int,
        default=Resources.grace_steps,
        help="ASHA judges no trial before this many training steps",
    )
    add("--reduction-factor", type=float, default=Resources.reduction_factor)  # fmt: skip


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    fixed: dict[str, Any] = {}
    for file in args.params_file:
        fixed.update(runner.load_params_file(file))
    axes: dict[str, list[Any]] = {}
    for key, *values in args.param:
        if not values or key in axes:
            raise SweepError(f"-p {key}: give a value, and each -p KEY once (V1 V2 ... for a grid)")
        if len(values) == 1:
            fixed[key] = parse_value(values[0])
        else:
            axes[key] = [parse_value(v) for v in values]
    listed = load_trials(Path(args.trials)) if args.trials else []
    for key in [*axes, *(k for t in listed for k in t)]:
        fixed.pop(key, None)  # a swept value wins over the same fixed one
    return SweepSpec(args.name, axes, listed, fixed, args.stages, args.outputs_dir)


def load_trials(file: Path) -> list[dict[str, Any]]:
    """Parameter sets from a YAML file: a list of mappings, one per trial."""
    data = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
    if not isinstance(data, list) or not data or not all(isinstance(t, dict) for t in data):
        raise SweepError(f"Trials file {file} must exist and hold a YAML list of mappings, e.g."
                         "\n- {phase1.lr: 1e-6}\n- {phase1.lr: 2e-6, phase2.lr: 5e-7}")  # fmt: skip
    return data


def command(args: argparse.Namespace) -> int:
    """Run the sweep; exit 0, 1 (a trial failed) or 2 (a wrong request)."""
    res = Resources(args.address, args.gpus_per_trial, args.cpus_per_trial, args.storage,
                    args.scheduler, args.grace_steps, args.reduction_factor)  # fmt: skip
    try:
        from voicebook.sweep.tuner import run_sweep

        results = run_sweep(spec_from_args(args), res)
    except (SweepError, FolderBusy, runner.RunnerError, FileNotFoundError, ValueError) as exc:
        print(f"voicebook: {exc}", file=sys.stderr)
        return 2
    if results.errors:
        print(f"{len(results.errors)} trial(s) failed (see the report); the same command again "
              "re-runs only them.", file=sys.stderr)  # fmt: skip
        return 1
    return 0
