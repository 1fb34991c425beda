"""Exact, separable value noise: cubic B-spline interpolation of a hashed integer lattice.

A noise field is a sum of octaves; each octave interpolates lattice values (8-bit integers
from :func:`~napari_sgnet.synthetic._hash.cell_hash`) with cubic B-spline weights
quantised to multiples of ``2**-16``. Every product and partial sum is then exactly
representable in float64, so the result does not depend on summation order: a grid
evaluated with two BLAS matrix products (fast) equals a point-by-point evaluation (used
for gland placement) bit for bit, whatever the block, its size or the BLAS build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key

__all__ = [
    "Octave",
    "SmoothField",
    "interpolate_grid",
    "noise_grid",
    "noise_points",
    "periodic_tile",
]

_WEIGHT_SCALE = float(2**16)
_VALUE_SCALE = 1.0 / 128.0
#: OpenBLAS runs a GEMM on one thread when M * N * K is at most 65536 * 4.
_BLAS_SERIAL_MNK = 65536 * 4


@dataclass(frozen=True)
class Octave:
    """One octave: lattice spacing in µm along x and y, amplitude ``2**-shift``."""

    period_x: float
    period_y: float
    shift: int = 0

    @classmethod
    def iso(cls, period: float, shift: int = 0) -> Octave:
        """An isotropic octave."""
        return cls(float(period), float(period), shift)

    @property
    def amplitude(self) -> float:
        """Multiplier of this octave's lattice values."""
        return 2.0**-self.shift


