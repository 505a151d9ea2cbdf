"""Run the stage notebooks of an experiment in order with papermill.

Executed notebooks go to ``outputs/<experiment>/notebooks/<stem>.ipynb`` (the decision stage
reads their scraps); a previous execution is kept under ``notebooks/history/``. Parameters are
given to the stages that declare them; ``phase2.lr`` (or ``02_phase2.lr``) targets one stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from voicebook.core import stages as contract
from voicebook.core.fileio import to_history
from voicebook.core.parameters import declared_parameters
from voicebook.core.paths import NOTEBOOKS_DIR, experiment_dir
from voicebook.core.values import parse_value

STAGES = tuple(s.stem for s in contract.STAGES)  # the stage contract's order
KERNEL = "voicebook"


class RunnerError(RuntimeError):
    """A problem with what was asked of the runner (unknown stage, parameter, bad file)."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, notebook: Path, detail: str):
        super().__init__(f"Stage {stage} failed: {detail}\nExecuted notebook: {notebook}")
        self.stage, self.notebook, self.detail = stage, notebook, detail


@dataclass
class StageResult:
    stage: str
    status: str  # "done", "skipped"
    seconds: float = 0.0
    notebook: Path | None = None
    note: str = ""


def stage_name(token: str) -> str:
    """``'phase2'``, ``'2'``, ``'02'``, ``'02_phase2'`` → ``'02_phase2'``; an unambiguous start
    of the name also works (``'data'``, ``'eval'``, ``'decision'``, ``'voice'``)."""
    for stage in STAGES:
        number, _, short = stage.partition("_")
        numbers = (number, str(int(number))) if number.isdigit() else (number,)  # "02b"
        if token in (stage, short, *numbers):
            return stage
    starts = [s for s in STAGES if token and s.partition("_")[2].startswith(token)]
    if len(starts) == 1:
        return starts[0]
    raise RunnerError(f"Unknown stage {token!r}. Stages: {', '.join(STAGES)}.")


def load_params_file(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise RunnerError(f"Parameter file {file} does not exist.")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RunnerError(f"Parameter file {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RunnerError(f"Parameter file {file} must hold a mapping of name: value.")
    return data


def split_params(
    raw: dict[str, Any], stages: Iterable[str], declared: Callable[[str], set[str]]
) -> dict[str, dict[str, Any]]:
    """Send each parameter to the stages that declare it; ``stage.key`` or a nested
    ``{stage: {key: value}}`` targets one stage. Unknown names are an error, not ignored."""
    stages = list(stages)
    per_stage: dict[str, dict[str, Any]] = {s: {} for s in stages}
    for key, value in raw.items():
        scoped = isinstance(value, dict) and _is_stage(key)
        if scoped or "." in key:
            target = stage_name(key if scoped else key.split(".", 1)[0])
            items = value.items() if scoped else [(key.split(".", 1)[1], value)]
            for name, val in items:
                if target in per_stage and name not in declared(target):
                    raise RunnerError(
                        f"Stage {target} has no parameter {name!r}; "
                        f"it has: {', '.join(sorted(declared(target)))}."
                    )
                if target in per_stage:
                    per_stage[target][name] = val
            continue
        takers = [s for s in stages if key in declared(s)]
        if not takers:
            known = sorted(set().union(*(declared(s) for s in stages)))
            raise RunnerError(
                f"No selected stage has a parameter {key!r}. Known: {', '.join(known)}."
            )
        for stage in takers:
            per_stage[stage][key] = value
    return per_stage


def _is_stage(token: str) -> bool:
    try:
        stage_name(token)
    except RunnerError:
        return False
    return True


def run_stage(
    stage: str,
    experiment: str,
    params: dict[str, Any],
    outputs_dir: str | os.PathLike | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
) -> StageResult:
    """Execute one stage notebook; raise StageFailed with the failing cell's error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebooks_dir / f"{stage}.ipynb"
    if not source.is_file():
        return StageResult(stage, "skipped", note=f"{source.name} does not exist yet")
    exp_dir = experiment_dir(experiment, outputs_dir)
    output = exp_dir / "notebooks" / f"{stage}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    to_history(output)  # the earlier output notebook: history/<stem>.<time>.ipynb
    parameters = {"experiment": experiment, "outputs_dir": str(exp_dir.parent), **params}
    start = time.monotonic()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(notebooks_dir),
            progress_bar=False,
        )
    except PapermillExecutionError as exc:
        detail = f"cell [{exc.exec_count}]: {exc.ename}: {exc.evalue}"
        raise StageFailed(stage, output, detail) from None
    return StageResult(stage, "done", time.monotonic() - start, output)


def run(
    experiment: str,
    stages: Iterable[str] | None = None,
    params: dict[str, Any] | None = None,
    outputs_dir: str | os.PathLike | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    echo: Callable[[str], None] = print,
) -> list[StageResult]:
    """Run ``stages`` (default all) of ``experiment`` in order, stopping at the first failure."""
    selected = [stage_name(s) for s in (stages or STAGES)]
    selected = [s for s in STAGES if s in selected]  # always in pipeline order
    present = [s for s in selected if (notebooks_dir / f"{s}.ipynb").is_file()]
    per_stage = split_params(params or {}, present, lambda s: declared_parameters(s, notebooks_dir))
    results = []
    for i, stage in enumerate(selected, 1):
        prefix = f"[{i}/{len(selected)}] {stage}"
        if stage not in present:
            echo(f"{prefix}: skipped ({stage}.ipynb does not exist yet)")
            results.append(StageResult(stage, "skipped", note="notebook missing"))
            continue
        shown = ", ".join(f"{k}={v!r}" for k, v in per_stage[stage].items())
        echo(f"{prefix}: running{' with ' + shown if shown else ''} ...")
        result = run_stage(stage, experiment, per_stage[stage], outputs_dir, notebooks_dir)
        echo(f"{prefix}: done in {result.seconds:.0f} s -> {result.notebook}")
        results.append(result)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``voicebook run``'s arguments."""
    parser.add_argument("--experiment", required=True, help="outputs/<experiment>/")
    parser.add_argument("--stages", nargs="+", help=f"default all: {' '.join(STAGES)}")
    parser.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="parameter, e.g. -p phase2.lr 1e-6",
    )
    parser.add_argument(
        "-f",
        "--params-file",
        action="append",
        default=[],
        help="YAML file of parameters (flat, or nested per stage)",
    )
    parser.add_argument("--outputs-dir", help="default $VOICEBOOK_OUTPUTS or outputs/")


def command(args: argparse.Namespace) -> int:
    """Run the stages; exit 0, 1 (a stage failed) or 2 (a wrong request)."""
    try:
        params: dict[str, Any] = {}
        for file in args.params_file:
            params.update(load_params_file(file))
        params.update({key: parse_value(value) for key, value in args.param})
        run(args.experiment, args.stages, params, args.outputs_dir)
    except (RunnerError, FileNotFoundError, ValueError) as exc:
        print(f"voicebook: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"voicebook: {exc}", file=sys.stderr)
        return 1
    from voicebook.decision.report import report_path

    report = report_path(args.experiment, args.outputs_dir)
    if report.is_file():
        print(f"Report: {report}")
    return 0
