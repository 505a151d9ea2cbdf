"""environment.yml (conda, GPU hosts) and pyproject.toml (pip) describe the same environment."""

import tomllib

import yaml
from packaging.requirements import Requirement

from voicebook.paths import REPO_ROOT


def _pins(requirements):
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in requirements}


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = _pins(r for r in pip_section if r != "-e .")
    assert conda_pins == _pins(project["dependencies"])
    assert "-e ." in pip_section
    assert "python=3.11" in env["dependencies"]


def test_pins_cover_the_stack_the_design_requires():
    pins = _pins(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    assert pins["torch"] == "==2.11.*" and pins["torchaudio"] == "==2.11.*"
    assert pins["coqui-tts"] == "==0.28.*"
    for name in (
        "torchcodec",
        "six",
        "papermill",
        "scrapbook",
        "nbmake",
        "jupyterlab",
        "ipywidgets",
        "plotly",
        "librosa",
    ):
        assert name in pins, name
