"""GeoJSON import of QuPath annotations: parse, check, and rasterise onto a label grid.

Accepted input (what QuPath's *Export objects as GeoJSON* and napari-sgnet's own export
write): a ``FeatureCollection``, a bare JSON list of features, or one ``Feature``.
Geometries ``Polygon`` and ``MultiPolygon`` (holes honoured; a ``GeometryCollection``
contributes its polygons); other geometry types (points, lines) are skipped with a
warning. Coordinates are slide level-0 pixels (x right, y down), QuPath's convention.

Classes: ``properties.classification.name`` (QuPath 0.3+; the older plain string
``properties.classification`` too) is matched to the palette's class names, ignoring
case and surrounding spaces; class ``k`` becomes label id ``k + 1``. An unknown name, or
a feature without a classification, is an error naming the file, the feature and the
palette's classes. Regions (``predict --regions``) ignore classes.

Checks, all before anything is rasterised: the file is JSON and GeoJSON-shaped, every
polygon ring has at least 3 distinct finite vertices, every polygon is valid by
OGC rules when shapely is installed (an invalid one is refused with shapely's reason,
never silently repaired), and, given the slide's size, no feature lies entirely
outside the slide (a partly outside one is clipped, with a warning).

Overlapping features: later features in the file paint over earlier ones, like brush
strokes. Rasterisation follows :mod:`napari_sgnet.io.importers.raster`, the exporter's
pixel convention, so export -> import -> export gives the same polygons.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.io.importers.raster import Grid, RingEdges, fill_polygon
from napari_sgnet.palette import Palette

__all__ = [
    "Annotations",
    "GeoJSONError",
    "ImportedFeature",
    "PolygonPart",
    "looks_like_geojson",
    "read_geojson",
]

log = logging.getLogger(__name__)

#: Geometry types that carry areas.
_POLYGONAL = ("Polygon", "MultiPolygon")


class GeoJSONError(UserInputError):
    """A GeoJSON file cannot be imported; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class PolygonPart:
    """One polygon (exterior and holes) of a feature, in slide level-0 pixels."""

    rings: tuple[np.ndarray, ...]
    bounds: tuple[float, float, float, float]

    @classmethod
    def from_rings(cls, rings: Sequence[np.ndarray]) -> PolygonPart:
        """A part from ``[exterior, *holes]`` ``(n, 2)`` float arrays (not closed)."""
        ext = rings[0]
        bounds = (
            float(ext[:, 0].min()),
            float(ext[:, 1].min()),
            float(ext[:, 0].max()),
            float(ext[:, 1].max()),
        )
        return cls(tuple(rings), bounds)


