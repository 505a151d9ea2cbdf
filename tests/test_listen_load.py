"""Many raters at once: 8 processes (as ``voicebook listen`` runs one kernel per page) each give
50 ratings through the served panel's own widgets, into one ratings file."""

from __future__ import annotations

import csv
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicebook.evaluation.listening import panel as lp
from voicebook.evaluation.listening import session as ls

RATERS = [f"rater{i}" for i in range(8)]
PER_RATER = 50  # 10 sentences x 5 candidates


def fake_samples(folder: Path, sentences: int = 10, candidates: int = 5) -> list[ls.Sample]:
    """Short beeps in place of syntheses: every rating path, none of the cost."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for c in range(candidates):
        wav = folder / f"c{c}.wav"
        sf.write(wav, 0.1 * np.sin(np.linspace(0, 300 * (c + 1), 1200)), 24000)
        samples += [ls.Sample(f"c{c}", f"s{s:02d}", f"Mondat {s}, vessző.", wav)
                    for s in range(sentences)]  # fmt: skip
    return samples


def overall_for(rater: str, i: int) -> int:
    return 1 + (i * 7 + int(rater[-1])) % 10


def rate_as(rater: str, ratings: str, folder: str, start_at: float) -> float:
    """One rater's page: the served panel (name fixed), every sample scored by clicking its
    scales and Save, as the page's widgets do; returns the seconds it took."""
    samples = fake_samples(Path(folder))
    panel = lp.ListeningPanel(ratings, samples, seed="load", rater=rater)
    time.sleep(max(0.0, start_at - time.time()))  # every rater starts together
    began = time.perf_counter()
    for i in range(PER_RATER):
        scales = [x for x in _all(panel.stage) if x.__class__.__name__ == "ToggleButtons"]
        for scale, x in zip(ls.SCALES, scales, strict=True):
            x.value = overall_for(rater, i) if scale == "overall" else 5
        save = next(
            b for b in _all(panel.stage) if getattr(b, "description", "") == "Save and next"
        )
        save.click()
        assert "✓ Saved" in panel.saved.value, panel.saved.value
    assert panel.session.progress() == (PER_RATER, PER_RATER)
    return time.perf_counter() - began


def _all(widget) -> list:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _all(child)
    return found


@pytest.mark.slow
def test_eight_raters_at_once_lose_double_and_interleave_nothing(tmp_path):
    ratings = tmp_path / "exp" / "ratings.csv"
    start_at = time.time() + 4  # after every process has imported and built its panel
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(RATERS), mp_context=context) as pool:
        futures = [
            pool.submit(rate_as, r, str(ratings), str(tmp_path / f"wavs{i}"), start_at)
            for i, r in enumerate(RATERS)
        ]
        each = [f.result() for f in futures]
        wall = time.time() - start_at
    print(f"\n{len(RATERS)} raters x {PER_RATER} ratings: the slowest rater took "
          f"{max(each):.1f} s, {len(RATERS) * PER_RATER / max(each):.0f} ratings/s in all "
          f"(all 400 rows on disk {wall:.1f} s after the start)")  # fmt: skip

    with ratings.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ls.COLUMNS and len(rows) == 1 + len(RATERS) * PER_RATER
    assert all(len(r) == len(ls.COLUMNS) for r in rows)  # no row cut into or run together
    table = ls.read_ratings(ratings)
    for rater in RATERS:
        mine = table[table["rater"] == rater]
        assert len(mine) == PER_RATER
        assert len(set(zip(mine["sentence"], mine["candidate"], strict=True))) == PER_RATER
        expected = [overall_for(rater, i) for i in range(PER_RATER)]
        assert mine["overall"].astype(int).tolist() == expected  # in the order given
        assert (mine[["smoothness", "naturalness", "emotion"]] == 5).all().all()
