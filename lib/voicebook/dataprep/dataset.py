"""Build the dataset: scan sources, process jobs in a small process pool, drop duplicates,
split train / validation / test, prove every input is accounted for, and write ``dataset/``.

Three splits, because the numbers that compare candidates must not be the numbers that chose
them: the phases keep their best checkpoint and the voice search its best voice by the
validation split (``metadata_eval.csv``, coqui's "eval"), and the evaluation scores every
candidate on the test split (``metadata_test.csv``), which nothing selected on.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import multiprocessing
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voicebook.asr import load_recognizer
from voicebook.core import runs
from voicebook.core.paths import EVAL_META, TEST_META, TRAIN_META
from voicebook.core.stages import DATA_PREP
from voicebook.dataprep.card import build_card, write_card_html
from voicebook.dataprep.config import DataPrepConfig
from voicebook.dataprep.process import Clip, Worker, init_worker, run_job
from voicebook.dataprep.review import REVIEW_DIR, VOICES_DIR, write_review, write_voice_examples
from voicebook.dataprep.sources import Job, Rejection, ScannedSource, detect_kind, scan_source
from voicebook.dataprep.text import TextChecker
from voicebook.dataprep.transcribe import Transcriber

GENERATOR = "voicebook.dataprep"
METADATA_HEADER = "audio_file|text|speaker_name"
CLIP_COLUMNS = (
    "audio_file", "split", "source", "item", "category", "band", "duration", "text",
    "speaker_name", "n_tokens", "input_lufs", "gain_db", "peak_limited",
)  # fmt: skip


@dataclass
class DatasetResult:
    """What ``prepare_dataset`` made: the folder, its card, the kept clips and the rejections."""

    dataset_dir: Path
    card: dict[str, Any]
    train: list[Clip]
    eval: list[Clip]
    rejected: list[Rejection]
    sources: list[ScannedSource]
    test: list[Clip] = field(default_factory=list)


def prepare_dataset(
    config: DataPrepConfig,
    dataset_dir: str | Path,
    tokenizer: Any,
    progress: bool = True,
    asr: Transcriber | None = None,
) -> DatasetResult:
    """Build ``dataset_dir`` from ``config.sources``; rebuild it fully if it exists.

    ``tokenizer`` is the base model's ``VoiceBpeTokenizer``: every transcript is checked with
    it. ``asr`` transcribes untranscribed sources (default: built from ``config.asr_model`` when
    a source needs it; with ``asr_model=""`` such audio is listed as rejected). Their kept ASR
    clips are also written to ``<dataset_dir>/../asr_review/<source>/`` for a person to check.
    """
    dataset_dir = Path(dataset_dir)
    _check_replaceable(dataset_dir)
    specs = config.source_specs()
    if asr is None and config.asr_model and "untranscribed" in map(detect_kind, specs):
        recognizer = load_recognizer(config.asr_model, config.language, config.device)
        asr = Transcriber(recognizer, config, config.speaker_reference_files())
    scanned = [scan_source(spec, i, config, asr) for i, spec in enumerate(specs)]
    review = {
        s.spec.name: write_review(
            dataset_dir.parent / REVIEW_DIR / s.spec.name, s.spec.path, s.asr_rows,
            s.spec.speaker or config.speaker_name, config.cue_padding_s, config.sample_rate,
        )
        for s in scanned
        if s.asr_rows
    }  # fmt: skip
    examples = _voice_examples(scanned, dataset_dir.parent / REVIEW_DIR / VOICES_DIR, config)
    building = dataset_dir.with_name(f".{dataset_dir.name}.building")
    if building.exists():
        shutil.rmtree(building)
    (building / "wavs").mkdir(parents=True)
    checker = TextChecker(tokenizer, config.language)
    jobs = [job for s in scanned for job in s.jobs]
    results = _run_jobs(jobs, config, checker, building / "wavs", progress)
    clips = [r for r in results if isinstance(r, Clip)]
    rejected = [r for s in scanned for r in s.rejections]
    rejected += [r for r in results if isinstance(r, Rejection)]
    kept, duplicates = drop_duplicates(sorted(clips, key=lambda c: c.order))
    for name in {c.audio_file for c in clips} - {c.audio_file for c in kept}:
        (building / name).unlink()
    clips = kept
    rejected = sorted(rejected + duplicates, key=lambda r: r.order)
    train, evals, tests = three_splits(clips, config)
    inventory = [i for s in scanned for i in s.inventory]
    accounting = account(inventory, train, evals, rejected, tests)
    card = build_card(config, scanned, train, evals, rejected, accounting, tests, review, examples)
    _write_outputs(building, train, evals, rejected, card, tests)
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    building.rename(dataset_dir)
    runs.wrote(DATA_PREP.stem, "dataset", dataset_dir)
    return DatasetResult(dataset_dir, card, train, evals, rejected, scanned, tests)


def _voice_examples(scanned: list, folder: Path, config: DataPrepConfig) -> dict:
    """Per ASR source without a clear majority voice: each voice's example clip (for the card's
    warning and ``speaker_reference``), under ``folder/<source>/``."""
    return {
        s.spec.name: write_voice_examples(
            folder / s.spec.name, s.spec.path, s.asr_rows, config.sample_rate
        )
        for s in scanned
        if s.asr_rows
    }


def _check_replaceable(dataset_dir: Path) -> None:
    """Refuse to delete a folder that this stage did not make."""
    if not dataset_dir.exists() or not any(dataset_dir.iterdir()):
        return
    card = dataset_dir / "card.json"
    if not card.is_file() or GENERATOR not in card.read_text(encoding="utf-8", errors="replace"):
        raise FileExistsError(
            f"{dataset_dir} exists but was not made by the data-prep stage (no card.json from "
            f"{GENERATOR}); it is rebuilt from scratch on every run, so move it away or choose "
            "another experiment name."
        )


def _run_jobs(
    jobs: list[Job], config: DataPrepConfig, checker: TextChecker, wav_dir: Path, progress: bool
) -> list[Clip | Rejection]:
    """Run jobs in ``config.worker_count()`` processes (inline for one), biggest files first."""
    from tqdm.auto import tqdm

    jobs = sorted(jobs, key=lambda j: -j.path.stat().st_size if j.path.exists() else 0)
    bar = tqdm(total=len(jobs), desc="clips and recordings", unit="file", disable=not progress)
    results: list[Clip | Rejection] = []
    workers = min(config.worker_count(), max(1, len(jobs)))
    if workers == 1:
        worker = Worker(config, checker, wav_dir)
        for job in jobs:
            results.extend(worker.run(job))
            bar.update()
    else:
        _warm_up()
        # fork: workers inherit the imported modules and the tokenizer instead of re-importing;
        # HF tokenizers would otherwise warn that its thread pool cannot survive the fork
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        context = multiprocessing.get_context("fork")
        gc.freeze()  # keep the collector off inherited objects: fewer copy-on-write pages
        try:
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=init_worker,
                initargs=(config, checker, wav_dir),
            ) as pool:  # fmt: skip
                for future in as_completed([pool.submit(run_job, job) for job in jobs]):
                    results.extend(future.result())
                    bar.update()
        finally:
            gc.unfreeze()
    bar.close()
    return results


def _warm_up() -> None:
    """Import librosa's lazy submodules once, before forking, so each worker need not."""
    from voicebook.dataprep.audio import loudness, trim_bounds

    noise = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32)
    trim_bounds(noise, 22050, 40.0, 0.0)
    loudness(noise, 22050)


