"""The ``voicebook`` command: ``voicebook run --experiment NAME [...]``, ``voicebook sweep``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: voicebook run --experiment NAME [--stages ...] [-p KEY VALUE ...] [-f FILE]")
        print(
            "       voicebook sweep --name NAME -p KEY V1 V2 ... [--stages ...] [-f FILE]"
            " [--address RAY] [--gpus-per-trial N] [--scheduler asha|none]"
        )
        print(
            "       voicebook base [tiny|xtts_v2|FOLDER]   build/check a base model, print its folder"
        )
        print("       voicebook listen --experiment NAME --raters ann bob [--host H] [--port P]")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from voicebook.runner import main as run_main

        return run_main(rest)
    if command == "sweep":
        from voicebook.sweep.cli import main as sweep_main

        return sweep_main(rest)
    if command == "listen":
        from voicebook.evaluation.listening.serve import main as listen_main

        return listen_main(rest)
    if command == "base":
        from voicebook.coqui.base import BaseModelError, resolve_base

        try:
            print(resolve_base(rest[0] if rest else "tiny"))
        except BaseModelError as exc:
            print(f"voicebook: {exc}", file=sys.stderr)
            return 2
        return 0
    print(f"voicebook: unknown command {command!r} (try: voicebook run --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
