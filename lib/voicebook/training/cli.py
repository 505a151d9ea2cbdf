"""The command line ``python -m voicebook.training phase1 --lr 1e-4 ...``: argparse subcommands,
one per phase, with a flag for every parameter (typed like its default)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

from voicebook.core.values import like
from voicebook.training.params import PARAMS, STAGES


def _typed_like(default, name: str, text: str):
    try:
        return like(default, text, name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A subcommand per phase; each of its parameters a flag, its default the dataclass's."""
    phases = parser.add_subparsers(dest="phase", required=True, metavar="PHASE")
    for stage in STAGES:
        sub = phases.add_parser(stage, help=f"train {stage}")
        for f in dataclasses.fields(PARAMS[stage]):
            kind = functools.partial(_typed_like, f.default, f.name)
            sub.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)


def command(args: argparse.Namespace) -> int:
    """Train the phase; exit 0 when it finished, else 1."""
    from voicebook.training.run import run_phase  # heavy (torch): only when a phase runs
    from voicebook.training.select import select_checkpoint

    values = {k: v for k, v in vars(args).items() if k != "phase"}
    result = run_phase(PARAMS[args.phase](**values))
    if result.status.get("state") == "finished":
        result = select_checkpoint(result)  # the pick among the kept best models
    print(result.summary().to_string())
    return 0 if result.status.get("state") == "finished" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicebook.training", description=__doc__)
    add_arguments(parser)
    return command(parser.parse_args(sys.argv[1:] if argv is None else argv))
