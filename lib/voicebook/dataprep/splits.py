"""Which split a number was measured on, and the test split as a dataset of its own.

Data prep writes three splits (``voicebook.dataprep.dataset``): train, validation
(``metadata_eval.csv``, coqui's "eval": the phases and the voice search select on it) and test
(``metadata_test.csv``). Everything that scores held-out clips (coqui's eval loop, the per-clip
probes, the reference and hidden clips, speaker similarity) reads the "eval" table of a dataset
folder, so the evaluation scores the test split through ``test_view``: a small folder beside the
results whose "eval" table is the test split and whose ``wavs/`` links to the dataset's. A
dataset made before the test split still evaluates, on its validation split, with a note saying
so and how to rebuild it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from voicebook.core.paths import EVAL_META, TEST_META, TRAIN_META

TEST, VALIDATION = "test", "validation"
VIEW_DIR = ".test_split"  # under eval/: hidden, rebuilt at every evaluation


def has_test_split(dataset_dir: str | Path) -> bool:
    return (Path(dataset_dir) / TEST_META).is_file()


def two_split_note(dataset_dir: str | Path) -> str:
    return (
        f"The dataset {dataset_dir} has no test split (it was made before data prep wrote "
        "three): these numbers are on the validation split, the clips the phases and the voice "
        "search selected on, so they flatter the fine-tuned candidates. Rebuild it by re-running "
        "00_data_prep, then the phases and 03_evaluation."
    )


def _fresh(folder: str | Path) -> Path:
    """An empty ``folder``: a view is rebuilt at every evaluation, never updated."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def test_view(dataset_dir: str | Path, folder: str | Path) -> Path:
    """``folder`` made into a dataset whose "eval" split is ``dataset_dir``'s test split."""
    dataset, folder = Path(dataset_dir).resolve(), _fresh(folder)
    os.symlink(dataset / "wavs", folder / "wavs", target_is_directory=True)
    shutil.copyfile(dataset / TRAIN_META, folder / TRAIN_META)
    shutil.copyfile(dataset / TEST_META, folder / EVAL_META)
    for name in ("clips.csv", "card.json"):
        if (dataset / name).is_file():
            shutil.copyfile(dataset / name, folder / name)
    return folder


def scoring_dataset(dataset_dir: Path, work_dir: Path) -> tuple[Path, str, str | None]:
    """``(folder to score, split name, note)``: the test view, or the dataset itself (its
    validation split) with a note when it has no test split."""
    if has_test_split(dataset_dir):
        return test_view(dataset_dir, Path(work_dir) / VIEW_DIR), TEST, None
    return Path(dataset_dir), VALIDATION, two_split_note(dataset_dir)


GENERAL_DIR = ".general"  # under eval/: hidden, rebuilt at every evaluation


def general_view(folder: str | Path, sentences: list[str], references: list[Path]) -> Path:
    """``folder`` made into a dataset whose "eval" split is ``sentences`` (general text, not the
    speaker's), each paired with one of the speaker's ``references`` in turn. The GPT reads a
    sentence's text before any audio code (causal attention), so its Text CE there is what the
    model knows of reading given the speaker's voice, whatever codes follow; its Mel CE is
    meaningless and is not used. The forgetting measure of the evaluation."""
    folder = _fresh(folder)
    (folder / "wavs").mkdir()
    for i, clip in enumerate(references):
        os.symlink(Path(clip).resolve(), folder / "wavs" / f"reference_{i}{Path(clip).suffix}")
    rows = ["audio_file|text|speaker_name"]
    for i, sentence in enumerate(sentences):
        clip = references[i % len(references)]
        rows.append(f"wavs/reference_{i % len(references)}{Path(clip).suffix}|{sentence}|speaker")
    for meta in (EVAL_META, TRAIN_META):  # coqui's loader wants a train split too: the same
        (folder / meta).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