# --- duplicates, split, accounting ------------------------------------------------------------


def _text_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def drop_duplicates(clips: list[Clip]) -> tuple[list[Clip], list[Rejection]]:
    """Keep the first of clips with the same audio, or the same text and duration within 0.1 s.

    ``clips`` must be in source order (the first one wins).
    """
    kept: list[Clip] = []
    by_hash: dict[str, Clip] = {}
    by_text: dict[str, list[Clip]] = {}
    rejected: list[Rejection] = []
    for clip in clips:
        same = by_hash.get(clip.audio_hash)
        why = "same audio"
        if same is None:
            why = "same text, duration within 0.1 s"
            twins = by_text.get(_text_key(clip.text), [])
            same = next((c for c in twins if abs(c.duration - clip.duration) <= 0.1), None)
        if same is not None:
            rejected.append(
                Rejection(
                    clip.source, clip.item, f"duplicate of {same.source}: {same.item} ({why})",
                    "duplicate", clip.inputs, clip.order, clip.split,
                )
            )  # fmt: skip
            continue
        kept.append(clip)
        by_hash[clip.audio_hash] = clip
        by_text.setdefault(_text_key(clip.text), []).append(clip)
    return kept, rejected


def _rank(seed: int, name: str) -> str:
    return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).hexdigest()


