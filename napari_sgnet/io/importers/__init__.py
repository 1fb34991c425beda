"""Imports into napari-sgnet: QuPath GeoJSON annotations (``docs/exports.md``, *Import from
QuPath*). Torch-free; the store commit lives in :mod:`napari_sgnet.app.imports`."""

from napari_sgnet.io.importers.geojson import (
    Annotations,
    GeoJSONError,
    ImportedFeature,
    PolygonPart,
    looks_like_geojson,
    read_geojson,
)
from napari_sgnet.io.importers.levels import label_level, label_pyramid
from napari_sgnet.io.importers.raster import Grid, fill_polygon

__all__ = [
    "Annotations",
    "GeoJSONError",
    "Grid",
    "ImportedFeature",
    "PolygonPart",
    "fill_polygon",
    "label_level",
    "label_pyramid",
    "looks_like_geojson",
    "read_geojson",
]
