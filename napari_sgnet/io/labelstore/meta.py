"""LabelStore metadata: slide identity, OME-NGFF 0.5 image-label attributes, timestamps.

The store keeps two attribute namespaces on its root group: ``"ome"`` (what any
OME-NGFF 0.5 reader needs to place and colour the labels over the slide) and
``"sgnet"`` (what napari-sgnet needs: slide identity, palette, tiling, model,
requests and commits).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from collections import OrderedDict
from typing import Any

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "compare_slide_identity",
    "ngff_attributes",
    "now_iso",
    "slide_identity",
]

FORMAT_NAME = "napari-sgnet-labelstore"
FORMAT_VERSION = 1

#: Side of the window whose bytes fingerprint the slide's pixel content.
_THUMB_SIDE = 512


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _thumbnail_digest(slide: Pyramid) -> str:
    """SHA-256 of the central (at most 512 x 512) window of the slide's coarsest level."""
    level = slide.n_levels - 1
    w, h = slide.level_size(level)
    tw, th = min(w, _THUMB_SIDE), min(h, _THUMB_SIDE)
    box = Box((w - tw) // 2, (h - th) // 2, tw, th)
    data = np.ascontiguousarray(slide.read(box, level))
    digest = hashlib.sha256()
    digest.update(f"{data.shape}|{data.dtype.str}|{level}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:16]


_DIGESTS: OrderedDict[tuple[str, tuple[int, ...]], str] = OrderedDict()


def _cached_digest(slide: Pyramid) -> str:
    """The thumbnail digest, cached by the coarsest level's dask token (stable per content)."""
    arr = slide.levels[-1]
    name = getattr(arr, "name", None)
    if not isinstance(name, str):
        return _thumbnail_digest(slide)
    key = (name, tuple(arr.shape))
    if key not in _DIGESTS:
        _DIGESTS[key] = _thumbnail_digest(slide)
        while len(_DIGESTS) > 32:
            _DIGESTS.popitem(last=False)
    return _DIGESTS[key]


def slide_identity(slide: Pyramid) -> dict[str, Any]:
    """A cheap identity record of a slide: size, µm/px and a pixel fingerprint.

    Reads at most one 512 x 512 window of the coarsest level (once per slide and
    process: the digest is cached by the level's dask token).
    """
    return {
        "name": slide.name,
        "source": str(slide.source) if slide.source is not None else None,
        "width": slide.width,
        "height": slide.height,
        "mpp": slide.mpp,
        "n_levels": slide.n_levels,
        "fingerprint": _cached_digest(slide),
    }


def compare_slide_identity(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two identity records (empty when they match).

    The name and source path are not compared (files get renamed and moved).
    """
    problems = []
    if (stored.get("width"), stored.get("height")) != (current["width"], current["height"]):
        problems.append(
            f"size differs (store: {stored.get('width')} x {stored.get('height')} px, "
            f"slide: {current['width']} x {current['height']} px)"
        )
    s_mpp, c_mpp = stored.get("mpp"), current["mpp"]
    if (s_mpp is None) != (c_mpp is None) or (
        s_mpp is not None and not math.isclose(s_mpp, c_mpp, rel_tol=1e-6)
    ):
        problems.append(f"µm/px differs (store: {s_mpp}, slide: {c_mpp})")
    if not problems and stored.get("fingerprint") != current["fingerprint"]:
        problems.append(
            "pixel content differs (store fingerprint "
            f"{stored.get('fingerprint')}, slide {current['fingerprint']})"
        )
    return problems


def ngff_attributes(
    *,
    name: str,
    n_levels: int,
    base_downsample: float,
    mpp: float | None,
    palette: Palette,
) -> dict[str, Any]:
    """The ``"ome"`` attributes of an OME-NGFF 0.5 image-label multiscale group.

    Level ``k`` has scale ``base_downsample * 2**k`` slide level-0 pixels (times µm/px
    when known) and a half-pixel translation, so its pixel centres fall where the
    slide's do and viewers overlay the labels exactly on the slide.
    """
    unit_scale = mpp if mpp is not None else 1.0
    axis: dict[str, Any] = {"type": "space"}
    if mpp is not None:
        axis["unit"] = "micrometer"
    datasets = []
    for k in range(n_levels):
        factor = base_downsample * 2**k
        shift = (factor - 1.0) / 2.0 * unit_scale
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [factor * unit_scale] * 2},
                    {"type": "translation", "translation": [shift, shift]},
                ],
            }
        )
    colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    properties = []
    for i, cls in enumerate(palette.classes):
        colors.append({"label-value": i + 1, "rgba": [*cls.color, 255]})
        properties.append({"label-value": i + 1, "class": cls.name})
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": "y", **axis}, {"name": "x", **axis}],
                "datasets": datasets,
                "type": "mode",
                "metadata": {"method": "2x2 mode preferring non-zero labels, ties to smaller id"},
            }
        ],
        "image-label": {"colors": colors, "properties": properties},
    }
