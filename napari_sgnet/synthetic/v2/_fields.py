"""One-dimensional smooth fields with one exact evaluator for grids and points."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import numpy as np

from napari_sgnet.synthetic._noise import Octave, SmoothField, noise_points

__all__ = ["Field1D", "smooth_points"]


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


def smooth_points(field: SmoothField, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """:meth:`SmoothField.points` evaluating each distinct control node once (same values).

    Placement asks for many nearby points, which share most of their control nodes.
    """
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
    cx = np.concatenate([ix, ix + 1, ix, ix + 1]) - x0
    cy = np.concatenate([iy, iy, iy + 1, iy + 1]) - y0
    flat = cy * w + cx
    uniq, inverse = np.unique(flat, return_inverse=True)
    values = noise_points(
        field.key, (uniq % w + x0) * h, (uniq // w + y0) * h, field.octaves
    ).astype(np.float32)
    corner = values[inverse].reshape(4, -1)
    g0 = corner[0] * (np.float32(1.0) - tx) + corner[1] * tx
    g1 = corner[2] * (np.float32(1.0) - tx) + corner[3] * tx
    return cast(np.ndarray, (g1 - g0) * ty + g0)
