"""GeoJSON export of class polygons, in QuPath's conventions.

One ``Feature`` per class (or per connected region with ``split=True``)::

    {"type": "Feature", "id": "<uuid4>",
     "geometry": {"type": "Polygon" | "MultiPolygon", "coordinates": ...},
     "properties": {"objectType": "annotation",
                    "classification": {"name": "Gleason 4", "color": [245, 130, 48]},
                    "isLocked": false}}

Coordinates are in the **slide's level-0 pixels** (x right, y down), which is what
QuPath expects: a label pixel of the exported level covers ``slide_scale`` slide
pixels. Polygons follow pixel edges exactly (see :mod:`.polygons`): outer rings are
counter-clockwise and holes clockwise in GeoJSON's numeric sense (RFC 7946), and
regions of one class touching only at a corner become separate polygons.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from napari_sgnet.errors import OptionError
from napari_sgnet.geometry import Box
from napari_sgnet.io.exporters._common import Progress, iter_blocks, report, staged_output
from napari_sgnet.io.exporters.polygons import BoundaryTracer, Polygon, polygon_area2
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.palette import NO_LABEL_MEANING, Palette

__all__ = ["DEFAULT_MAX_PIXELS", "choose_level", "export_geojson", "label_features"]

log = logging.getLogger(__name__)

#: Automatic level choice: the finest level with at most this many pixels (32k x 32k).
DEFAULT_MAX_PIXELS = 2**30


def choose_level(source: LabelSource, level: int | None, max_pixels: int) -> int:
    """The level to polygonise: ``level`` if given, else the finest within ``max_pixels``."""
    if level is None:
        return source.finest_level_within(max_pixels)
    if not 0 <= level < source.n_levels:
        raise OptionError(f"level {level} does not exist (the labels have {source.n_levels})")
    return level


def _excluded_labels(palette: Palette, exclude: Collection[int | str], skip_bg: bool) -> set[int]:
    out = {1} if skip_bg else set()
    for item in exclude:
        out.add(palette.label_of(item) if isinstance(item, str) else int(item))
    return out


def _classification(palette: Palette, label: int) -> dict[str, Any]:
    if 1 <= label <= palette.num_classes:
        info = palette.classes[label - 1]
        return {"name": info.name, "color": [int(v) for v in info.color]}
    return {"name": f"Label {label}", "color": [128, 128, 128]}


class _Placement:
    """Level pixels -> slide level-0 pixels (scale, offset, clip), JSON-ready."""

    def __init__(self, source: LabelSource, level: int) -> None:
        self.scale = source.slide_scale(level)
        self.ox, self.oy = source.offset
        self.size = source.slide_size
        self.integral = all(float(v).is_integer() for v in (self.scale, self.ox, self.oy))

    def ring(self, ring: np.ndarray) -> list[list[float]]:
        xy = ring.astype(np.float64) * self.scale + (self.ox, self.oy)
        if self.size is not None:
            xy = np.clip(xy, 0, self.size)
        xy = np.concatenate([xy, xy[:1]])  # GeoJSON rings are closed
        out: list[list[float]] = (
            xy.astype(np.int64).tolist() if self.integral else np.round(xy, 3).tolist()
        )
        return out


def label_features(
    source: LabelSource,
    *,
    level: int = 0,
    min_area: float = 0.0,
    exclude: Collection[int | str] = (),
    skip_background: bool = False,
    split: bool = False,
    block: int = 2048,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield QuPath-style GeoJSON features of a label source's classes (see module doc).

    The level is read block by block; memory grows with the length of the class
    boundaries, not with the image area.
    """
    h, w = source.shape(level)
    skip = _excluded_labels(source.palette, exclude, skip_background)
    tracer = BoundaryTracer(w, h)
    boxes = iter_blocks(h, w, block)
    total = len(boxes) + 1
    for i, box in enumerate(boxes):
        halo = Box(box.x - 1, box.y - 1, box.w + 2, box.h + 2)
        tracer.add_block(source.read(halo, level), box, skip=skip)
        report(progress, i + 1, total)
    place = _Placement(source, level)
    min_area2 = 2.0 * float(min_area) / (place.scale**2)  # in doubled level pixels
    for value in tracer.labels:
        polygons = [p for p in tracer.polygons(value) if polygon_area2(p) >= min_area2]
        groups = [[p] for p in polygons] if split else [polygons] if polygons else []
        for group in groups:
            yield _feature(group, place, _classification(source.palette, value))
    report(progress, total, total)


