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

Every geometry is valid by OGC/JTS rules (what shapely and QuPath check): no ring
touches itself; a hole may touch its shell, or another hole, at single points, and
polygons of one MultiPolygon touch at most at points. Optional extras: measurements
in ``properties["measurements"]`` (``"Area µm^2"``, ``"Mean confidence"``) and
topology-preserving simplification with a tolerance in µm (needs shapely).
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
from napari_sgnet.io.exporters.polygons import (
    BoundaryTracer,
    Polygon,
    polygon_area2,
    polygon_runs,
)
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.io.pyramid import read_window
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
    measurements: bool = False,
    confidence: Any = None,
    simplify: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield QuPath-style GeoJSON features of a label source's classes (see module doc).

    The level is read block by block; memory grows with the length of the class
    boundaries, not with the image area.

    Parameters
    ----------
    source : LabelSource
        The labels.
    level, min_area, exclude, skip_background, split, block, progress
        As in :func:`export_geojson`.
    measurements : bool
        Add ``properties["measurements"]``: ``"Area µm^2"`` (when the µm/px is known)
        and ``"Mean confidence"`` (when ``confidence`` is given).
    confidence : array-like, optional
        Level-0 confidence of the source (uint8, max softmax x 255).
    simplify : float, optional
        Douglas-Peucker tolerance in µm (topology preserving); ``None``: exact outlines.

    Yields
    ------
    dict
        One GeoJSON ``Feature``.
    """
    tolerance = _tolerance_px(source, level, simplify)
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
            props: dict[str, Any] = {}
            if measurements:
                props = _measurements(source, level, value, group, confidence, block)
            if tolerance:
                group = _simplified(group, tolerance)
                if not group:
                    continue
            yield _feature(group, place, _classification(source.palette, value), props)
    report(progress, total, total)


def _tolerance_px(source: LabelSource, level: int, simplify: float | None) -> float:
    """The simplification tolerance in pixels of ``level`` (0: none)."""
    if simplify is None or simplify == 0:
        return 0.0
    if simplify < 0:
        raise OptionError(f"the simplification tolerance must be positive, got {simplify}")
    mpp = source.level_mpp(level)
    if mpp is None:
        raise OptionError("simplifying by a tolerance in µm needs the slide's µm/px")
    try:
        import shapely  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:  # pragma: no cover - shapely is a test dependency
        raise OptionError(
            "simplifying GeoJSON polygons needs shapely (pip install shapely)"
        ) from None
    return float(simplify) / mpp


def _simplified(polygons: list[Polygon], tolerance: float) -> list[Polygon]:
    """Topology-preserving simplification of a feature's polygons (kept valid)."""
    import shapely
    from shapely.geometry import MultiPolygon  # type: ignore[import-untyped]
    from shapely.geometry import Polygon as ShapelyPolygon
    from shapely.geometry.polygon import orient  # type: ignore[import-untyped]

    exact = MultiPolygon([ShapelyPolygon(p[0], p[1:]) for p in polygons])
    simple = shapely.simplify(exact, tolerance, preserve_topology=True)
    if not shapely.is_valid(simple):  # not seen in tests; keep the exact outlines then
        log.debug("simplified geometry invalid; exporting the exact outline")
        return polygons
    parts = list(getattr(simple, "geoms", [simple]))
    out: list[Polygon] = []
    for part in parts:
        if part.is_empty or part.area == 0:
            continue
        part = orient(part, sign=1.0)  # exterior: positive shoelace area (y down)
        rings = [part.exterior, *part.interiors]
        # The simplifier only drops vertices: coordinates stay on the pixel grid.
        out.append([np.rint(np.asarray(r.coords)[:-1]).astype(np.int64) for r in rings])
    return out


def _measurements(
    source: LabelSource,
    level: int,
    value: int,
    polygons: list[Polygon],
    confidence: Any,
    block: int,
) -> dict[str, Any]:
    """QuPath measurements of one feature's exact (unsimplified) polygons."""
    out: dict[str, Any] = {}
    mpp = source.level_mpp(level)
    if mpp is not None:
        area_px = sum(polygon_area2(p) for p in polygons) / 2.0
        out["Area µm^2"] = round(area_px * mpp * mpp, 3)
    if confidence is not None:
        mean = _mean_confidence(source, level, value, polygons, confidence, block)
        if mean is not None:
            out["Mean confidence"] = round(mean, 4)
    return out


