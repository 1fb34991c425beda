"""One-dimensional smooth fields with one exact evaluator for grids and points."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import numpy as np

from napari_sgnet.synthetic._noise import Octave, SmoothField, interpolate_grid, noise_points

__all__ = ["Field1D", "node_values", "smooth_grid", "smooth_points"]


@dataclass(frozen=True)
class Field1D:
    """A smooth function of one coordinate: linear interpolation of exact noise at nodes.

    Node values are :func:`~napari_sgnet.synthetic._noise.noise_points` at ``(k * spacing,
    row)``, exact whatever set of nodes is asked for; the interpolation is one element-wise
    float64 formula, so a value depends on its coordinate only (never on the array holding it).

    Parameters
    ----------
    key : int
        Stream key of the noise.
    octaves : tuple of Octave
        Octaves of the noise (periods along the coordinate).
    spacing : float
        Node spacing (µm).
    row : float
        The second noise coordinate: distinct rows give independent-looking fields.
    """

    key: int
    octaves: tuple[Octave, ...]
    spacing: float
    row: float = 0.0

    def at(self, coords: np.ndarray) -> np.ndarray:
        """Values at ``coords`` (µm), float64 of the same shape."""
        c = np.asarray(coords, dtype=np.float64)
        g = c / self.spacing
        i = np.floor(g)
        t = g - i
        ii = i.astype(np.int64)
        if ii.size == 0:
            return np.zeros(c.shape)
        lo, hi = int(ii.min()) // _BLOCK, (int(ii.max()) + 1) // _BLOCK
        table = np.concatenate([self._block(b) for b in range(lo, hi + 1)])
        j = ii - lo * _BLOCK
        return cast(np.ndarray, table.take(j) * (1.0 - t) + table.take(j + 1) * t)

    def _block(self, block: int) -> np.ndarray:
        """Node values of nodes ``block * _BLOCK ...`` (cached; exact whatever the order)."""
        return _node_block(self.key, self.octaves, self.spacing, self.row, block)


_BLOCK = 64


@functools.lru_cache(maxsize=4096)
def _node_block(
    key: int, octaves: tuple[Octave, ...], spacing: float, row: float, block: int
) -> np.ndarray:
    nodes = np.arange(block * _BLOCK, (block + 1) * _BLOCK, dtype=np.float64) * spacing
    values = noise_points(key, nodes, np.full(nodes.size, row), octaves)
    values.setflags(write=False)
    return values


_TILE = 64


@functools.lru_cache(maxsize=2048)
def _node_tile(field: SmoothField, tx: int, ty: int) -> np.ndarray:
    """Control values of nodes ``[tx * 64, +64) x [ty * 64, +64)`` (float32, cached)."""
    nx = np.arange(tx * _TILE, (tx + 1) * _TILE)
    ny = np.arange(ty * _TILE, (ty + 1) * _TILE)
    values = field._values(nx, ny)
    values.setflags(write=False)
    return values


def node_values(field: SmoothField, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Control values of the node block ``[x0, x0 + w) x [y0, y0 + h)``, ``(h, w)`` float32.

    Equal to ``field._values`` of those nodes (exact noise), assembled from cached tiles.
    """
    tx0, tx1 = x0 // _TILE, (x0 + w - 1) // _TILE
    ty0, ty1 = y0 // _TILE, (y0 + h - 1) // _TILE
    rows = [
        np.concatenate([_node_tile(field, tx, ty) for tx in range(tx0, tx1 + 1)], axis=1)
        for ty in range(ty0, ty1 + 1)
    ]
    block = np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
    ox, oy = x0 - tx0 * _TILE, y0 - ty0 * _TILE
    return block[oy : oy + h, ox : ox + w]


def _axis(coords: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.asarray(coords, dtype=np.float64) / spacing
    i = np.floor(g)
    t = (g - i).astype(np.float32)
    return i.astype(np.int64), t, g


def smooth_grid(field: SmoothField, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """:meth:`SmoothField.grid` (same values, same float32 formula) from cached node tiles."""
    ix, tx, _ = _axis(xs, field.spacing)
    iy, ty, _ = _axis(ys, field.spacing)
    x0, y0 = int(ix.min()), int(iy.min())
    # SmoothField.grid interpolates between the distinct nodes it needs; with sorted,
    # evenly spaced coordinates those are consecutive, so a node block is the same table.
    f = node_values(field, x0, y0, int(ix.max()) - x0 + 2, int(iy.max()) - y0 + 2)
    return interpolate_grid(f, ix - x0, tx, iy - y0, ty)


def smooth_points(field: SmoothField, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """:meth:`SmoothField.points` (same values) from cached node tiles."""
    px = np.asarray(px, dtype=np.float64).ravel()
    py = np.asarray(py, dtype=np.float64).ravel()
    if px.size == 0:
        return np.zeros(0, dtype=np.float32)
    h = field.spacing
    gx, gy = px / h, py / h
    ix, iy = np.floor(gx), np.floor(gy)
    tx, ty = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    x0, y0 = int(ix.min()), int(iy.min())
    w = int(ix.max()) - x0 + 2
    rows = int(iy.max()) - y0 + 2
    if w * rows <= _GRID_NODES:
        table = node_values(field, x0, y0, w, rows).ravel()
        base = (iy - y0) * w + (ix - x0)
        c00, c10 = table.take(base), table.take(base + 1)
        c01, c11 = table.take(base + w), table.take(base + w + 1)
    else:
        cx = np.concatenate([ix, ix + 1, ix, ix + 1]) - x0
        cy = np.concatenate([iy, iy, iy + 1, iy + 1]) - y0
        uniq, inverse = np.unique(cy * w + cx, return_inverse=True)
        values = noise_points(
            field.key, (uniq % w + x0) * h, (uniq // w + y0) * h, field.octaves
        ).astype(np.float32)
        c00, c10, c01, c11 = values[inverse].reshape(4, -1)
    g0 = c00 * (np.float32(1.0) - tx) + c10 * tx
    g1 = c01 * (np.float32(1.0) - tx) + c11 * tx
    return cast(np.ndarray, (g1 - g0) * ty + g0)


#: Largest control lattice (nodes) gathered from tiles by :func:`smooth_points`.
_GRID_NODES = 1 << 20