def _feature(polygons: list[Polygon], place: _Placement, cls: dict[str, Any]) -> dict[str, Any]:
    coords = [[place.ring(r) for r in poly] for poly in polygons]
    geometry = (
        {"type": "Polygon", "coordinates": coords[0]}
        if len(coords) == 1
        else {"type": "MultiPolygon", "coordinates": coords}
    )
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": geometry,
        "properties": {"objectType": "annotation", "classification": cls, "isLocked": False},
    }


def _write_collection(fh: TextIO, features: Iterator[dict[str, Any]], meta: dict[str, Any]) -> int:
    fh.write('{"type": "FeatureCollection",\n"napari_sgnet": ')
    json.dump(meta, fh)
    fh.write(',\n"features": [')
    n = 0
    for feature in features:
        fh.write(",\n" if n else "\n")
        fh.write(json.dumps(feature, separators=(",", ":")))  # one-shot C encoder: fast
        n += 1
    fh.write("\n]}\n")
    return n


def export_geojson(
    labels: Any,
    path: str | Path,
    *,
    level: int | None = None,
    min_area: float = 0.0,
    exclude: Collection[int | str] = (),
    skip_background: bool = False,
    split: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    block: int = 2048,
    overwrite: bool = False,
    progress: Progress | None = None,
    palette: Palette | None = None,
    **source_kwargs: Any,
) -> Path:
    """Write class polygons as a GeoJSON FeatureCollection for QuPath.

    Parameters
    ----------
    labels : LabelStore, LabelSource, array-like or list of array-likes
        What to export (see :func:`~napari_sgnet.io.exporters.as_label_source`).
    path : str or Path
        Output ``.geojson`` file.
    level : int, optional
        Label level to polygonise. Default: the finest level with at most ``max_pixels``
        pixels (level 0 for stores up to 32k x 32k). Coordinates are always slide
        level-0 pixels; a coarser level gives coarser (still exact-to-that-level) outlines.
    min_area : float
        Drop polygons smaller than this, in slide level-0 pixels squared.
    exclude : collection of int or str
        Label ids or class names to leave out (label 0 is never exported).
    skip_background : bool
        Leave out the palette's first class (label id 1, "Stroma/background" in Gleason).
    split : bool
        One feature per connected region instead of one (Multi)Polygon per class.
    max_pixels : int
        Pixel budget of the automatic level choice.
    block : int
        Side of the blocks read at a time.
    overwrite : bool
        Replace an existing file.
    progress : callable, optional
        ``progress(done, total)``.
    palette : Palette, optional
        Classes of an array input (default Gleason).
    **source_kwargs
        Placement of an array input (``mpp``, ``base_downsample``, ``offset``, ...).

    Returns
    -------
    Path
        ``path``.
    """
    source = as_label_source(labels, palette, **source_kwargs)
    lvl = choose_level(source, level, max_pixels)
    meta = {
        "slide": source.name,
        "level": lvl,
        "downsample": source.slide_scale(lvl),
        "mpp": source.mpp,
        "coordinates": "slide level-0 pixels",
        "palette": source.palette.to_dict(),
        "label_0": NO_LABEL_MEANING,  # glass and unpredicted pixels: never a polygon
        "provenance": source.provenance,
    }
    features = label_features(
        source,
        level=lvl,
        min_area=min_area,
        exclude=exclude,
        skip_background=skip_background,
        split=split,
        block=block,
        progress=progress,
    )
    with staged_output(path, overwrite=overwrite, kind="file") as stage:
        with open(stage, "w", encoding="utf-8") as fh:
            n = _write_collection(fh, features, meta)
    log.info("exported %d features (level %d, x%g) to %s", n, lvl, meta["downsample"], path)
    return Path(path)
