"""Review-session logic on ``napari.components.ViewerModel`` (no Qt, no window)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402

from napari_sgnet._napari.layers import image_layer_data  # noqa: E402
from napari_sgnet._napari.session import (  # noqa: E402
    confidence_layer_data,
    edit_layer_data,
    layer_role,
    prediction_layer_data,
    pyramid_from_layer,
)
from napari_sgnet.app.review import (  # noqa: E402
    RegionTooLargeError,
    ReviewError,
    ReviewSession,
    coarse_view_message,
    store_transform,
    tiles_covering,
)
from napari_sgnet.app.store_paths import store_path_for  # noqa: E402
from napari_sgnet.app.viewport import ViewState, camera_of, view_of_viewer  # noqa: E402
from napari_sgnet.geometry import Box  # noqa: E402
from napari_sgnet.inference.engine import run_inference  # noqa: E402
from napari_sgnet.inference.request import InferenceRequest  # noqa: E402
from napari_sgnet.inference.testing import (  # noqa: E402
    PixelRulePredictor,
    expected_pixel_rule,
    pattern_slide,
)
from napari_sgnet.io.labelstore import LabelStore  # noqa: E402

MPP = 0.5
B = 2  # the predictor runs at 1.0 µm/px: store level 0 = slide level 1


def _run(slide, store_path, region=None, **kw):
    pred = PixelRulePredictor(64, mpp=1.0)
    req = InferenceRequest(slide=slide, store=store_path, model=pred, region=region,
                           device="cpu", skip_glass=False, **kw)
    return list(run_inference(req))[-1]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    slide = pattern_slide(700, 500, mpp=MPP, levels=3)
    path = tmp_path_factory.mktemp("base") / "slide.sgnet.zarr"
    last = _run(slide, path)
    assert last.stage == "completed"
    return slide, path


@pytest.fixture()
def setup(base_store, tmp_path):
    slide, path = base_store
    copy = tmp_path / "slide.sgnet.zarr"
    shutil.copytree(path, copy)
    store = LabelStore.open(copy, slide=slide)
    viewer = ViewerModel()
    data, kwargs, _kind = image_layer_data(slide, name="slide")
    image = viewer.add_image(data, **kwargs)
    session = ReviewSession(slide, store, slide_scale=tuple(image.scale), slide_translate=(0, 0))
    return viewer, image, session


def _view(center_px, zoom_screen_per_px, canvas=(400, 600)):
    """A view centred on slide pixel ``(y, x)`` with ``zoom`` screen px per slide px."""
    return ViewState(center=(center_px[0] * MPP, center_px[1] * MPP),
                     zoom=zoom_screen_per_px / MPP, canvas_size=canvas)


def test_prediction_layer_aligns_with_slide_pixels(setup):
    viewer, image, session = setup
    data, kwargs, _ = prediction_layer_data(session.store, slide_scale=tuple(image.scale))
    layer = viewer.add_labels(data, **kwargs)
    assert layer.multiscale and layer_role(layer) == "prediction"
    assert np.allclose(layer.scale, (MPP * B, MPP * B))
    rng = np.random.default_rng(1)
    for y, x in rng.integers(0, 490, size=(20, 2)):
        world = image.data_to_world((y, x))
        sy, sx = np.round(layer.world_to_data(world)).astype(int)
        assert (sy, sx) == (y // B, x // B)
    # the labels under a slide pixel are the pixel rule of the slide's level 1
    lv1 = np.asarray(session.slide.levels[1])
    labels, _ = expected_pixel_rule(lv1)
    assert np.array_equal(np.asarray(data[0]), labels)


def test_confidence_layer_is_multiscale_and_aligned(setup):
    viewer, image, session = setup
    data, kwargs, kind = confidence_layer_data(session.store, slide_scale=tuple(image.scale))
    layer = viewer.add_image(data, **kwargs)
    assert kind == "image" and layer.multiscale
    assert [tuple(lv.shape) for lv in data] == session.store.level_shapes
    assert np.array_equal(np.asarray(data[0]), session.store.read_confidence(
        Box(0, 0, session.store.width, session.store.height)))


def test_edit_crop_translate_and_scale(setup):
    viewer, image, session = setup
    camera_of(viewer).center = (200 * MPP, 300 * MPP)
    camera_of(viewer).zoom = 2.0 / MPP  # 2 screen px per slide px
    view = view_of_viewer(viewer)
    box = session.edit_box(view)
    h, w = view.canvas_size
    assert abs(box.w - w / 2 / B) <= 2 and abs(box.h - h / 2 / B) <= 2
    edit = session.start_edit(box)
    data, kwargs, _ = edit_layer_data(edit, session.store, slide_scale=tuple(image.scale))
    layer = viewer.add_labels(data, **kwargs)
    assert not layer.multiscale
    rng = np.random.default_rng(2)
    for _ in range(20):
        y = int(rng.integers(box.y * B, box.y1 * B))
        x = int(rng.integers(box.x * B, box.x1 * B))
        cy, cx = np.round(layer.world_to_data(image.data_to_world((y, x)))).astype(int)
        assert (cy, cx) == (y // B - box.y, x // B - box.x)
        assert layer.data[cy, cx] == session.store.read_labels(Box(x // B, y // B, 1, 1))[0, 0]


def test_edit_size_cap_and_empty_view(setup):
    _, _, session = setup
    session.max_edit_side = 64
    with pytest.raises(RegionTooLargeError, match="Zoom in"):
        session.edit_box(_view((250, 350), 0.5))
    with pytest.raises(ReviewError, match="no part of the slide"):
        session.edit_box(_view((-5000, -5000), 2.0))


def test_commit_marks_edited_and_survives_rerun(setup):
    viewer, image, session = setup
    box = Box(40, 30, 100, 80)
    edit = session.start_edit(box)
    data, kwargs, _ = edit_layer_data(edit, session.store, slide_scale=tuple(image.scale))
    layer = viewer.add_labels(data, **kwargs)
    session.set_edit_labels(layer.data)
    layer.brush_size = 5
    layer.paint((40, 50), 5)  # as a brush stroke does
    changed = layer.data != edit.original
    assert changed.sum() > 10 and session.has_uncommitted_edits
    record = session.commit(author="test")
    assert record["pixels"] == int(changed.sum())
    assert session.edit is None and not session.has_uncommitted_edits
    store = session.store
    edited = store.read_edited(box).astype(bool)
    assert np.array_equal(edited, changed)
    assert (store.read_labels(box)[changed] == 5).all()
    assert (store.read_confidence(box)[changed] == 255).all()
    assert session.reviewed == [box]
    # the coarser levels were refreshed over the footprint
    assert (store.read_labels(Box(box.x // 2, box.y // 2, box.w // 2, box.h // 2), 1) == 5).any()
    # a later run (same model, all tiles redone) keeps the correction
    store.reset_done()
    _run(session.slide, store.path)
    assert (store.read_labels(box)[changed] == 5).all()


def test_commit_keeps_predictions_that_landed_during_the_edit(setup):
    _, _, session = setup
    box = Box(0, 0, 64, 64)
    edit = session.start_edit(box)
    edit.labels[10:20, 10:20] = 5  # the pixel rule predicts 1-4: every pixel changes
    # a prediction lands under the crop while it is open
    session.store.write_tile(Box(0, 0, 64, 64), np.full((64, 64), 2, np.uint8),
                             np.full((64, 64), 9, np.uint8))
    session.commit()
    out = session.store.read_labels(box)
    assert (out[10:20, 10:20] == 5).all() and (out[30:, 30:] == 2).all()


def test_discard_leaves_store_untouched(setup):
    _, _, session = setup
    box = Box(10, 10, 50, 50)
    before = session.store.read_labels(box)
    edit = session.start_edit(box)
    edit.labels[:] = 3
    session.autosave()
    assert session.pending() is not None
    session.discard()
    assert session.edit is None and session.pending() is None
    assert np.array_equal(session.store.read_labels(box), before)
    assert not session.store.read_edited(box).any()
    with pytest.raises(ReviewError):
        session.commit()


def test_autosave_restores_after_reopen(setup):
    _, image, session = setup
    box = Box(20, 20, 70, 40)
    edit = session.start_edit(box)
    assert not session.autosave()  # nothing changed yet
    edit.labels[5:15, 5:25] = 1
    assert session.autosave()
    assert not session.autosave()  # unchanged since
    edit.labels[20:30, 30:40] = 4
    assert session.autosave()  # second slot
    # the app "crashes": a fresh session on the reopened store
    store = LabelStore.open(session.store.path, slide=session.slide)
    again = ReviewSession(session.slide, store, slide_scale=tuple(image.scale))
    with pytest.raises(ReviewError, match="restore"):
        again.start_edit(Box(0, 0, 10, 10))
    restored = again.restore_pending()
    assert restored is not None and restored.box == box
    assert np.array_equal(restored.labels, edit.labels)
    assert np.array_equal(restored.original, edit.original)
    assert again.has_uncommitted_edits and not restored.unsaved
    again.commit()
    assert (store.read_labels(box)[20:30, 30:40] == 4).all()
    assert LabelStore.open(store.path).commits[-1]["pixels"] == int(
        (restored.labels != restored.original).sum())
    assert again.pending() is None


def test_autosave_never_resurrects_a_committed_edit(setup):
    _, _, session = setup
    edit = session.start_edit(Box(0, 0, 200, 200))
    edit.labels[:50] = 5
    threads = [threading.Thread(target=session.autosave, kwargs={"force": True})
               for _ in range(4)]
    for t in threads:
        t.start()
    session.commit()
    for t in threads:
        t.join()
    assert session.pending() is None


def test_reviewed_regions_persist(setup):
    _, _, session = setup
    session.mark_reviewed(Box(0, 0, 10, 10))
    session.mark_reviewed(Box(10, 0, 10, 10))
    again = ReviewSession(session.slide, LabelStore.open(session.store.path))
    assert again.reviewed == [Box(0, 0, 10, 10), Box(10, 0, 10, 10)]


def test_camera_for_shows_the_box(setup):
    viewer, _image, session = setup
    box = Box(100, 60, 40, 30)
    center, zoom = session.camera_for(box, tuple(viewer.canvas.size))
    camera_of(viewer).center, camera_of(viewer).zoom = center, zoom
    shown = session.store_box(view_of_viewer(viewer))
    assert shown.contains(box)
    assert shown.w < box.w * 3 or shown.h < box.h * 3


def test_coarse_view_message():
    box = Box(0, 0, 20000, 20000)
    view = ViewState(center=(0, 0), zoom=0.01, canvas_size=(800, 800))
    assert tiles_covering(box, 4.0, 256) == 400
    msg = coarse_view_message(view, box, (0.5, 0.5), 4.0, 256, max_tiles=64)
    assert msg and "400 tiles" in msg and "anyway" in msg
    assert coarse_view_message(view, Box(0, 0, 1000, 1000), (0.5, 0.5), 4.0, 256) is None


def test_store_transform_matches_ngff():
    scale, translate = store_transform(4.0, (0.25, 0.25))
    assert scale == (1.0, 1.0) and translate == (0.375, 0.375)


def test_pyramid_from_layer_and_store_path(setup, tmp_path, monkeypatch):
    _, image, session = setup
    pyr = pyramid_from_layer(image)
    assert pyr.mpp == MPP and pyr.downsamples == (1.0, 2.0, 4.0)
    assert pyr.shape == session.slide.shape
    monkeypatch.setenv("NAPARI_SGNET_STORE_DIR", str(tmp_path))
    assert store_path_for(pyr) == tmp_path / "slide.sgnet.zarr"


def test_next_uncertain_skips_reviewed_regions(setup):
    _, _, session = setup
    session.region_um = 128.0
    first, left = session.next_region()
    assert first is not None and left > 0
    session.show_region(first)
    second, left2 = session.next_region()
    assert second is not None and second.box != first.box and left2 == left - 1


def test_qt_layer_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, napari_sgnet._qt.widget, napari_sgnet._qt.demo; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