def _mean_confidence(
    source: LabelSource,
    level: int,
    value: int,
    polygons: list[Polygon],
    confidence: Any,
    block: int,
) -> float | None:
    """Mean confidence (0..1) of the level-0 pixels of ``value`` inside ``polygons``.

    The polygons are turned into row runs (even-odd, from their vertical edges), scaled
    to level 0 and summed with row-wise cumulative sums over strips of level 0: memory
    grows with the strip, not with the feature's area.
    """
    rows, x0, x1 = polygon_runs(polygons)
    if rows.size == 0:
        return None
    f = round(source.downsamples[level])
    step = max(1, block // (8 * f))  # traced rows per strip (<= block / 8 level-0 rows)
    total = 0.0
    count = 0
    strip_of = rows // step
    cuts = np.flatnonzero(np.diff(strip_of)) + 1
    strips = zip(np.split(rows, cuts), np.split(x0, cuts), np.split(x1, cuts), strict=True)
    for r, a, b in strips:
        bx, by = int(a.min()) * f, int(r.min()) * f
        box = Box(bx, by, int(b.max()) * f - bx, (int(r.max()) + 1) * f - by)
        own = source.read(box, 0) == value
        conf = read_window(confidence, box, pad_value=0).astype(np.int64) * own
        zero = np.zeros((box.h, 1), dtype=np.int64)
        csum = np.concatenate([zero, np.cumsum(conf, axis=1)], axis=1)
        ccnt = np.concatenate([zero, np.cumsum(own, axis=1, dtype=np.int64)], axis=1)
        yy = ((r * f - by)[:, None] + np.arange(f)).ravel()
        lo = np.repeat(a * f - bx, f)
        hi = np.repeat(b * f - bx, f)
        total += float((csum[yy, hi] - csum[yy, lo]).sum())
        count += int((ccnt[yy, hi] - ccnt[yy, lo]).sum())
    return total / (255.0 * count) if count else None


def _feature(
    polygons: list[Polygon],
    place: _Placement,
    cls: dict[str, Any],
    measurements: dict[str, Any] | None = None,
) -> dict[str, Any]:
    coords = [[place.ring(r) for r in poly] for poly in polygons]
    geometry = (
        {"type": "Polygon", "coordinates": coords[0]}
        if len(coords) == 1
        else {"type": "MultiPolygon", "coordinates": coords}
    )
    props: dict[str, Any] = {"objectType": "annotation", "classification": cls, "isLocked": False}
    if measurements:
        props["measurements"] = measurements
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": props}


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
    measurements: bool = False,
    simplify: float | None = None,
    confidence: Any = None,
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
    measurements : bool
        Add QuPath measurements to each feature's ``properties["measurements"]``:
        ``"Area µm^2"`` (exact pixel area, when the µm/px is known) and
        ``"Mean confidence"`` (0..1, mean over the feature's level-0 pixels of its class;
        edited pixels count as 1), from a store's confidence or ``confidence``.
    simplify : float, optional
        Simplify outlines with this tolerance in µm (shapely, topology preserving;
        geometries stay valid). Default: exact pixel outlines.
    confidence : array-like, optional
        Level-0 confidence (uint8, max softmax x 255) of an array input; a store's own
        confidence is used when ``measurements`` is on.
    **source_kwargs
        Placement of an array input (``mpp``, ``base_downsample``, ``offset``, ...).

    Returns
    -------
    Path
        ``path``.
    """
    source = as_label_source(labels, palette, **source_kwargs)
    lvl = choose_level(source, level, max_pixels)
    if measurements and confidence is None and hasattr(labels, "confidence_as_dask"):
        confidence = labels.confidence_as_dask()
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
        measurements=measurements,
        confidence=confidence,
        simplify=simplify,
    )
    with staged_output(path, overwrite=overwrite, kind="file") as stage:
        with open(stage, "w", encoding="utf-8") as fh:
            n = _write_collection(fh, features, meta)
    log.info("exported %d features (level %d, x%g) to %s", n, lvl, meta["downsample"], path)
    return Path(path)
