"""A run killed with SIGKILL and resumed equals an uninterrupted run, byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_sgnet.inference import predict_slide
from napari_sgnet.inference.testing import PixelRulePredictor, differing_arrays, pattern_slide
from napari_sgnet.io.labelstore import LabelStore

SCRIPT = """
import sys
from napari_sgnet.inference import predict_slide
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide
predict_slide(pattern_slide(700, 500, seed=11, glass_border=64), sys.argv[1],
              PixelRulePredictor(64, delay_s=0.1), batch_size=2, overlap=4,
              commit_interval=0)
"""
OPTIONS = dict(batch_size=2, overlap=4)


def _done_tiles(path) -> int:
    try:
        return int((LabelStore.open(path, mode="r").done_map() > 0).sum())
    except Exception:  # not created yet, or metadata being written
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 90
        while _done_tiles(path) < 6:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    slide = pattern_slide(700, 500, seed=11, glass_border=64)
    killed = LabelStore.open(path)
    killed.validate(deep=True)
    n_done = int((killed.done_map() > 0).sum())
    assert 6 <= n_done < killed.done_map().size
    assert killed.requests[-1]["status"] == "running"  # it never got to say otherwise

    resumed = predict_slide(slide, path, PixelRulePredictor(64), **OPTIONS)
    assert resumed.tiles_cached == n_done
    predict_slide(slide, tmp_path / "clean.zarr", PixelRulePredictor(64), **OPTIONS)
    assert differing_arrays(path, tmp_path / "clean.zarr") == []
    assert np.all(LabelStore.open(path).done_map() > 0)
