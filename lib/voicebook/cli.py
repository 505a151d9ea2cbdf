"""The ``voicebook`` command, argparse subcommands: ``run`` (stage notebooks in order),
``sweep`` (a grid on Ray Tune), ``base`` (build or check a base model), ``listen`` (the blind
listening test as a web page per rater). Each subcommand's module
declares its arguments (``add_arguments``) and acts on them (``command``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from voicebook import runner
from voicebook.evaluation.listening import serve as listen
from voicebook.sweep import cli as sweep_cli


def add_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", nargs="?", default="tiny", help="tiny (default), xtts_v2 or FOLDER")


def base_command(args: argparse.Namespace) -> int:
    """Build or check a base model; print its folder."""
    from voicebook.coqui.base import BaseModelError, resolve_base

    try:
        print(resolve_base(args.base))
    except BaseModelError as exc:
        print(f"voicebook: {exc}", file=sys.stderr)
        return 2
    return 0


DESCRIPTION = "Fine-tune XTTS v2 on one voice: run an experiment's stages, a sweep, or a base."
Subcommand = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]
SUBCOMMANDS: list[Subcommand] = [
    ("run", "run an experiment's stage notebooks in order", runner.add_arguments, runner.command),
    ("sweep", "a grid of experiments on Ray Tune, one report", sweep_cli.add_arguments,
     sweep_cli.command),
    ("base", "build or check a base model, print its folder", add_base_arguments, base_command),
    ("listen", "serve the blind listening test as a web page, one link per rater",
     listen.add_arguments, listen.command),
]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="voicebook", description=DESCRIPTION)
    commands = top.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for name, summary, add_arguments, command in SUBCOMMANDS:
        sub = commands.add_parser(name, help=summary, description=summary)
        add_arguments(sub)
        sub.set_defaults(command=command)
    return top


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when done, 1 when a stage or trial failed, 2 for a wrong request."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.command(args)


if __name__ == "__main__":
    sys.exit(main())
