"""Opening a QuPath .geojson on a slide in a shown napari window: the npe2 reader claims it,
the dock opens it as a pending edit, the dock's Commit button writes it (Xvfb)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_sgnet._napari.geojson_layer import IMPORT_ROLE
from napari_sgnet._napari.layers import image_layer_data
from napari_sgnet._napari.reader import get_reader
from napari_sgnet._napari.session import layer_role
from napari_sgnet._qt.widget import SGNetWidget
from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.palette import GLEASON

pytestmark = pytest.mark.gui

MPP = 0.5
TIMEOUT = 60_000


def _polygon(path: Path, cls: str, ring: list, hole: list | None = None) -> Path:
    rings = [ring, *([hole] if hole else [])]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": cls, "color": [245, 130, 48]},
                },
            }
        ],
    }
    path.write_text(json.dumps(doc))
    return path


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def test_reader_claims_only_polygon_geojson(tmp_path):
    good = _polygon(tmp_path / "a.geojson", "Benign", _square(0, 0, 10, 10))
    assert get_reader(str(good)) is not None
    points = tmp_path / "p.geojson"
    points.write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "properties": {},
                    "geometry": {"type": "Point", "coordinates": [1, 2]},
                }
            ]
        )
    )
    broken = tmp_path / "b.geojson"
    broken.write_text("{not json")
    for path in (points, broken, tmp_path / "missing.geojson"):
        assert get_reader(str(path)) is None
    assert get_reader([str(good), str(points)]) is None


def _open(make_napari_viewer, tmp_path):
    slide = pattern_slide(512, 512, mpp=MPP, levels=2, name="small")
    store = LabelStore.create(
        tmp_path / "stores" / "slide.sgnet.zarr",
        slide=slide,
        palette=GLEASON,
        base_downsample=2.0,
        tile=64,
    )
    store.write_tile(
        Box(0, 0, 256, 256),
        np.full((256, 256), 2, np.uint8),
        np.full((256, 256), 90, np.uint8),
        respect_edited=False,
    )
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(
        viewer, model=PixelRulePredictor(64, mpp=1.0), store_dir=tmp_path / "stores"
    )
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    return viewer, widget, store


def test_opening_a_geojson_becomes_an_edit_that_commit_writes(make_napari_viewer, qtbot, tmp_path):
    viewer, widget, store = _open(make_napari_viewer, tmp_path)
    c = widget.controller
    qtbot.waitUntil(lambda: c.session is not None, timeout=TIMEOUT)
    # Slide level-0 pixels; a 2-px store pixel: store box x 50..150, y 100..160, hole 80..100.
    path = _polygon(
        tmp_path / "qupath.geojson",
        "gleason 4",
        _square(100, 200, 300, 320),
        _square(160, 220, 200, 260)[::-1],
    )
    layers = viewer.open(str(path), plugin="napari-sgnet")  # what File > Open / a drop do
    assert len(layers) == 1 and layer_role(layers[0]) == IMPORT_ROLE
    outline = layers[0]
    np.testing.assert_allclose(outline.scale, [MPP, MPP])  # sits on the slide
    qtbot.waitUntil(lambda: c.layer("edit") is not None, timeout=TIMEOUT)
    edit = c.session.edit
    assert edit.box == Box(50, 100, 100, 60)
    want = np.ones((60, 100), dtype=bool)
    want[10:30, 30:50] = False  # the hole
    np.testing.assert_array_equal(edit.imported, want)
    layer = c.layer("edit")
    assert (np.asarray(layer.data)[want] == 4).all()
    assert "Imported 1 annotation(s)" in widget.status_label.text()
    # The edit crop and the outline sit on the same world (µm) rectangle over the slide.
    y0, x0, y1, x1 = c.session.world_box(edit.box)
    lo, hi = np.asarray(outline.extent.world)
    assert tuple(lo) == pytest.approx((y0, x0)) and tuple(hi) == pytest.approx((y1, x1))
    assert (y0, x0) == pytest.approx((200 * MPP - MPP / 2, 100 * MPP - MPP / 2))
    with qtbot.waitSignal(widget.review.committed, timeout=TIMEOUT) as blocker:
        widget.commit_btn.click()
    record = blocker.args[0]
    assert record["pixels"] == int(want.sum())
    assert record["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["source"]["file"] == str(path) and record["source"]["features"] == 1
    fresh = LabelStore.open(store.path, mode="r")
    labels = fresh.read_labels(Box(50, 100, 100, 60))
    edited = fresh.read_edited(Box(50, 100, 100, 60)).astype(bool)
    np.testing.assert_array_equal(edited, want)
    assert (labels[want] == 4).all() and (labels[~want] == 2).all()
    assert fresh.read_edited(Box(0, 0, 256, 256)).sum() == want.sum()
    assert c.layer("edit") is None


def test_unknown_class_is_a_message_and_no_edit(make_napari_viewer, qtbot, tmp_path):
    viewer, widget, store = _open(make_napari_viewer, tmp_path)
    c = widget.controller
    qtbot.waitUntil(lambda: c.session is not None, timeout=TIMEOUT)
    path = _polygon(tmp_path / "bad.geojson", "Tumour", _square(10, 10, 60, 60))
    viewer.open(str(path), plugin="napari-sgnet")
    qtbot.waitUntil(lambda: "Tumour" in widget.status_label.text(), timeout=TIMEOUT)
    text = widget.status_label.text()
    assert "'Gleason 3'" in text and "'Benign'" in text
    assert c.layer("edit") is None and c.session.edit is None
    assert store.commits == []


def test_no_store_yet_is_a_message(make_napari_viewer, qtbot, tmp_path):
    slide = pattern_slide(256, 256, mpp=MPP, levels=1, name="bare")
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(
        viewer, model=PixelRulePredictor(64, mpp=1.0), store_dir=tmp_path / "stores"
    )
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    assert widget.controller.session is None
    path = _polygon(tmp_path / "a.geojson", "Benign", _square(10, 10, 60, 60))
    (outline,) = viewer.open(str(path), plugin="napari-sgnet")
    assert "needs the slide's label store" in widget.status_label.text()
    assert widget.controller.layer("edit") is None
    assert not (tmp_path / "stores").exists() or not any((tmp_path / "stores").iterdir())
    np.testing.assert_allclose(outline.scale, [MPP, MPP])  # still placed on the slide
