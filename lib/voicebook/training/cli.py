"""The command line ``python -m voicebook.training phase1 --lr 1e-4 ...`` (every parameter)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from voicebook.training.params import PARAMS, STAGES
from voicebook.training.run import run_phase

TEXT_PARAMS = ("resume_from", "export_checkpoint")  # "best", "final" or a step: kept as text


def _flag(text: str) -> bool:
    if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r}: use true or false")
    return text.strip().lower() in ("true", "1", "yes")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = argv[0] if argv and argv[0] in STAGES else None
    if stage is None:
        print(f"usage: python -m voicebook.training {{{','.join(STAGES)}}} [--name value ...]")
        return 2
    cls = PARAMS[stage]
    parser = argparse.ArgumentParser(prog=f"voicebook.training {stage}")
    for f in dataclasses.fields(cls):
        kind = str if f.name in TEXT_PARAMS else type(f.default)
        kind = _flag if kind is bool else kind  # bool("False") would be True
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    params = cls(**vars(parser.parse_args(argv[1:])))
    result = run_phase(params)
    print(result.summary().to_string())
    return 0 if result.status.get("state") == "finished" else 1
