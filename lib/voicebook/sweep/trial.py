"""One trial as a Tune trainable: papermill runs the experiment's stage notebooks in a child
process (``python -m voicebook.sweep.trial JOB.json``, its output in ``<trial>/trial.log``);
each new eval row of ``curves.csv`` is a result for Tune; a scheduler's stop is Ctrl-C in the
kernel, so the phase saves a checkpoint and papermill keeps the executed notebook."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from voicebook import runner
from voicebook.core.fileio import write_text_atomic
from voicebook.core.parameters import declared_parameters
from voicebook.core.paths import NOTEBOOKS_DIR, REPO_ROOT
from voicebook.core.scraps import record_path
from voicebook.core.stages import TRAINING
from voicebook.sweep.spec import SHARED, now, trial_name, values_of

DATA_PREP = runner.STAGES[0]
PHASES = tuple(s.stem for s in TRAINING)  # the stages that write curves.csv, in this order
METRIC, TEXT_METRIC, TIME_ATTR = "eval_mel_ce", "eval_text_ce", "step"
STOPPED_NAME = "stopped_early.json"
STOP_WAIT_SECONDS = 300  # for the interrupted phase's checkpoint and papermill's notebook


def notebooks_of(job: dict[str, Any]) -> Path:
    """A folder the job names (tests), else the notebooks of the code Ray shipped."""
    return Path(job["notebooks_dir"]) if job.get("notebooks_dir") else NOTEBOOKS_DIR


@functools.cache
def declared(notebooks: Path, stage: str) -> frozenset[str]:
    return frozenset(declared_parameters(stage, notebooks))


def route(job: dict[str, Any], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sweep's fixed parameters and a trial's ``values``, per stage of the job whose notebook
    exists (``runner.split_params``: an unknown parameter raises here, before anything runs)."""
    notebooks = notebooks_of(job)
    present = [s for s in job["stages"] if (notebooks / f"{s}.ipynb").is_file()]
    return runner.split_params(
        {**job["fixed"], **values}, present, functools.partial(declared, notebooks)
    )


def plan_trial(job: dict[str, Any], values: dict[str, Any]) -> tuple[list[str], dict, bool]:
    """The trial's stages, its parameters per stage, and whether it shares the sweep's data prep
    (it does unless it changes a data-prep parameter; then it skips 00_data_prep)."""
    routed = route(job, values)
    shared = DATA_PREP not in routed or routed[DATA_PREP] == route(job, {})[DATA_PREP]
    stages = [s for s in job["stages"] if not (shared and s == DATA_PREP)]
    return stages, {s: routed[s] for s in routed if s in stages and routed[s]}, shared


def link_shared_dataset(folder: Path, trial: str) -> None:
    """``<trial>/dataset`` → ``../data_prep/dataset`` (relative: the sweep folder can move), and
    the data prep's executed notebook and record for the trial's report. Nothing is replaced."""
    link = folder / trial / "dataset"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(Path("..") / SHARED / "dataset", target_is_directory=True)
    for source in (folder / SHARED / "notebooks" / f"{DATA_PREP}.ipynb",
                   record_path(folder / SHARED, DATA_PREP)):  # fmt: skip
        copy = folder / trial / source.relative_to(folder / SHARED)
        if source.is_file() and not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())


def code_env() -> dict[str, str]:
    """This code first on the path, absolute: the child and papermill's kernels start in other
    folders, and would else import whatever voicebook the node installed."""
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT / 'lib'}{os.pathsep}{os.getenv('PYTHONPATH', '')}",
    }


def run_stages(job: dict[str, Any]) -> None:
    os.environ.update(code_env())
    print(f"voicebook from {REPO_ROOT / 'lib'}; notebooks {notebooks_of(job)}", flush=True)
    runner.run(job["experiment"], job["stages"], job["params"], job["folder"], notebooks_of(job))


def data_prep_task(job: dict[str, Any]) -> dict[str, Any]:
    """The shared data prep, as a Ray task: its status, never an exception."""
    start, status, error = time.monotonic(), "done", ""
    try:
        run_stages(job)
    except Exception as exc:  # noqa: BLE001 - reported: the driver stops the sweep
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    return {"status": status, "error": error, "seconds": round(time.monotonic() - start, 1)}