@dataclass(frozen=True)
class ImportedFeature:
    """One annotation: its polygons and the label id its class maps to.

    Attributes
    ----------
    index : int
        Position of the feature in the file (0-based), used in messages.
    label : int
        Label id (class + 1); ``1`` for regions read without a palette.
    class_name : str or None
        The classification name as written in the file.
    parts : tuple of PolygonPart
        The feature's polygons.
    """

    index: int
    label: int
    class_name: str | None
    parts: tuple[PolygonPart, ...]
    edges: RingEdges | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.edges is None:
            object.__setattr__(self, "edges", RingEdges([p.rings for p in self.parts]))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of all parts, slide level-0 pixels."""
        b = np.array([p.bounds for p in self.parts])
        return (
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            float(b[:, 2].max()),
            float(b[:, 3].max()),
        )


@dataclass(frozen=True)
class Annotations:
    """Polygons read from a GeoJSON file, ready to rasterise (see the module doc).

    Attributes
    ----------
    path : Path
        The file.
    sha256 : str
        SHA-256 of the file's bytes.
    features : tuple of ImportedFeature
        The polygonal features, in file order.
    skipped : int
        Features without an area (points, lines) that were left out.
    palette : Palette or None
        The palette the classes were mapped onto (``None``: regions, classes ignored).
    """

    path: Path
    sha256: str
    features: tuple[ImportedFeature, ...]
    skipped: int = 0
    palette: Palette | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of every feature, slide level-0 pixels."""
        b = np.array([f.bounds for f in self.features])
        return (
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            float(b[:, 2].max()),
            float(b[:, 3].max()),
        )

    def provenance(self) -> dict[str, Any]:
        """JSON record of the import: file, its SHA-256 and what it held."""
        counts: dict[str, int] = {}
        for f in self.features:
            counts[f.class_name or "(regions)"] = counts.get(f.class_name or "(regions)", 0) + 1
        return {
            "file": str(self.path),
            "sha256": self.sha256,
            "features": len(self.features),
            "skipped_features": self.skipped,
            "features_per_class": counts,
        }

    def grid_box(self, grid: Grid, width: int, height: int) -> Box:
        """Grid pixels (clipped to ``width`` x ``height``) that the features may cover."""
        return grid.box_of(self.bounds, width, height)

    def rasterise(self, box: Box, grid: Grid) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Labels and coverage of ``box`` (grid pixels).

        Returns
        -------
        labels : numpy.ndarray
            ``(box.h, box.w)`` uint8: the label id of the last feature covering each pixel,
            0 where none does.
        covered : numpy.ndarray
            ``(box.h, box.w)`` bool: pixels inside at least one feature.
        """
        labels = np.zeros((box.h, box.w), dtype=np.uint8)
        covered = np.zeros((box.h, box.w), dtype=bool)
        for feature in self.features:  # all parts of a feature in one scanline pass
            sub = grid.box_of(feature.bounds, box.x1, box.y1).intersect(box)
            if sub.is_empty or feature.edges is None:
                continue
            inside = fill_polygon(feature.edges, grid, sub)
            if not inside.any():
                continue
            rel = sub.relative_to(box).slices()
            labels[rel][inside] = feature.label
            covered[rel] |= inside
        return labels, covered

    def outside(self, slide_size: tuple[int, int]) -> list[int]:
        """Indices of features lying entirely outside a slide of ``(width, height)``."""
        w, h = slide_size
        out = []
        for f in self.features:
            x0, y0, x1, y1 = f.bounds
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                out.append(f.index)
        return out

    def check_on_slide(self, slide_size: tuple[int, int]) -> None:
        """Refuse features entirely outside the slide; warn about partly outside ones.

        Raises
        ------
        GeoJSONError
            Naming the features (their 0-based index in the file) and the slide size.
        """
        w, h = slide_size
        gone = self.outside(slide_size)
        if gone:
            shown = ", ".join(str(i) for i in gone[:10]) + (" ..." if len(gone) > 10 else "")
            raise GeoJSONError(
                self.path,
                f"{len(gone)} feature(s) lie entirely outside the slide ({w} x {h} level-0 "
                f"pixels): feature {shown}; is this the annotation file of another slide?",
            )
        x0, y0, x1, y1 = self.bounds
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            log.warning(
                "%s: annotations reach outside the slide (%d x %d); clipped to it", self.path, w, h
            )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _features_of(doc: Any, path: Path) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        kind = doc.get("type")
        if kind == "FeatureCollection":
            feats = doc.get("features")
            if not isinstance(feats, list):
                raise GeoJSONError(path, "FeatureCollection without a 'features' list")
            return feats
        if kind == "Feature":
            return [doc]
        if kind in (*_POLYGONAL, "GeometryCollection"):
            return [{"type": "Feature", "geometry": doc, "properties": {}}]
    raise GeoJSONError(
        path,
        "not GeoJSON annotations: expected a FeatureCollection, a Feature or a list of features",
    )


def _class_name(props: Any) -> str | None:
    if not isinstance(props, dict):
        return None
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    if isinstance(cls, str):
        return cls
    return None


def _ring(coords: Any, path: Path, index: int) -> np.ndarray:
    bad = GeoJSONError(path, f"feature {index}: a ring's coordinates are not [x, y] numbers")
    try:
        xy = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        try:  # positions of mixed length (some with a z)
            xy = np.asarray([[float(v[0]), float(v[1])] for v in coords], dtype=np.float64)
        except (TypeError, ValueError, IndexError):
            raise bad from None
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise bad
    xy = xy[:, :2]
    if not np.isfinite(xy).all():
        raise GeoJSONError(path, f"feature {index}: a ring has non-finite coordinates")
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    moves = np.any(xy != np.roll(xy, 1, axis=0), axis=1)  # drop repeated vertices
    if int(moves.sum()) < 3:
        raise GeoJSONError(path, f"feature {index}: a ring has fewer than 3 distinct vertices")
    return np.ascontiguousarray(xy[moves])


def _polygons(geometry: Any, path: Path, index: int) -> Iterator[list[np.ndarray]] | None:
    """The polygons (lists of rings) of a geometry; ``None`` when it has no area."""
    if not isinstance(geometry, dict):
        return None
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    polys: Any
    if kind == "Polygon":
        polys = [coords]
    elif kind == "MultiPolygon":
        polys = coords if isinstance(coords, list) else None
    elif kind == "GeometryCollection":
        members = geometry.get("geometries") or []
        found = [list(_polygons(g, path, index) or []) for g in members]
        flat = [p for group in found for p in group]
        return iter(flat) if flat else None
    else:
        return None
    if not isinstance(polys, list) or not all(isinstance(p, list) and p for p in polys):
        raise GeoJSONError(path, f"feature {index}: malformed {kind} coordinates")
    return iter([[_ring(r, path, index) for r in poly] for poly in polys])


def _check_valid(parts: list[PolygonPart], path: Path, index: int) -> None:
    """Refuse OGC-invalid polygons (with shapely's reason) when shapely is installed."""
    try:
        import shapely  # type: ignore[import-untyped]
        from shapely.geometry import Polygon as ShapelyPolygon  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - shapely is a test dependency
        return
    for k, part in enumerate(parts):
        poly = ShapelyPolygon(part.rings[0], part.rings[1:])
        if not shapely.is_valid(poly):
            reason = shapely.is_valid_reason(poly)
            raise GeoJSONError(
                path,
                f"feature {index} (polygon {k}) is not a valid polygon: {reason}; "
                "fix it in QuPath (e.g. Objects > Annotations > Fix geometry) and export again",
            )


def _label_of(palette: Palette, name: str | None, path: Path, index: int) -> int:
    names = ", ".join(repr(n) for n in palette.names)
    if name is None:
        raise GeoJSONError(
            path,
            f"feature {index} has no classification; give every annotation one of the "
            f"palette {palette.name!r} classes: {names}",
        )
    key = name.strip().casefold()
    for i, known in enumerate(palette.names):
        if known.strip().casefold() == key:
            return i + 1
    raise GeoJSONError(
        path,
        f"feature {index}: class {name!r} is not in the palette {palette.name!r}; "
        f"its classes are: {names}",
    )


def _has_area(geometry: Any) -> bool:
    if not isinstance(geometry, dict):
        return False
    if geometry.get("type") == "GeometryCollection":
        return any(_has_area(g) for g in geometry.get("geometries") or [])
    return geometry.get("type") in _POLYGONAL


def looks_like_geojson(path: str | Path) -> bool:
    """True when ``path`` is a ``.geojson``/``.json`` file with Polygon/MultiPolygon features.

    Parses the JSON and looks at the geometry types only (the polygons themselves and the
    classes are checked by :func:`read_geojson`); never raises.
    """
    p = Path(path)
    if p.suffix.lower() not in (".geojson", ".json") or not p.is_file():
        return False
    try:
        doc = json.loads(p.read_bytes().decode("utf-8-sig"))
        feats = _features_of(doc, p)
    except (UserInputError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return any(isinstance(f, dict) and _has_area(f.get("geometry")) for f in feats)


def read_geojson(
    path: str | Path,
    palette: Palette | None = None,
    *,
    slide_size: tuple[int, int] | None = None,
) -> Annotations:
    """Read and check the polygon annotations of a GeoJSON file (see the module doc).

    Parameters
    ----------
    path : str or Path
        A ``.geojson`` (or ``.json``) file.
    palette : Palette, optional
        Map each feature's class onto it (every feature must have a known class). Without
        it, classes are ignored and every feature gets label 1 (regions).
    slide_size : tuple of int, optional
        ``(width, height)`` of the slide's level 0: refuse features entirely outside it.

    Returns
    -------
    Annotations

    Raises
    ------
    GeoJSONError
        Unreadable, not GeoJSON, no polygons, a malformed or invalid polygon, an unknown or
        missing class, or a feature entirely outside the slide.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GeoJSONError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeoJSONError(path, f"not JSON: {exc}") from exc
    raw = _features_of(doc, path)
    features: list[ImportedFeature] = []
    skipped = 0
    for index, feat in enumerate(raw):
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise GeoJSONError(path, f"item {index} is not a GeoJSON Feature")
        polys = _polygons(feat.get("geometry"), path, index)
        if polys is None:
            skipped += 1
            continue
        parts = [PolygonPart.from_rings(rings) for rings in polys]
        _check_valid(parts, path, index)
        name = _class_name(feat.get("properties"))
        label = 1 if palette is None else _label_of(palette, name, path, index)
        features.append(ImportedFeature(index, label, name, tuple(parts)))
    if skipped:
        log.warning("%s: %d feature(s) without an area (points, lines) skipped", path, skipped)
    if not features:
        raise GeoJSONError(path, "holds no Polygon or MultiPolygon annotations")
    out = Annotations(path, _sha256(data), tuple(features), skipped, palette)
    if slide_size is not None:
        out.check_on_slide(slide_size)
    return out