def three_splits(
    clips: list[Clip], config: DataPrepConfig
) -> tuple[list[Clip], list[Clip], list[Clip]]:
    """``(train, validation, test)``: the test clips first (at most a third of the clips), then
    the validation clips from the rest (at most half of it), both by ``eval_split``."""
    test_files = eval_split(clips, config.test_fraction, config.min_test, config.seed, 3)
    rest = [c for c in clips if c.audio_file not in test_files]
    eval_files = eval_split(rest, config.eval_fraction, config.min_eval, config.seed)
    train = [c for c in rest if c.audio_file not in eval_files]
    evals = [c for c in rest if c.audio_file in eval_files]
    return train, evals, [c for c in clips if c.audio_file in test_files]


def eval_split(
    clips: list[Clip], fraction: float, min_eval: int, seed: int, most_part: int = 2
) -> set[str]:
    """The ``audio_file`` of each held-out clip: ``max(min_eval, round(fraction * n))`` clips (at
    most ``1 / most_part`` of them), spread over (source, category) strata in proportion to their
    size, each stratum keeping a training clip where it can. Which: lowest hash of (seed, name)."""
    n = len(clips)
    if n < 2 or min_eval + fraction <= 0:
        return set()
    n_eval = min(max(min_eval, round(fraction * n)), n // most_part)
    strata: dict[tuple[str, str], list[Clip]] = {}
    for clip in clips:
        strata.setdefault((clip.source, clip.category), []).append(clip)
    for members in strata.values():
        members.sort(key=lambda c: _rank(seed, c.audio_file))
    taken = dict.fromkeys(strata, 0)
    for _ in range(n_eval):
        # the stratum furthest below its proportional share that still has a clip to give
        room = [k for k in sorted(strata) if taken[k] < len(strata[k]) - 1] or [
            k for k in sorted(strata) if taken[k] < len(strata[k])
        ]
        best = max(room, key=lambda k: n_eval * len(strata[k]) / n - taken[k])
        taken[best] += 1
    return {c.audio_file for k, members in strata.items() for c in members[: taken[k]]}


def account(
    inventory: Iterable[str],
    train: list[Clip],
    evals: list[Clip],
    rejected: list[Rejection],
    tests: list[Clip] = (),
) -> dict[str, Any]:
    """Check that every input ended in train, eval, test or rejected -- in one place, except
    that a subtitle cue cut at a pause lands wherever each of its parts does.

    Raises ``RuntimeError`` (a bug in this stage, never the user's data) if not.
    """
    inventory = list(inventory)
    places: dict[str, list[tuple[str, bool]]] = {}
    places_of = (("train", train), ("eval", evals), ("test", tests), ("rejected", rejected))
    for where, rows in places_of:
        for row in rows:
            for input_id in row.inputs:
                places.setdefault(input_id, []).append((where, row.split))
    missing = [i for i in inventory if i not in places]
    unknown = [i for i in places if i not in set(inventory)]
    doubled = [i for i, p in places.items() if len(p) > 1 and not all(s for _, s in p)]
    if missing or unknown or doubled or len(set(inventory)) != len(inventory):
        raise RuntimeError(
            f"data-prep bookkeeping error: inputs not placed {missing[:5]}, placed but never "
            f"read {unknown[:5]}, placed twice {doubled[:5]}"
        )
    first_place = Counter(p[0][0] for p in places.values())
    return {
        "inputs": len(inventory),
        "inputs_in_train": first_place["train"],
        "inputs_in_eval": first_place["eval"],
        "inputs_in_test": first_place["test"],
        "inputs_in_rejected": first_place["rejected"],
        "inputs_split_into_parts": sum(1 for p in places.values() if len(p) > 1),
        "rows": {
            "train": len(train),
            "eval": len(evals),
            "test": len(tests),
            "rejected": len(rejected),
        },
        "every_input_placed": True,
    }


# --- writing ------------------------------------------------------------------------------------


def _write_outputs(
    folder: Path,
    train: list[Clip],
    evals: list[Clip],
    rejected: list[Rejection],
    card: dict[str, Any],
    tests: list[Clip] = (),
) -> None:
    import json

    for name, clips in ((TRAIN_META, train), (EVAL_META, evals), (TEST_META, tests)):
        lines = [METADATA_HEADER] + [f"{c.audio_file}|{c.text}|{c.speaker}" for c in clips]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(folder / "rejected.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["source", "item", "reason"])
        writer.writerows([r.source, r.item, r.reason] for r in rejected)
    with open(folder / "clips.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLIP_COLUMNS)
        for split, clips in (("train", train), ("eval", evals), ("test", tests)):
            for c in clips:
                row = asdict(c) | {"split": split, "speaker_name": c.speaker}
                writer.writerow([row[k] for k in CLIP_COLUMNS])
    (folder / "card.json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    rows = [{"source": r.source, "item": r.item, "reason": r.reason} for r in rejected]
    write_card_html(card, folder / "card.html", rows)
