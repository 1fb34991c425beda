"""Viewport sessions: centre-first runs, superseding, caching, model changes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.inference import InferenceSession
from napari_sgnet.inference.testing import PixelRulePredictor, expected_pixel_rule, pattern_slide
from napari_sgnet.io.labelstore import LabelStore


@pytest.fixture(scope="module")
def slide():
    return pattern_slide(700, 500, seed=7)


def test_viewport_run_is_centre_first_and_cached(tmp_path, slide):
    model = PixelRulePredictor(64)
    session = InferenceSession(
        slide, tmp_path / "s.zarr", model, batch_size=1, skip_glass=False, commit_interval=0
    )
    view = Box(200, 150, 300, 200)
    events = list(session.submit(view))
    assert events[-1].stage == "completed"
    first = events[1].boxes[0]
    assert first.contains(Box(350, 250, 1, 1))  # the tile under the view's centre comes first
    batches = model.batches
    again = list(session.submit(view))
    assert again[-1].tiles_total == 0 and again[-1].tiles_cached == events[-1].tiles_done
    assert model.batches == batches  # nothing recomputed


def test_new_region_supersedes_the_running_one(tmp_path, slide):
    model = PixelRulePredictor(64)
    session = InferenceSession(slide, tmp_path / "s.zarr", model, batch_size=2, skip_glass=False)
    first = session.submit(None)
    next(first), next(first)  # started + one batch
    second = session.submit(Box(0, 0, 100, 100))
    assert first.cancelled
    with pytest.raises(StopIteration):
        next(first)
    events = list(second)
    assert events[-1].stage == "completed"
    store = LabelStore.open(tmp_path / "s.zarr")
    store.validate(deep=True)
    statuses = [r["status"] for r in store.requests]
    assert statuses == ["cancelled", "completed"]
    labels, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    np.testing.assert_array_equal(store.read_labels(Box(0, 0, 100, 100)), labels[:100, :100])


def test_supersede_while_running_in_another_thread(tmp_path, slide):
    model = PixelRulePredictor(64, delay_s=0.05)
    session = InferenceSession(slide, tmp_path / "s.zarr", model, batch_size=2, skip_glass=False)
    run = session.submit(None)
    seen: list = []
    started = threading.Event()

    def consume() -> None:
        for ev in run:
            seen.append(ev)
            started.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(20)
    second = session.submit(Box(600, 400, 100, 100))
    final = list(second)[-1]
    worker.join(20)
    assert not worker.is_alive()
    assert seen[-1].stage == "cancelled" and seen[-1].tiles_done < seen[-1].tiles_total
    assert final.stage == "completed"
    LabelStore.open(tmp_path / "s.zarr").validate(deep=True)


def test_changing_the_model_recomputes(tmp_path, slide):
    session = InferenceSession(slide, tmp_path / "s.zarr", PixelRulePredictor(64), skip_glass=False)
    view = Box(0, 0, 128, 128)
    assert list(session.submit(view))[-1].tiles_done == 4
    session.set_model(PixelRulePredictor(64, model_id="pixel-rule:v2"))
    final = list(session.submit(view))[-1]
    assert final.tiles_done == 4 and final.tiles_cached == 0
    assert session.model_id == "pixel-rule:v2"
