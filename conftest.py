"""Test-wide set-up.

Two lanes: ``make test-fast`` is ``-m "not slow"`` (unit tests only, two workers), ``make test``
everything (three workers, the notebooks too). A test that trains, runs a notebook, a kernel or
a whole stage, recognises speech, drives the browser, starts Ray or loads the full-size model is
marked ``@pytest.mark.slow`` (``docs/testing.md``).

Every test writes experiments to a temporary outputs folder, never to a person's ``outputs/``
(notebook kernels started by nbmake inherit this environment).

``make test`` runs three pytest-xdist workers (``-n 3 --no-loadscope-reorder``) with one torch
thread each: two threads per worker made phase 1 ten times slower (OpenMP threads spin). On 2
cores, two workers left the CPU idle while kernels start, Ray schedules and the browser waits;
a fourth took as long as three (``benchmarks/README.md``, "Test workers").
Each test file is one group, so a module's fixtures (a trained phase, the full-size model) are
built once, on one worker; the stage notebooks are one group because nbmake runs them as one
pipeline, in order, in one outputs folder. The groups that take minutes go first, longest first
(``--durations`` of ``make test``), so that the workers end together.

nbmake runs each stage notebook with the demo's parameters (``params/demo.yaml``, what ``make
demo`` runs) at smaller sizes (``NBMAKE_SIZES``: fewer steps and generations), written into its
parameters cell as papermill writes them: the same code paths as the stages' defaults at a size
two cores run in minutes. ``VOICEBOOK_NBMAKE_DEFAULTS=1`` runs the notebooks as they are, at the
stages' defaults (``docs/testing.md``).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if "VOICEBOOK_OUTPUTS" not in os.environ:
    # One folder per run (xdist's workers inherit it), removed when the run ends: each run's
    # experiments take ~1.7 GB, and leftover folders once filled the disk.
    os.environ["VOICEBOOK_OUTPUTS"] = tempfile.mkdtemp(prefix="voicebook-test-outputs-")
    atexit.register(shutil.rmtree, os.environ["VOICEBOOK_OUTPUTS"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (its kernels and subprocesses inherit it): two workers with two
    # torch threads each on two cores ran phase 1 ten times slower (OpenMP threads spin).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

DEMO_PARAMS = Path(__file__).resolve().parent / "params" / "demo.yaml"
# nbmake's sizes over the demo's: fewer steps and generations, every option the demo sets kept
# (two kept models and the pick between them, the search on the base and on phase 2, the
# evaluation as the demo runs it), so every cell runs the demo's code paths at half the cost.
NBMAKE_SIZES = {
    "01_phase1": {"epochs": 1, "eval_every": 15},  # evals at 15 and 30: two kept models
    "02_phase2": {"max_steps": 8, "eval_every": 4},
    "02b_voice_search": {"generations": 3, "speaker_generations": 1},
}
LONGEST_FIRST = (
    "test_stages.py",  # papermill flows and two runners on one experiment
    "test_fullsize.py",  # the real XTTS v2 size
    "notebooks",  # every stage notebook, in pipeline order
    "test_sweep.py",  # Ray sweeps
    "test_training_runs.py",  # phases that train
    "test_browser.py",  # JupyterLab in chromium
    "test_evaluation.py",  # whole evaluations on the tiny base
    "test_voice_search.py",  # searches, a trained phase 1, the evaluation
    "test_parity.py",
    "test_lora.py",
    "test_browser_live.py",
    "test_listen_load.py",
    "test_browser_restart.py",
    "test_listen_browser.py",  # the Voila page in chromium
    "test_dataprep.py",
    "test_report.py",
)


def _group(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return "notebooks" if path.endswith(".ipynb") else path.rsplit("/", 1)[-1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))  # stable
    notebooks = [item for item in items if getattr(item, "nbmake", False)]
    if notebooks and os.environ.get("VOICEBOOK_NBMAKE_DEFAULTS") != "1":
        _with_demo_parameters(notebooks)


def _with_demo_parameters(notebooks: list[pytest.Item]) -> None:
    """Point each nbmake item at a copy of its notebook whose parameters are the demo's, at
    ``NBMAKE_SIZES``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from voicebook import runner
    from voicebook.core.parameters import declared_parameters

    stems = {Path(item.filename).stem: item for item in notebooks}
    stages = [s for s in runner.STAGES if s in stems]
    per_stage = runner.split_params(
        runner.load_params_file(DEMO_PARAMS), stages, declared_parameters
    )
    folder = Path(tempfile.mkdtemp(prefix="voicebook-nbmake-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for stem, params in per_stage.items():
        params = {**params, **NBMAKE_SIZES.get(stem, {})}
        if params:
            nb = parameterize_notebook(load_notebook_node(stems[stem].filename), params)
            nbformat.write(nb, folder / f"{stem}.ipynb")
            stems[stem].filename = str(folder / f"{stem}.ipynb")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's scope scheduling with the groups above as scopes. (``--dist loadgroup`` does not
    work with pytest 9.2: its hook renames node ids, which pytest 9.2 no longer allows.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByGroup(config, log)
