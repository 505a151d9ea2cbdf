"""The environment is the lock: pyproject.toml's ranges, uv.lock, its export for conda
(requirements.lock.txt, named by environment.yml) and the installed .venv all agree."""

import importlib.util
import json
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from voicebook.core.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    "check_environment", REPO_ROOT / "scripts" / "check_environment.py"
)
check_environment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_environment)


def _lock_packages():
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return {
        canonicalize_name(p["name"]): p["version"]
        for p in lock["package"]
        if p["name"] != check_environment.PROJECT
    }


def _project_requirements():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_lock_satisfies_every_pyproject_range():
    locked = _lock_packages()
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in pyproject.toml but not in uv.lock: run 'make lock'"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"uv.lock holds {name} {locked[name]}, outside pyproject's {requirement.specifier}: "
            "run 'make lock'"
        )


def test_conda_export_is_the_lock():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-r requirements.lock.txt", "-e ."]
    assert "python=3.11" in env["dependencies"]
    exported = {}
    for line in (REPO_ROOT / "requirements.lock.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, version = line.split(";")[0].strip().partition("==")
            exported[canonicalize_name(name)] = version
    assert exported == _lock_packages(), "requirements.lock.txt is stale: run 'make lock'"


def test_torch_and_torchaudio_are_pinned_as_a_pair():
    """torchaudio 2.11.1 declares torch>=2.11 yet fails to load beside torch 2.11.0: the pair is
    pinned exactly in pyproject.toml, and the lock holds the same pair."""
    pins = {canonicalize_name(r.name): str(r.specifier) for r in _project_requirements()}
    assert pins["torch"] == "==2.11.0" and pins["torchaudio"] == "==2.11.0"
    locked = _lock_packages()
    assert (locked["torch"], locked["torchaudio"]) == ("2.11.0", "2.11.0")
    for name in ("coqui-tts", "torchcodec", "six", "papermill", "scrapbook", "plotly", "voila"):
        assert name in pins, name


def test_test_tools_are_a_dev_group_not_runtime():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    runtime = {canonicalize_name(r.name) for r in _project_requirements()}
    dev = {canonicalize_name(Requirement(r).name) for r in project["dependency-groups"]["dev"]}
    tools = {"pytest", "pytest-xdist", "nbmake", "ruff", "playwright"}
    assert tools <= dev and not tools & runtime
    assert tools <= set(_lock_packages())  # set-up installs the group for make test


def test_installed_environment_is_exactly_the_lock():
    assert check_environment.lock_drift() == []
    assert len(check_environment.locked_versions()) > 150


def test_drift_is_named(tmp_path):
    export = tmp_path / "lock.txt"
    export.write_text(
        "torch==0.0.1\n    # via voicebook\n"
        "not-a-real-package==1.0 ; sys_platform == 'linux'\n"
        "other-platform-only==1.0 ; sys_platform == 'nonexistent'\n"
    )
    drift = check_environment.lock_drift(export)
    assert any(d.startswith("torch: installed 2.11.0, lock says 0.0.1") for d in drift)
    assert "not-a-real-package: installed nothing, lock says 1.0" in drift
    assert not any("other-platform-only" in d for d in drift)
    # everything else installed is now unlisted, and each is named
    assert any(d.startswith("papermill ") and d.endswith("not in the lock") for d in drift)


@pytest.mark.slow
def test_what_the_stages_load_loads():
    assert check_environment.import_failures() == []


def test_a_failing_import_names_itself_and_its_fix(monkeypatch):
    def broken():
        raise OSError("undefined symbol: torch_exception_get_what_without_backtrace")

    monkeypatch.setattr(
        check_environment, "CHAIN", [("torchaudio's C++ library", broken, "fix it")]
    )
    (failure,) = check_environment.import_failures()
    assert failure.startswith("torchaudio's C++ library: OSError: undefined symbol")
    assert failure.endswith("fix: fix it")


def test_kernel_spec_is_the_quiet_launcher():
    from voicebook import kernel

    installed = json.loads(
        (Path(sys.prefix) / "share/jupyter/kernels/voicebook/kernel.json").read_text()
    )
    assert installed == kernel.kernel_spec()
    assert installed["argv"][2:4] == ["-m", "voicebook.kernel"]


@pytest.mark.slow  # starts a kernel
def test_a_kernel_run_prints_no_unencrypted_tcp_warning_and_keeps_other_lines():
    """A real kernel start through nbclient (as papermill does): the one harmless line is gone,
    the notebook's own stderr still arrives."""
    script = (
        "import nbformat; from nbclient import NotebookClient\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("
        "'import sys; print(6 * 7); print(\"cell stderr\", file=sys.stderr)')])\n"
        "NotebookClient(nb, kernel_name='voicebook').execute()\n"
        "print([o['text'] for o in nb.cells[0].outputs])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "['42\\n', 'cell stderr\\n']" in done.stdout
    assert "without encryption" not in done.stderr
    from voicebook.kernel import _DropUnencryptedTcpWarning

    keep = logging.LogRecord("IPKernelApp", logging.WARNING, "", 0, "Kernel died", None, None)
    drop = logging.LogRecord(
        "IPKernelApp",
        logging.WARNING,
        "",
        0,
        "Kernel is running over TCP without encryption.",
        None,
        None,
    )
    assert _DropUnencryptedTcpWarning().filter(keep) and not _DropUnencryptedTcpWarning().filter(
        drop
    )


def test_model_builds_print_no_gpt2_bos_eos_lines_but_other_token_warnings_stay():
    import voicebook.coqui  # noqa: F401 - installs the filter

    logger = logging.getLogger("transformers.configuration_utils")

    def shown(message):
        return logger.filter(
            logging.LogRecord(logger.name, logging.WARNING, "", 0, message, None, None)
        )

    assert not shown("Model config: bos_token_id must be `None` or an integer ..., got 50256.")
    assert not shown("Model config: eos_token_id must be `None` or an integer ..., got 50256.")
    assert shown("Model config: pad_token_id must be `None` or an integer ..., got -1.")


def test_setuptools_vendored_copies_on_sys_path_are_not_drift():
    """webrtcvad imports pkg_resources, which puts setuptools' _vendor folder on sys.path."""
    import pkg_resources  # noqa: F401

    assert check_environment.lock_drift() == []
