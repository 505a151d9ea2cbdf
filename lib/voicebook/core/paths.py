"""Where things live: the repository, the outputs of an experiment, the model cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEMO_DATA_DIR = REPO_ROOT / "data" / "demo"


def outputs_root(outputs_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds every experiment.

    An explicit ``outputs_dir`` wins; else ``$VOICEBOOK_OUTPUTS`` (tests point it at a temp
    folder so they never touch a person's runs); else ``<repo>/outputs``.
    """
    if outputs_dir:
        return Path(outputs_dir).expanduser().resolve()
    env = os.environ.get("VOICEBOOK_OUTPUTS")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "outputs"


def experiment_dir(experiment: str, outputs_dir: str | os.PathLike | None = None) -> Path:
    """``<outputs>/<experiment>``, created if missing."""
    if not experiment or "/" in experiment or experiment.startswith("."):
        raise ValueError(
            f"Experiment name {experiment!r} is not usable as a folder name: "
            "use letters, digits, '-' or '_'."
        )
    path = outputs_root(outputs_dir) / experiment
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Built and downloaded base models: ``$VOICEBOOK_CACHE`` or ``~/.cache/voicebook``."""
    env = os.environ.get("VOICEBOOK_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "voicebook"
    path.mkdir(parents=True, exist_ok=True)
    return path


# The data-prep stage's split tables (coqui's ``coqui`` formatter: audio_file|text|speaker_name).
# EVAL_META is the validation split (coqui's "eval"): what the phases and the voice search
# select on. TEST_META is what the evaluation scores: nothing selected on it. Datasets made
# before the test split have only the first two (``voicebook.dataprep.splits``).
TRAIN_META = "metadata_train.csv"
EVAL_META = "metadata_eval.csv"
TEST_META = "metadata_test.csv"