class CurveFollower:
    """New eval rows of the phases' ``curves.csv`` as they are written, on one step count
    (phase 2's steps continue from phase 1's last one)."""

    def __init__(self, exp: Path, phases: list[str]):
        self.paths = [exp / p.split("_", 1)[1] / "curves.csv" for p in phases]
        self.seen, self.offsets, self.last_step = [0] * len(phases), [0] * len(phases), 0

    def new_rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, path in enumerate(self.paths):
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            text = text[: text.rfind("\n") + 1]  # a row half written is read next time
            if text.count("\n") < 2:
                continue
            if i and not self.seen[i]:
                self.offsets[i] = self.last_step  # the next phase has begun
            evals = pd.read_csv(io.StringIO(text)).query("split == 'eval'")
            for row in evals.iloc[self.seen[i] :].to_dict("records"):
                self.last_step = int(row["step"]) + self.offsets[i]
                rows.append({TIME_ATTR: self.last_step, METRIC: float(row["loss_mel_ce"]),
                             TEXT_METRIC: float(row["loss_text_ce"])})  # fmt: skip
            self.seen[i] = len(evals)
        return rows


class StageTrial(tune.Trainable):
    """``step`` returns the trial's next eval losses (``done`` once its stages end); ``cleanup``
    after a scheduler's stop interrupts the kernel and records what the stop saved."""

    def setup(self, config: dict[str, Any], job: dict[str, Any]) -> None:
        values = values_of(config)
        self.name = trial_name(job["sweep"], values)
        stages, params, shared = plan_trial(job, values)
        folder, self.exp = Path(job["folder"]), Path(job["folder"]) / self.name
        if shared and (folder / SHARED / "dataset").is_dir():
            link_shared_dataset(folder, self.name)
        self.exp.mkdir(parents=True, exist_ok=True)
        child = {**job, "experiment": self.name, "stages": stages, "params": params}
        job_file = write_text_atomic(self.exp / "trial_job.json", json.dumps(child, indent=2))
        command = [sys.executable, "-m", "voicebook.sweep.trial", str(job_file)]
        self.log = (self.exp / "trial.log").open("ab")
        self.log.write(f"$ {' '.join(command)}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=code_env(), start_new_session=True)  # fmt: skip
        self.follower = CurveFollower(self.exp, [s for s in stages if s in PHASES])
        self.queue: list[dict[str, Any]] = []
        self.last = {TIME_ATTR: 0, METRIC: float("nan"), TEXT_METRIC: float("nan")}
        self.started = time.monotonic()

    def step(self) -> dict[str, Any]:
        while not self.queue and self.proc.poll() is None:
            time.sleep(1)
            self.queue += self.follower.new_rows()
        self.queue += self.follower.new_rows()
        if self.queue:
            self.last = self.queue.pop(0)
            return dict(self.last)
        if self.proc.returncode:
            lines = (self.exp / "trial.log").read_text(errors="replace").splitlines()
            errors = [line for line in lines if line.startswith("voicebook:")] or lines[-5:]
            raise RuntimeError(" ".join([*errors, f"(log: {self.exp / 'trial.log'})"]))
        return {**self.last, "done": True, "finished": True, "minutes": self._minutes()}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return dict(self.last)  # Tune saves a trial that ends; its real checkpoints are the phase's

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pass  # a trial run again starts its stages again (the phases resume what they can)

    def _minutes(self) -> float:
        return round((time.monotonic() - self.started) / 60, 2)

    def cleanup(self) -> None:
        if self.proc.poll() is None:  # stopped by the scheduler (or the driver was interrupted)
            stopped = {"step": self.last[TIME_ATTR], "minutes": self._minutes(), "at": now()}
            interrupt_kernels(self.proc.pid)
            try:
                self.proc.wait(STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            write_text_atomic(self.exp / STOPPED_NAME, json.dumps(stopped))
        self.log.close()


def interrupt_kernels(pid: int) -> None:
    """Ctrl-C in the kernels under ``pid``, as Jupyter's interrupt button sends: the phase
    handles the KeyboardInterrupt, papermill writes the notebook, the child exits."""
    import psutil

    for proc in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "-f" in proc.cmdline() and any(a.endswith("kernel") for a in proc.cmdline()):
                proc.send_signal(signal.SIGINT)


if __name__ == "__main__":
    # Ray's workers block SIGINT, and the mask passes to children: unblock it for the kernels.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_stages(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    except (runner.StageFailed, runner.RunnerError) as exc:
        sys.exit(f"voicebook: {exc}")
