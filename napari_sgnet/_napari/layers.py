"""Layer-data tuples for napari: the one place that turns pyramids into layer kwargs.

Everything here returns plain ``(data, kwargs, layer_type)`` tuples, so the reader,
the sample-data hooks and the review widget all produce identical layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = ["LayerData", "image_layer_data", "labels_layer_data", "pyramid_scale"]

LayerData = tuple[Any, dict[str, Any], str]


def pyramid_scale(pyramid: Pyramid) -> tuple[float, float]:
    """World scale of level 0: µm/px when the slide knows it, else 1 (pixels)."""
    mpp = pyramid.mpp if pyramid.mpp is not None else 1.0
    return (float(mpp), float(mpp))


def _contrast_limits(pyramid: Pyramid) -> list[float] | None:
    """Contrast limits from the dtype, never from pixel data (reading is lazy)."""
    dtype = np.dtype(pyramid.dtype)
    if pyramid.is_rgb and dtype == np.uint8:
        return None
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return [float(info.min), float(info.max)]
    return [0.0, 1.0]


def image_layer_data(pyramid: Pyramid, name: str | None = None) -> LayerData:
    """An image layer tuple for a lazy pyramid (multiscale when it has several levels).

    Parameters
    ----------
    pyramid : Pyramid
        The slide.
    name : str, optional
        Layer name; defaults to the pyramid's name.

    Returns
    -------
    tuple
        ``(data, kwargs, "image")`` with the physical scale (µm when known).
    """
    levels = list(pyramid.levels)
    kwargs: dict[str, Any] = {
        "name": name or pyramid.name,
        "scale": pyramid_scale(pyramid),
        "rgb": pyramid.is_rgb,
        "multiscale": len(levels) > 1,
        "metadata": {
            "napari_sgnet": {
                "source": str(pyramid.source) if pyramid.source else None,
                "mpp": pyramid.mpp,
                "downsamples": list(pyramid.downsamples),
            }
        },
    }
    if pyramid.mpp is not None:
        kwargs["units"] = ("µm", "µm")
    origin = pyramid.metadata.get("origin_px")
    if origin is not None:  # an OME-Zarr image placed by a translation
        sy, sx = kwargs["scale"]
        kwargs["translate"] = (float(origin[0]) * sy, float(origin[1]) * sx)
    limits = _contrast_limits(pyramid)
    if limits is not None:
        kwargs["contrast_limits"] = limits
    data = levels if len(levels) > 1 else levels[0]
    return (data, kwargs, "image")


def labels_layer_data(
    levels: Sequence[Any],
    palette: Palette,
    *,
    scale: tuple[float, float],
    name: str,
    opacity: float = 0.5,
    metadata: dict[str, Any] | None = None,
) -> LayerData:
    """A labels layer tuple coloured by ``palette`` (label 0 transparent).

    Parameters
    ----------
    levels : sequence of array-like
        Label levels, finest first.
    palette : Palette
        Class names and colours.
    scale : tuple of float
        World scale of the finest level.
    name : str
        Layer name.
    opacity : float
        Layer opacity.
    metadata : dict, optional
        Extra layer metadata.
    """
    levels = list(levels)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": scale,
        "multiscale": len(levels) > 1,
        "opacity": opacity,
        "colormap": palette.napari_colors(),
        "metadata": {"napari_sgnet": {"palette": palette.to_dict(), **(metadata or {})}},
    }
    data = levels if len(levels) > 1 else levels[0]
    return (data, kwargs, "labels")
