"""The tiled engine: exact stitching, pieces == whole, edits, glass, cancellation, resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.inference import InferenceRequest, make_plan, predict_slide, run_inference
from napari_sgnet.inference.testing import (
    PixelRulePredictor,
    differing_arrays,
    expected_pixel_rule,
    pattern_slide,
    store_arrays,
)
from napari_sgnet.io.labelstore import DONE_GLASS, DONE_PREDICTED, LabelStore
from napari_sgnet.io.labelstore.pyramid import mode_downsample2


def assert_same_store(a, b) -> None:
    assert differing_arrays(a, b) == []


def assert_pyramid_consistent(path) -> None:
    arrays = store_arrays(path)
    k = 1
    while f"level{k}" in arrays:
        np.testing.assert_array_equal(
            arrays[f"level{k}"], mode_downsample2(arrays[f"level{k - 1}"])
        )
        k += 1


@pytest.fixture(scope="module")
def slide():
    return pattern_slide(701, 499, seed=3, mpp=0.5)


@pytest.mark.parametrize(("overlap", "context"), [(0, 2.0), (7, 2.0), (12, None), (5, 1.5)])
def test_pixel_rule_is_reproduced_exactly(tmp_path, slide, overlap, context):
    model = PixelRulePredictor(64, context_factor=context)
    final = predict_slide(
        slide, tmp_path / "s.zarr", model, overlap=overlap, batch_size=3, skip_glass=False
    )
    assert final.stage == "completed" and final.tiles_done == final.tiles_total
    s = LabelStore.open(tmp_path / "s.zarr")
    labels, conf = expected_pixel_rule(np.asarray(slide.levels[0]))
    full = Box(0, 0, 701, 499)
    np.testing.assert_array_equal(s.read_labels(full), labels)
    np.testing.assert_array_equal(s.read_confidence(full), conf)
    assert (s.done_map() == DONE_PREDICTED).all()
    s.validate(deep=True)
    assert_pyramid_consistent(tmp_path / "s.zarr")


def test_runs_at_the_level_closest_to_the_model_mpp(tmp_path, slide):
    model = PixelRulePredictor(32, mpp=1.005)  # 0.5 µm/px slide: level 1 (1.0, within 1%)
    final = predict_slide(slide, tmp_path / "s.zarr", model, skip_glass=False, overlap=3)
    assert (final.level, final.downsample) == (1, 2.0)
    s = LabelStore.open(tmp_path / "s.zarr")
    assert s.base_downsample == 2.0 and (s.height, s.width) == (250, 351)
    labels, _ = expected_pixel_rule(np.asarray(slide.levels[1]))
    np.testing.assert_array_equal(s.read_labels(Box(0, 0, 351, 250)), labels)


def test_pieces_and_regions_equal_one_pass(tmp_path, slide):
    model = PixelRulePredictor(64)
    opts = dict(overlap=6, batch_size=4, skip_glass=False)
    predict_slide(slide, tmp_path / "whole.zarr", model, **opts)
    for region in [(0, 0, 300, 200), (250, 150, 200, 300), None]:
        ev = predict_slide(slide, tmp_path / "pieces.zarr", model, region=region, **opts)
    assert ev.tiles_cached > 0  # the last (whole) pass only did the remaining tiles
    assert_same_store(tmp_path / "whole.zarr", tmp_path / "pieces.zarr")


def test_region_covers_whole_tiles_and_validates(tmp_path, slide):
    model = PixelRulePredictor(64)
    ev = predict_slide(
        slide, tmp_path / "s.zarr", model, region=(100, 100, 10, 10), skip_glass=False
    )
    assert ev.tiles_done == 1
    done = LabelStore.open(tmp_path / "s.zarr").done_map()
    assert done.sum() == 1 and done[1, 1] == DONE_PREDICTED


def test_edited_pixels_survive_a_rerun(tmp_path, slide):
    model = PixelRulePredictor(64)
    path = tmp_path / "s.zarr"
    predict_slide(slide, path, model, skip_glass=False)
    s = LabelStore.open(path)
    box = Box(60, 50, 30, 20)
    s.commit_edit(box, np.full((20, 30), 5, np.uint8))
    predict_slide(slide, path, model, skip_glass=False, resume=False)
    got = s.read_labels(Box(0, 0, 701, 499))
    expected, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    expected[box.slices()] = 5
    np.testing.assert_array_equal(got, expected)
    assert_pyramid_consistent(path)


def test_glass_tiles_are_skipped_and_labelled(tmp_path):
    slide = pattern_slide(640, 512, glass_border=128, mpp=0.5)
    model = PixelRulePredictor(64, delay_s=0.0)
    final = predict_slide(slide, tmp_path / "s.zarr", model, batch_size=4)
    assert 0 < final.tiles_glass < final.tiles_done
    assert final.tissue_fraction == pytest.approx(final.tiles_predicted / final.tiles_done)
    s = LabelStore.open(tmp_path / "s.zarr")
    done = s.done_map()
    assert done[0, 0] == DONE_GLASS and done[4, 4] == DONE_PREDICTED
    # glass is "no label" (0, confidence 0) by default ...
    assert (s.read_labels(s.tile_box((0, 0))) == 0).all()
    assert (s.read_confidence(s.tile_box((0, 0))) == 0).all()
    # ... or an explicit label with full confidence when asked for
    predict_slide(slide, tmp_path / "one.zarr", model, glass_label=1)
    one = LabelStore.open(tmp_path / "one.zarr")
    assert (one.read_labels(Box(0, 0, 64, 64)) == 1).all()
    assert (one.read_confidence(Box(0, 0, 64, 64)) == 255).all()


def test_centre_first_order(slide):
    plan = make_plan(
        slide, PixelRulePredictor(64).info, region=Box(200, 100, 400, 300), order="center"
    )
    centre = plan.region.center
    dist = [np.hypot(*(np.add(plan.tile_box(t).center, 0) - centre)) for t in plan.tiles]
    assert dist == sorted(dist)
    assert plan.tile_box(plan.tiles[0]).contains(Box(int(centre[0]), int(centre[1]), 1, 1))


def test_events_report_progress(tmp_path, slide):
    events = list(
        run_inference(
            InferenceRequest(
                slide, tmp_path / "s.zarr", PixelRulePredictor(64), batch_size=5, skip_glass=False
            )
        )
    )
    assert events[0].stage == "started" and events[-1].stage == "completed"
    done = [e.tiles_done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].tiles_total == 88
    covered = [b for e in events for b in e.boxes]
    assert len(covered) == 88 and events[1].boxes  # the first batch is shown at once
    assert events[-1].megapixels == pytest.approx(701 * 499 / 1e6)
    assert events[-1].mpix_per_s > 0 and events[-1].eta_s == 0
    assert LabelStore.open(tmp_path / "s.zarr").requests[-1]["status"] == "completed"


def _check_consistent_partial(path, slide) -> int:
    s = LabelStore.open(path)
    s.validate(deep=True)
    assert_pyramid_consistent(path)
    labels, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    done = s.done_map()
    for ty, tx in zip(*np.nonzero(done), strict=False):
        box = s.tile_box((ty, tx))
        np.testing.assert_array_equal(s.read_labels(box), labels[box.slices()])
    return int((done > 0).sum())


def test_cancel_with_event_leaves_a_consistent_store(tmp_path, slide):
    cancel = threading.Event()
    path = tmp_path / "s.zarr"
    events = []
    for ev in run_inference(
        InferenceRequest(slide, path, PixelRulePredictor(64), batch_size=4, skip_glass=False),
        cancel=cancel,
    ):
        events.append(ev)
        if len(events) == 3:
            cancel.set()
    assert events[-1].stage == "cancelled"
    n_done = _check_consistent_partial(path, slide)
    assert n_done == events[-1].tiles_done == 8
    assert LabelStore.open(path).requests[-1]["status"] == "cancelled"
    # Resume finishes the job, recomputing nothing already done, and equals one pass.
    final = predict_slide(slide, path, PixelRulePredictor(64), batch_size=4, skip_glass=False)
    assert final.tiles_cached == 8 and final.tiles_done == 88 - 8
    predict_slide(slide, tmp_path / "one.zarr", PixelRulePredictor(64), skip_glass=False)
    assert_same_store(path, tmp_path / "one.zarr")


def test_closing_the_generator_leaves_a_consistent_store(tmp_path, slide):
    path = tmp_path / "s.zarr"
    gen = run_inference(
        InferenceRequest(slide, path, PixelRulePredictor(64), batch_size=4, skip_glass=False)
    )
    for _ in range(3):
        next(gen)
    gen.close()
    assert _check_consistent_partial(path, slide) == 8
    assert LabelStore.open(path).requests[-1]["status"] == "cancelled"


def test_model_change_recomputes_or_refuses(tmp_path, slide):
    from napari_sgnet.errors import StoreError

    path = tmp_path / "s.zarr"
    predict_slide(slide, path, PixelRulePredictor(64), skip_glass=False)
    again = predict_slide(slide, path, PixelRulePredictor(64), skip_glass=False)
    assert again.tiles_total == 0 and again.tiles_cached == 88
    other = PixelRulePredictor(64, model_id="pixel-rule:v2")
    with pytest.raises(StoreError, match="holds predictions of model pixel-rule:v1"):
        predict_slide(slide, path, other, skip_glass=False, resume=False)
    changed = predict_slide(slide, path, other, skip_glass=False, resume=True)
    assert changed.tiles_cached == 0 and changed.tiles_done == 88
    assert LabelStore.open(path).model["id"] == "pixel-rule:v2"


def test_bad_requests_give_clear_errors(tmp_path, slide, monkeypatch):
    from napari_sgnet.errors import StoreError
    from napari_sgnet.inference import RequestError
    from napari_sgnet.palette import ClassInfo, Palette

    model = PixelRulePredictor(64)
    path = tmp_path / "s.zarr"
    with pytest.raises(RequestError, match="outside the slide"):
        predict_slide(slide, path, model, region=(800, 0, 50, 50))
    with pytest.raises(RequestError, match="overlap 32 leaves no valid centre"):
        predict_slide(slide, path, model, overlap=32)
    with pytest.raises(RequestError, match="batch_size"):
        InferenceRequest(slide, path, model, batch_size=0)
    with pytest.raises(RequestError, match="device"):
        InferenceRequest(slide, path, model, device="tpu")
    with pytest.raises(RequestError, match="slide must be a path or a Pyramid"):
        InferenceRequest(object(), path, model)
    predict_slide(slide, path, model, region=(0, 0, 10, 10))
    with pytest.raises(StoreError, match="was made for slide") as err:
        predict_slide(pattern_slide(640, 480), path, model)
    assert str(path) in str(err.value)
    two = Palette("two", (ClassInfo("a", (1, 2, 3)), ClassInfo("b", (4, 5, 6))))
    with pytest.raises(StoreError, match="palette mismatch"):
        predict_slide(slide, path, PixelRulePredictor(64, palette=two))
    with pytest.raises(StoreError, match="was tiled with 64-px tiles"):
        predict_slide(slide, path, model, overlap=4)

    import zarr

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zarr.Group, "update_attributes", read_only)
    with pytest.raises(StoreError, match="cannot write label store") as err:
        predict_slide(slide, path, model)
    assert str(path) in str(err.value)