def _axis_weights(coords: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index and quantised cubic B-spline weights ``(N, 4)`` for lattice ``i-1..i+2``."""
    g = np.asarray(coords, dtype=np.float64) / period
    i = np.floor(g)
    t = g - i
    t2 = t * t
    t3 = t2 * t
    w = np.empty((t.size, 4))
    w[:, 0] = (1.0 - 3.0 * t + 3.0 * t2 - t3) / 6.0
    w[:, 1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0
    w[:, 2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0
    w[:, 3] = t3 / 6.0
    return i.astype(np.int64), np.round(w * _WEIGHT_SCALE) / _WEIGHT_SCALE


def _lattice(key: int, kx: np.ndarray, ky: np.ndarray, wrap: tuple[int, int] | None) -> np.ndarray:
    """Integer lattice values in ``[-128, 127]`` as float64, shape ``(len(ky), len(kx))``."""
    if wrap is not None:
        kx, ky = np.mod(kx, wrap[0]), np.mod(ky, wrap[1])
    h = cell_hash(key, kx[None, :], ky[:, None])
    return (h >> np.uint64(56)).astype(np.float64) - 128.0


def _axis_matrix(coords: np.ndarray, period: float) -> tuple[np.ndarray, int]:
    """Dense interpolation matrix ``(N, K)`` and the first lattice index it covers."""
    i, w = _axis_weights(coords, period)
    k0 = int(i.min()) - 1
    k = int(i.max()) + 3 - k0
    m = np.zeros((i.size, k))
    rows = np.arange(i.size)
    for b in range(4):
        m[rows, i - 1 + b - k0] = w[:, b]
    return m, k0


def noise_grid(
    key: int,
    xs: np.ndarray,
    ys: np.ndarray,
    octaves: Sequence[Octave],
    wrap: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Noise on the grid ``ys x xs`` (µm), float64 ``(len(ys), len(xs))``.

    Parameters
    ----------
    key : int
        Stream key; each octave derives its own lattice from it.
    xs, ys : numpy.ndarray
        1-D sample coordinates in µm.
    octaves : sequence of Octave
        Octaves summed into the field; the amplitude of the field is below ``sum(2**-shift)``.
    wrap : sequence of (int, int), optional
        Per-octave lattice periods (cells) for tileable noise.
    """
    lefts, rights = [], []
    for o, octave in enumerate(octaves):
        mx, kx0 = _axis_matrix(xs, octave.period_x)
        my, ky0 = _axis_matrix(ys, octave.period_y)
        values = _lattice(
            derive_key(key, o),
            np.arange(kx0, kx0 + mx.shape[1]),
            np.arange(ky0, ky0 + my.shape[1]),
            None if wrap is None else wrap[o],
        )
        lefts.append(my)
        rights.append((values @ mx.T) * octave.amplitude)
    out = _matmul(np.concatenate(lefts, axis=1), np.concatenate(rights, axis=0))
    out *= _VALUE_SCALE
    return out


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row bands small enough for BLAS to stay on the calling thread.

    Dask already renders chunks in parallel; letting OpenBLAS split these thin products over
    the same cores makes them 10-30x slower. Results are exact, so banding cannot change them.
    """
    m, k = a.shape
    n = b.shape[1]
    rows = _BLAS_SERIAL_MNK // max(1, n * k)
    if rows >= m or rows < 8:
        return cast(np.ndarray, a @ b)
    out = np.empty((m, n))
    for i in range(0, m, rows):
        np.matmul(a[i : i + rows], b, out=out[i : i + rows])
    return out


def noise_points(key: int, px: np.ndarray, py: np.ndarray, octaves: Sequence[Octave]) -> np.ndarray:
    """Noise at scattered points (µm); equal bit for bit to :func:`noise_grid` there."""
    px = np.asarray(px, dtype=np.float64).ravel()
    py = np.asarray(py, dtype=np.float64).ravel()
    total = np.zeros(px.size)
    taps = np.arange(-1, 3)
    for o, octave in enumerate(octaves):
        ix, wx = _axis_weights(px, octave.period_x)
        iy, wy = _axis_weights(py, octave.period_y)
        h = cell_hash(
            derive_key(key, o),
            (ix[:, None] + taps)[:, None, :],
            (iy[:, None] + taps)[:, :, None],
        )
        v = (h >> np.uint64(56)).astype(np.float64) - 128.0
        total += np.einsum("na,nb,nab->n", wy, wx, v) * octave.amplitude
    return total * _VALUE_SCALE


@dataclass(frozen=True)
class SmoothField:
    """A smooth field: bilinear interpolation of exact B-spline noise on a control lattice.

    Control values sit on an absolute lattice of ``spacing`` µm and are computed exactly;
    interpolation uses the same element-wise float32 formula for grids and points. So the
    value at a position never depends on the block, level or evaluator that asks for it, and
    a block's values are bounded by its control values (convex weights): whole blocks far
    from a threshold are decided without touching their pixels.

    Parameters
    ----------
    key : int
        Stream key of the noise.
    octaves : tuple of Octave
        Octaves of the underlying noise.
    spacing : float
        Control lattice spacing in µm (a quarter of the finest period keeps it smooth).
    """

    key: int
    octaves: tuple[Octave, ...]
    spacing: float

    @property
    def bound(self) -> float:
        """Upper bound of ``|value|``."""
        return sum(o.amplitude for o in self.octaves)

    def _axis(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.asarray(coords, dtype=np.float64) / self.spacing
        i = np.floor(g)
        t = (g - i).astype(np.float32)
        i = i.astype(np.int64)
        nodes, pos = np.unique(np.concatenate([i, i + 1]), return_inverse=True)
        return nodes, pos[: i.size], t

    def controls(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Control values (float32) of every lattice cell touched by the grid ``ys x xs``."""
        nx, _, _ = self._axis(xs)
        ny, _, _ = self._axis(ys)
        return self._values(nx, ny)

    def _values(self, nodes_x: np.ndarray, nodes_y: np.ndarray) -> np.ndarray:
        h = self.spacing
        return noise_grid(self.key, nodes_x * h, nodes_y * h, self.octaves).astype(np.float32)

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values on the grid ``ys x xs`` (µm), float32 ``(len(ys), len(xs))``."""
        nx, jx, tx = self._axis(xs)
        ny, jy, ty = self._axis(ys)
        return interpolate_grid(self._values(nx, ny), jx, tx, jy, ty)

    def grid_lod(self, xs: np.ndarray, ys: np.ndarray, pixel_um: float) -> np.ndarray:
        """Like :meth:`grid` for fine grids; on grids coarser than the control lattice, the
        underlying noise sampled directly without octaves finer than two pixels.

        For image appearance only: the coarse branch is not bit-identical to :meth:`grid`.
        """
        if pixel_um <= 2.0 * self.spacing:
            return self.grid(xs, ys)
        kept = [o for o in self.octaves if min(o.period_x, o.period_y) >= 2.0 * pixel_um]
        if not kept:
            return np.zeros((ys.size, xs.size), dtype=np.float32)
        return noise_grid(self.key, xs, ys, kept).astype(np.float32)

    def points(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Values at scattered points (µm), float32; equal to :meth:`grid` there."""
        px = np.asarray(px, dtype=np.float64).ravel()
        py = np.asarray(py, dtype=np.float64).ravel()
        h = self.spacing
        gx, gy = px / h, py / h
        ix, iy = np.floor(gx), np.floor(gy)
        tx, ty = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
        ix, iy = ix.astype(np.int64), iy.astype(np.int64)
        cx = np.concatenate([ix, ix + 1, ix, ix + 1]) * h
        cy = np.concatenate([iy, iy, iy + 1, iy + 1]) * h
        corner = noise_points(self.key, cx, cy, self.octaves).astype(np.float32).reshape(4, -1)
        g0 = corner[0] * (np.float32(1.0) - tx) + corner[1] * tx
        g1 = corner[2] * (np.float32(1.0) - tx) + corner[3] * tx
        return cast(np.ndarray, (g1 - g0) * ty + g0)


def interpolate_grid(
    f: np.ndarray, jx: np.ndarray, tx: np.ndarray, jy: np.ndarray, ty: np.ndarray
) -> np.ndarray:
    """Bilinear interpolation of control values ``f`` (float32 ``(ny, nx)``) on a grid: the
    column ``x`` lies between nodes ``jx[x]`` and ``jx[x] + 1`` at fraction ``tx[x]`` (float32),
    likewise the row ``y`` (``jy``, ``ty``); the one float32 formula of
    :meth:`SmoothField.grid`."""
    g = f[:, jx] * (np.float32(1.0) - tx) + f[:, jx + 1] * tx
    d = g[1:] - g[:-1] if g.shape[0] > 1 else np.zeros_like(g)
    out = d.take(np.minimum(jy, d.shape[0] - 1), axis=0)
    out *= ty[:, None]
    out += g.take(jy, axis=0)
    return cast(np.ndarray, out)


def periodic_tile(
    key: int, period_px: int, downsample: int, mpp: float, octaves: tuple[Octave, ...]
) -> np.ndarray:
    """A tileable noise texture for one pyramid level, float32 ``(n, n)``.

    The texture is periodic in level-0 pixels with period ``period_px`` (a multiple of
    ``downsample``), and level pixel ``j`` samples level-0 position ``j * downsample +
    downsample // 2 + 0.5``; so ``tile[j % n]`` is the same continuous texture at every level,
    with octaves finer than two level pixels dropped (they would only alias).
    """
    n = period_px // downsample
    span = period_px * mpp
    pixel_um = downsample * mpp
    kept, wrap = [], []
    for octave in octaves:
        if min(octave.period_x, octave.period_y) < 2.0 * pixel_um:
            continue
        nx = max(1, round(span / octave.period_x))
        ny = max(1, round(span / octave.period_y))
        kept.append(Octave(span / nx, span / ny, octave.shift))
        wrap.append((nx, ny))
    if not kept or n < 1:
        return np.zeros((max(n, 1), max(n, 1)), dtype=np.float32)
    coords = (np.arange(n) * downsample + downsample // 2 + 0.5) * mpp
    tile = noise_grid(key, coords, coords, kept, wrap).astype(np.float32)
    tile.setflags(write=False)
    return tile
