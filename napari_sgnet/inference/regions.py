"""Regions to predict, drawn as polygons (``predict --regions FILE.geojson``).

A request's ``regions`` (a GeoJSON file of Polygon/MultiPolygon annotations in slide
level-0 pixels, or :class:`~napari_sgnet.io.importers.Annotations` already read) restricts
the plan to the tiles whose working-level pixels the polygons cover (a pixel is covered
when its centre is inside, the import's convention, :mod:`napari_sgnet.io.importers.raster`).
Those tiles are predicted **whole**, like the tiles meeting a rectangular ``region``: labels
inside a predicted tile but outside the polygons are written too. Tiles covered by no
polygon are neither predicted nor marked done. Classes are ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.plan import TilePlan
from napari_sgnet.inference.request import RequestError
from napari_sgnet.io.importers import Annotations, GeoJSONError, Grid, read_geojson
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["region_box", "resolve_regions", "tiles_in_regions"]


def resolve_regions(regions: Any, pyramid: Pyramid) -> Annotations | None:
    """The request's regions read and checked against the slide (``None``: no regions).

    Raises
    ------
    GeoJSONError
        Unreadable or malformed file, or a polygon entirely outside the slide.
    """
    if regions is None:
        return None
    size = (pyramid.width, pyramid.height)
    if isinstance(regions, Annotations):
        regions.check_on_slide(size)
        return regions
    if isinstance(regions, (str, Path)):
        return read_geojson(regions, slide_size=size)
    raise RequestError(f"regions must be a GeoJSON file or Annotations, got {type(regions)}")


def region_box(annotations: Annotations, pyramid: Pyramid) -> Box:
    """The slide level-0 bounding box of the regions, clipped to the slide."""
    x0, y0, x1, y1 = annotations.bounds
    box = Box.from_bounds(int(x0) - 1, int(y0) - 1, int(x1) + 2, int(y1) + 2)
    return box.clip(pyramid.width, pyramid.height)


def tiles_in_regions(plan: TilePlan, annotations: Annotations, pyramid: Pyramid) -> TilePlan:
    """``plan`` keeping only the tiles some polygon covers (order kept).

    Raises
    ------
    GeoJSONError
        When the polygons cover no pixel of any tile at the working level.
    """
    grid = Grid(plan.downsample, slide_size=(pyramid.width, pyramid.height))
    keep = []
    for idx in plan.tiles:
        _, covered = annotations.rasterise(plan.tile_box(idx), grid)
        if covered.any():
            keep.append(idx)
    if not keep:
        raise GeoJSONError(
            annotations.path,
            f"the regions cover no pixel at the model's working level (1 pixel = "
            f"{plan.downsample:g} slide pixels); nothing to predict",
        )
    return dataclasses.replace(plan, tiles=tuple(keep))
