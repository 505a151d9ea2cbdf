"""Scraps survive the JSON trip: DataFrames, numpy numbers, NaN, paths."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from voicebook.core.scraps import _jsonable, _restore, read_scraps


def test_dataframe_numpy_and_nan_round_trip():
    curves = pd.DataFrame({"step": [0, 100], "split": ["train", "eval"], "loss_mel_ce": [6.5, 6.0]})
    value = {
        "curves": curves,
        "best": np.float32(2.5),
        "n": np.int64(3),
        "bad": float("nan"),
        "path": Path("/x/best.pth"),
    }
    back = _restore(_jsonable(value))
    pd.testing.assert_frame_equal(back["curves"], curves)
    assert back["best"] == 2.5 and back["n"] == 3 and type(back["n"]) is int
    assert back["bad"] is None and back["path"] == "/x/best.pth"


def test_reading_a_stage_that_has_not_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run that stage first"):
        read_scraps(tmp_path / "01_phase1.ipynb")
