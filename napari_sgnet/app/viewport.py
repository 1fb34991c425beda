"""Viewport maths: what part of a slide the camera shows, as a pure function.

The visible region comes from the camera centre, zoom and canvas size (not from
``corner_pixels``, which lags and is clipped to the layer's loaded level), converted
to a layer's data coordinates with its scale and translate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from napari_sgnet.geometry import Box

__all__ = ["ViewState", "camera_of", "view_downsample", "view_of_viewer", "visible_box"]


@dataclass(frozen=True)
class ViewState:
    """A snapshot of the 2-D camera.

    Parameters
    ----------
    center : tuple of float
        Camera centre in world coordinates ``(y, x)``.
    zoom : float
        Screen pixels per world unit.
    canvas_size : tuple of int
        Canvas ``(height, width)`` in screen pixels.
    """

    center: tuple[float, float]
    zoom: float
    canvas_size: tuple[int, int]

    def __post_init__(self) -> None:
        if not self.zoom > 0:
            raise ValueError(f"zoom must be positive, got {self.zoom}")


def visible_box(
    view: ViewState,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    translate: tuple[float, float] = (0.0, 0.0),
    image_size: tuple[int, int] | None = None,
) -> Box:
    """The data-pixel box of a layer that the camera shows.

    Parameters
    ----------
    view : ViewState
        Camera state.
    scale, translate : tuple of float
        The layer's world transform ``world = data * scale + translate`` (``(y, x)``).
    image_size : tuple of int, optional
        ``(height, width)`` of the layer's level-0 data; the box is clipped to it.

    Returns
    -------
    Box
        Covering box in the layer's level-0 data pixels (``x`` columns, ``y`` rows).
    """
    cy, cx = view.center
    half_h = view.canvas_size[0] / view.zoom / 2.0
    half_w = view.canvas_size[1] / view.zoom / 2.0
    sy, sx = scale
    ty, tx = translate
    y0 = (cy - half_h - ty) / sy
    y1 = (cy + half_h - ty) / sy
    x0 = (cx - half_w - tx) / sx
    x1 = (cx + half_w - tx) / sx
    box = Box.from_bounds(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    if image_size is not None:
        box = box.clip(image_size[1], image_size[0])
    return box


def view_downsample(view: ViewState, scale: tuple[float, float] = (1.0, 1.0)) -> float:
    """Level-0 data pixels per screen pixel (1 = native resolution, 8 = zoomed out 8x)."""
    return 1.0 / (view.zoom * float(scale[1]))


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` in napari >= 0.9, else ``viewer.camera``).

    Duck-typed: works on a ``napari.Viewer`` and on a ``napari.components.ViewerModel``
    without importing napari here.
    """
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def view_of_viewer(viewer: Any) -> ViewState:
    """Read a :class:`ViewState` from a napari viewer (or ``ViewerModel``).

    This is how the app reads the camera: "Run on view", the zoomed-out check and
    "Edit region" all take their view from here.
    """
    camera = camera_of(viewer)
    size = viewer.canvas.size  # (height, width)
    cy, cx = (float(v) for v in camera.center[-2:])
    return ViewState(
        center=(cy, cx),
        zoom=float(camera.zoom),
        canvas_size=(int(size[0]), int(size[1])),
    )
