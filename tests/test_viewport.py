"""Viewport maths against napari's own world-to-data transform (ViewerModel, no window).

``view_of_viewer`` is how the app reads the camera ("Run on view", the zoomed-out check,
"Edit region"), so these tests pin production code.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet.app.viewport import ViewState, view_downsample, view_of_viewer, visible_box
from napari_sgnet.geometry import Box


def test_visible_box_centre_zoom_canvas():
    view = ViewState(center=(500.0, 1000.0), zoom=2.0, canvas_size=(400, 800))
    # 800 x 400 screen px at zoom 2 -> 400 x 200 world units around the centre
    assert visible_box(view) == Box(800, 400, 400, 200)
    # a layer with 0.5 µm/px: the same world window covers twice the data pixels
    assert visible_box(view, scale=(0.5, 0.5)) == Box(1600, 800, 800, 400)
    # translate shifts the data window the other way
    assert visible_box(view, translate=(100.0, 200.0)) == Box(600, 300, 400, 200)


def test_visible_box_clips_to_image():
    view = ViewState(center=(0.0, 0.0), zoom=1.0, canvas_size=(100, 100))
    assert visible_box(view, image_size=(1000, 1000)) == Box(0, 0, 50, 50)
    far = ViewState(center=(-5000.0, -5000.0), zoom=1.0, canvas_size=(100, 100))
    assert visible_box(far, image_size=(1000, 1000)).is_empty


def test_view_downsample():
    assert view_downsample(ViewState((0, 0), 0.25, (10, 10))) == pytest.approx(4.0)
    assert view_downsample(ViewState((0, 0), 1.0, (10, 10)), scale=(0.5, 0.5)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        ViewState((0, 0), 0.0, (10, 10))


def test_visible_box_matches_napari_world_to_data():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layer = viewer.add_image(
        np.zeros((4000, 3000), dtype=np.uint8), scale=(0.5, 0.5), translate=(10.0, 20.0)
    )
    viewer.camera.center = (700.0, 400.0)
    viewer.camera.zoom = 1.5
    view = view_of_viewer(viewer)
    box = visible_box(view, scale=tuple(layer.scale), translate=tuple(layer.translate))
    h, w = viewer.canvas.size
    cy, cx = viewer.camera.center[-2:]
    top_left = layer.world_to_data((cy - h / 3.0, cx - w / 3.0))
    bottom_right = layer.world_to_data((cy + h / 3.0, cx + w / 3.0))
    assert box.x == pytest.approx(top_left[1], abs=1) and box.y == pytest.approx(top_left[0], abs=1)
    assert box.x1 == pytest.approx(bottom_right[1], abs=1)
    assert box.y1 == pytest.approx(bottom_right[0], abs=1)
