"""Scanline rasterisation of polygons onto a label grid, the GeoJSON exporter's inverse.

Convention (the one :mod:`napari_sgnet.io.exporters.polygons` traces by): pixel
``(i, j)`` of a grid with ``scale`` slide pixels per pixel and top-left corner
``offset`` covers the slide rectangle ``offset + [j, j + 1) * scale`` by
``offset + [i, i + 1) * scale``; it is inside a polygon when the **centre of its
footprint on the slide** is (the footprint is cut at the slide's right and bottom edge,
so the last, partial store pixel of a slide whose size is not a multiple of ``scale``
is sampled where it lies on the slide). Inside is even-odd over the polygon's rings
(exterior and holes); a centre exactly on an edge is inside on the left and top edges
and outside on the right and bottom edges (half-open spans), so two polygons that share
an edge never both claim a pixel. For the exporter's outlines, which follow pixel edges,
this reproduces the traced label image pixel for pixel.

Memory: a call allocates the window it fills and the crossings of the polygon's edges
with the window's rows, never the polygon's whole bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from napari_sgnet.geometry import Box

__all__ = ["Grid", "RingEdges", "fill_polygon", "ring_edges"]

FloatArray = NDArray[np.float64]


class Grid:
    """Where a label grid lies on the slide.

    Parameters
    ----------
    scale : float
        Slide level-0 pixels per grid pixel.
    offset : tuple of float
        ``(x, y)`` of the grid's top-left pixel corner in slide level-0 pixels.
    slide_size : tuple of int, optional
        ``(width, height)`` of the slide's level 0: pixel footprints are cut there.
    """

    def __init__(
        self,
        scale: float = 1.0,
        offset: tuple[float, float] = (0.0, 0.0),
        slide_size: tuple[int, int] | None = None,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"grid scale must be positive, got {scale}")
        self.scale = float(scale)
        self.offset = (float(offset[0]), float(offset[1]))
        self.slide_size = slide_size

    def centres(self, start: int, stop: int, axis: int) -> FloatArray:
        """Slide coordinates of the footprint centres of pixels ``start..stop`` on an axis.

        ``axis`` 0 is x (columns), 1 is y (rows).
        """
        o = self.offset[axis]
        lo = o + np.arange(start, stop, dtype=np.float64) * self.scale
        hi = lo + self.scale
        if self.slide_size is not None:
            hi = np.minimum(hi, float(self.slide_size[axis]))
            hi = np.maximum(hi, lo)
        out: FloatArray = (lo + hi) / 2.0
        return out

    def box_of(self, bounds: tuple[float, float, float, float], width: int, height: int) -> Box:
        """Grid pixels whose footprints meet slide bounds ``(x0, y0, x1, y1)``, clipped."""
        x0, y0, x1, y1 = bounds
        ox, oy = self.offset
        s = self.scale
        j0 = int(np.floor((x0 - ox) / s)) - 1
        i0 = int(np.floor((y0 - oy) / s)) - 1
        j1 = int(np.ceil((x1 - ox) / s)) + 1
        i1 = int(np.ceil((y1 - oy) / s)) + 1
        return Box.from_bounds(j0, i0, j1, i1).clip(width, height)


class RingEdges:
    """The non-horizontal edges of one or more polygons' rings, ready for scanlines.

    Parameters
    ----------
    polygons : sequence of sequence of numpy.ndarray
        Each polygon as ``[exterior, *holes]``, each ring ``(n, 2)`` ``(x, y)`` vertices
        (closed or not). Inside is even-odd within each polygon and the union over them.
    """

    def __init__(self, polygons: Sequence[Sequence[np.ndarray]]) -> None:
        starts, ends, ids = [], [], []
        for k, rings in enumerate(polygons):
            for ring in rings:
                xy = np.asarray(ring, dtype=np.float64)[:, :2]
                starts.append(xy)
                ends.append(np.roll(xy, -1, axis=0))
                ids.append(np.full(len(xy), k, dtype=np.int64))
        p = np.concatenate(starts) if starts else np.zeros((0, 2))
        q = np.concatenate(ends) if ends else np.zeros((0, 2))
        part = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        keep = p[:, 1] != q[:, 1]
        p, q, part = p[keep], q[keep], part[keep]
        down = p[:, 1] < q[:, 1]
        lo = np.where(down[:, None], p, q)  # the end with the smaller y
        hi = np.where(down[:, None], q, p)
        self.part = part
        self.ylo = lo[:, 1].copy()
        self.yhi = hi[:, 1].copy()
        self.xlo = lo[:, 0].copy()
        self.slope = (hi[:, 0] - lo[:, 0]) / (hi[:, 1] - lo[:, 1])  # dx / dy

    @property
    def n_edges(self) -> int:
        """Number of non-horizontal edges."""
        return int(self.ylo.size)


def ring_edges(rings: Sequence[np.ndarray]) -> RingEdges:
    """The scanline edges of one polygon given as ``[exterior, *holes]``."""
    return RingEdges([rings])


def fill_polygon(edges: RingEdges, grid: Grid, box: Box) -> NDArray[np.bool_]:
    """The pixels of ``box`` (grid pixels) inside the polygons (see the module doc).

    Parameters
    ----------
    edges : RingEdges
        The polygons (even-odd within each, union over them).
    grid : Grid
        Placement of the grid on the slide.
    box : Box
        The window to fill, in grid pixels.

    Returns
    -------
    numpy.ndarray
        ``(box.h, box.w)`` bool.
    """
    out = np.zeros((box.h, box.w), dtype=bool)
    if box.is_empty or edges.n_edges == 0:
        return out
    yc = grid.centres(box.y, box.y1, axis=1)
    # Rows whose centre an edge crosses: ylo <= yc < yhi (half-open: top edges count).
    r0 = np.searchsorted(yc, edges.ylo, side="left")
    r1 = np.searchsorted(yc, edges.yhi, side="left")
    n = r1 - r0
    hit = n > 0
    if not hit.any():
        return out
    r0, n = r0[hit], n[hit]
    total = int(n.sum())
    rows = np.repeat(r0, n) + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))
    e = np.repeat(np.flatnonzero(hit), n)
    xs = edges.xlo[e] + (yc[rows] - edges.ylo[e]) * edges.slope[e]
    order = np.lexsort((xs, rows, edges.part[e]))  # crossings pair up per polygon and row
    rows, xs = rows[order], xs[order]
    if rows.size % 2:  # cannot happen for closed rings; guard against rounding anyway
        raise ValueError("internal error: odd number of scanline crossings")
    xc = grid.centres(box.x, box.x1, axis=0)
    # Even-odd: crossings pair up along each row of each polygon; centres xa <= x < xb are
    # inside; spans of different polygons may overlap (counts add up: union).
    a = np.searchsorted(xc, xs[0::2], side="left")
    b = np.searchsorted(xc, xs[1::2], side="left")
    r = rows[0::2]
    span = b > a
    if not span.any():
        return out
    r, a, b = r[span], a[span], b[span]
    width = box.w + 1
    diff = np.bincount(r * width + a, minlength=box.h * width)
    diff -= np.bincount(r * width + b, minlength=box.h * width)
    out = np.cumsum(diff.reshape(box.h, width), axis=1)[:, :-1] > 0
    return out
