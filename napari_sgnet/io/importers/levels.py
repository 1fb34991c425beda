"""Imported annotations as lazy label levels: what ``--labels FILE.geojson`` reads.

Each chunk of a level is rasterised on demand from the polygons that reach it
(:meth:`~napari_sgnet.io.importers.geojson.Annotations.rasterise`), so a whole-slide
ground truth never exists in memory at level 0; pixels outside every polygon are label 0
("no label", ignored in training and scoring like label 0 of any label image).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.importers.geojson import Annotations
from napari_sgnet.io.importers.raster import Grid
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["DEFAULT_CHUNK", "label_level", "label_pyramid"]

#: Chunk side of the lazily rasterised levels.
DEFAULT_CHUNK = 1024


def label_level(
    annotations: Annotations, shape: tuple[int, int], grid: Grid, chunk: int = DEFAULT_CHUNK
) -> da.Array:
    """A lazy ``(h, w)`` uint8 label image of ``annotations`` on ``grid``.

    Parameters
    ----------
    annotations : Annotations
        The polygons (their labels are the palette's label ids).
    shape : tuple of int
        ``(height, width)`` of the level.
    grid : Grid
        Where the level's pixels lie on the slide.
    chunk : int
        Chunk side.
    """
    h, w = (int(v) for v in shape)

    def block(_: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        labels, _covered = annotations.rasterise(Box.from_bounds(x0, y0, x1, y1), grid)
        return labels

    empty = da.zeros((h, w), dtype=np.uint8, chunks=(chunk, chunk))
    out: da.Array = empty.map_blocks(block, dtype=np.uint8)
    return out


def label_pyramid(annotations: Annotations, image: Pyramid, chunk: int = DEFAULT_CHUNK) -> Pyramid:
    """Label levels of ``annotations`` shaped like every level of ``image``.

    Level ``k`` has the shape and downsample of ``image``'s level ``k``, so the training and
    evaluation readers pick the label level under the image level they read, and the
    pyramid has the image's µm/px.
    """
    size = (image.width, image.height)
    levels = tuple(
        label_level(
            annotations,
            (int(arr.shape[0]), int(arr.shape[1])),
            Grid(float(ds), slide_size=size),
            chunk,
        )
        for arr, ds in zip(image.levels, image.downsamples, strict=True)
    )
    return Pyramid(
        levels,
        tuple(float(d) for d in image.downsamples),
        image.mpp,
        annotations.path,
        annotations.path.stem,
    )
