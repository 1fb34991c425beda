"""Area-averaging (images) and mode/nearest (labels) reduction of pyramid windows, on the fly.

A working pixel ``j`` covers the source interval ``[j * f, (j + 1) * f)`` along each axis
(``f`` source pixels per working pixel, ``f >= 1``; intervals are clipped to the source, so
the last working pixel may average a partial block). Images are reduced by the area mean:

- integer ``f``: the exact block mean, summed in integers and rounded half up;
- any other ``f``: exact fractional-overlap area weights, one weight matrix per axis
  (separable), rounded half up for integer dtypes. For a rational ``f = p / q`` (``q <= 64``,
  e.g. 8/3) the weights are integer lengths in units of ``1 / q`` pixel, so the sums are
  exact integers and the rounding does not depend on how a level is cut into windows.

Label images are never averaged: integer factors take the block mode (ties to the smaller
non-zero id; 0 only where the whole block is 0, as the label store's own pyramid does), other
factors the nearest source pixel (the one under the working pixel's centre).

Every working pixel depends only on its own source interval, so a window of a reduced level
equals the same pixels of the whole reduced level, however it is cut. :class:`ResampledLevel`
is the array-like view (``shape``, ``dtype``, slicing) that reads only the source window
under each request: memory is bounded by the window, not the level.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "ResampledLevel",
    "area_reduce",
    "area_weights",
    "block_mean",
    "integer_factor",
    "reduced_size",
    "source_span",
]

#: A factor within this distance of an integer is treated as that integer (exact block mean).
_INTEGER_TOL = 1e-6
#: Factors ``p / q`` with ``q`` up to this are reduced with exact integer area weights.
_MAX_DENOMINATOR = 64


def integer_factor(factor: float) -> int | None:
    """``round(factor)`` when ``factor`` is (within 1e-6 of) an integer, else ``None``."""
    k = round(factor)
    return int(k) if k >= 1 and abs(factor - k) <= _INTEGER_TOL else None


def reduced_size(n_src: int, factor: float) -> int:
    """Working pixels along an axis of ``n_src`` source pixels (a partial last pixel counts)."""
    return max(1, math.ceil(n_src / factor - _INTEGER_TOL))


def source_span(start: int, stop: int, factor: float, n_src: int) -> tuple[int, int]:
    """Source pixels ``[s0, s1)`` that working pixels ``[start, stop)`` cover (clipped)."""
    k = integer_factor(factor)
    if k is not None:
        return min(start * k, n_src), min(stop * k, n_src)
    s0 = math.floor(start * factor + _INTEGER_TOL)
    s1 = math.ceil(stop * factor - _INTEGER_TOL)
    return min(max(s0, 0), n_src), min(max(s1, 0), n_src)


def _rational(factor: float) -> tuple[int, int] | None:
    """``(p, q)`` with ``factor == p / q`` (to 1e-9) for a small ``q``, else ``None``."""
    fr = Fraction(factor).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(fr) - factor) <= 1e-9 * factor:
        return fr.numerator, fr.denominator
    return None


def _overlaps(start: int, stop: int, factor: float, n_src: int) -> tuple[int, np.ndarray, bool]:
    """Unnormalised overlaps of working pixels ``[start, stop)`` with the source pixels.

    For a rational factor ``p / q`` they are integer lengths in units of ``1 / q`` source
    pixel (exact: every sum of them, and of them times integer pixel values, is an exact
    float64 integer, whatever the order of summation); else float lengths.
    """
    s0, s1 = source_span(start, stop, factor, n_src)
    ratio = _rational(factor)
    p, q = ratio if ratio is not None else (factor, 1)
    j = np.arange(start, stop, dtype=np.float64)
    lo = np.clip(j * p, 0.0, n_src * q)[:, None]
    hi = np.clip((j + 1.0) * p, 0.0, n_src * q)[:, None]
    i = np.arange(s0, s1, dtype=np.float64)[None, :] * q
    overlap = np.clip(np.minimum(hi, i + q) - np.maximum(lo, i), 0.0, None)
    return s0, overlap, ratio is not None


def area_weights(start: int, stop: int, factor: float, n_src: int) -> tuple[int, np.ndarray]:
    """Area-averaging weights of working pixels ``[start, stop)`` along one axis.

    Parameters
    ----------
    start, stop : int
        Working pixel range (inside the reduced axis).
    factor : float
        Source pixels per working pixel.
    n_src : int
        Source pixels along the axis.

    Returns
    -------
    s0 : int
        First source pixel the weights apply to.
    weights : numpy.ndarray
        ``(stop - start, s1 - s0)`` float64; row ``j`` holds the overlap of working pixel
        ``start + j``'s interval with each source pixel, divided by the row's total (each
        row sums to 1).
    """
    s0, overlap, _ = _overlaps(start, stop, factor, n_src)
    total = overlap.sum(axis=1, keepdims=True)
    return s0, overlap / np.where(total > 0, total, 1.0)


def _block_starts(n: int, k: int) -> np.ndarray:
    """Window offsets of ``n`` consecutive ``k``-pixel blocks."""
    return np.arange(n, dtype=np.int64) * k


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.floor(values + 0.5), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _block_mean(window: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Exact ``k x k`` block mean (partial edge blocks averaged over their pixels)."""
    h, w = shape
    rows, cols = _block_starts(h, k), _block_starts(w, k)
    if np.issubdtype(window.dtype, np.integer) and window.dtype.itemsize <= 2:
        acc: np.ndarray = window.astype(np.int64)
    else:
        acc = window.astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(acc, rows, axis=0), cols, axis=1)
    n_r = np.diff(np.append(rows, window.shape[0]))
    n_c = np.diff(np.append(cols, window.shape[1]))
    count = (n_r[:, None] * n_c[None, :]).reshape((h, w) + (1,) * (window.ndim - 2))
    if acc.dtype == np.int64:  # round half up in integers: floor(s / n + 1/2)
        out: np.ndarray = ((2 * sums + count) // (2 * count)).astype(window.dtype)
        return out
    return _round_to(sums / count, window.dtype)


def block_mean(window: np.ndarray, k: int) -> np.ndarray:
    """The ``k x k`` block mean of a whole window, of its dtype (see :func:`area_reduce`)."""
    if k == 1:
        return window.copy()
    shape = reduced_size(window.shape[0], k), reduced_size(window.shape[1], k)
    return _block_mean(window, k, shape)


def _block_mode(window: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """``k x k`` block mode of a 2-D label window (ties to the smaller non-zero id)."""
    h, w = shape
    rows, cols = _block_starts(h, k), _block_starts(w, k)
    best = np.zeros((h, w), dtype=window.dtype)
    best_count = np.zeros((h, w), dtype=np.int64)
    for value in np.unique(window):
        if value == 0:
            continue
        hits = (window == value).astype(np.int64)
        count = np.add.reduceat(np.add.reduceat(hits, rows, axis=0), cols, axis=1)
        better = count > best_count  # ascending ids: a tie keeps the smaller id
        best[better], best_count[better] = value, count[better]
    return best


def _nearest(start: int, stop: int, factor: float, s0: int, n_src: int) -> np.ndarray:
    centres = np.floor((np.arange(start, stop) + 0.5) * factor).astype(np.int64)
    index: np.ndarray = np.clip(centres, 0, n_src - 1) - s0
    return index


def area_reduce(
    window: np.ndarray,
    factor: float,
    rows: tuple[int, int],
    cols: tuple[int, int],
    src_shape: tuple[int, int],
    labels: bool = False,
) -> np.ndarray:
    """Reduce a source window to working pixels ``rows x cols``.

    Parameters
    ----------
    window : numpy.ndarray
        ``(H, W[, C])`` source pixels ``source_span(*rows) x source_span(*cols)``.
    factor : float
        Source pixels per working pixel (``>= 1``).
    rows, cols : tuple of int
        Working pixel ranges ``(start, stop)``.
    src_shape : tuple of int
        ``(height, width)`` of the whole source level (the clipping of edge pixels).
    labels : bool
        Mode/nearest instead of the area mean.

    Returns
    -------
    numpy.ndarray
        ``(rows[1] - rows[0], cols[1] - cols[0][, C])`` of ``window``'s dtype.
    """
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    k = integer_factor(factor)
    if k is not None and k > 1 and labels and window.ndim == 2:
        return _block_mode(window, k, (h, w))
    if k is not None and not labels:
        return window.copy() if k == 1 else _block_mean(window, k, (h, w))
    r0, _ = source_span(rows[0], rows[1], factor, src_shape[0])
    c0, _ = source_span(cols[0], cols[1], factor, src_shape[1])
    if labels:
        ri = _nearest(rows[0], rows[1], factor, r0, src_shape[0])
        ci = _nearest(cols[0], cols[1], factor, c0, src_shape[1])
        picked: np.ndarray = window[ri][:, ci]
        return picked
    _, oy, exact = _overlaps(rows[0], rows[1], factor, src_shape[0])
    _, ox, _ = _overlaps(cols[0], cols[1], factor, src_shape[1])
    sums = np.tensordot(oy, window.astype(np.float64), axes=(1, 0))  # (h, W[, C])
    sums = np.moveaxis(np.tensordot(ox, sums, axes=(1, 1)), 0, 1)  # (h, w[, C])
    total = np.outer(oy.sum(axis=1), ox.sum(axis=1)).reshape((h, w) + (1,) * (window.ndim - 2))
    if exact and np.issubdtype(window.dtype, np.integer) and window.dtype.itemsize <= 2:
        # Integer sums and areas (exact in float64): round half up in integers.
        s_int, t_int = np.rint(sums).astype(np.int64), np.rint(total).astype(np.int64)
        return ((2 * s_int + t_int) // (2 * t_int)).astype(window.dtype)
    return _round_to(sums / total, window.dtype)


class ResampledLevel:
    """A pyramid level reduced by ``factor``, computed window by window when sliced.

    Parameters
    ----------
    source : array-like
        ``(H, W[, C])`` source level (dask, zarr or numpy).
    factor : float
        Source pixels per working pixel (``>= 1``).
    labels : bool
        A label image: mode/nearest instead of the area mean.
    shape : tuple of int, optional
        ``(height, width)`` of the reduced level; by default :func:`reduced_size` of the
        source's.
    """

    def __init__(
        self,
        source: Any,
        factor: float,
        labels: bool = False,
        shape: tuple[int, int] | None = None,
    ) -> None:
        if not factor >= 1.0 - _INTEGER_TOL:
            raise ValueError(f"a reduction factor must be at least 1, got {factor}")
        self.source = source
        self.factor = float(factor)
        self.labels = labels
        self.src_shape = (int(source.shape[0]), int(source.shape[1]))
        h, w = shape or (
            reduced_size(self.src_shape[0], factor),
            reduced_size(self.src_shape[1], factor),
        )
        self.shape: tuple[int, ...] = (int(h), int(w), *(int(s) for s in source.shape[2:]))
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole reduced level."""
        return int(math.prod(self.shape)) * int(self.dtype.itemsize)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Working pixels ``[y0, y1) x [x0, x1)`` (inside the level).

        Working pixels past the source's last (when ``shape`` is larger than the source
        covers, e.g. a reader that floors level sizes) repeat the last one.
        """
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), *self.shape[2:]), self.dtype)
        vh = reduced_size(self.src_shape[0], self.factor)
        vw = reduced_size(self.src_shape[1], self.factor)
        cy0, cx0 = min(y0, vh - 1), min(x0, vw - 1)
        cy1, cx1 = max(min(y1, vh), cy0 + 1), max(min(x1, vw), cx0 + 1)
        sy0, sy1 = source_span(cy0, cy1, self.factor, self.src_shape[0])
        sx0, sx1 = source_span(cx0, cx1, self.factor, self.src_shape[1])
        data = self.source[sy0:sy1, sx0:sx1]
        window = np.asarray(data.compute() if hasattr(data, "compute") else data)
        out = area_reduce(window, self.factor, (cy0, cy1), (cx0, cx1), self.src_shape, self.labels)
        if (cy0, cy1) != (y0, y1):
            out = out[np.clip(np.arange(y0, y1), cy0, cy1 - 1) - cy0]
        if (cx0, cx1) != (x0, x1):
            out = out[:, np.clip(np.arange(x0, x1), cx0, cx1 - 1) - cx0]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) < 2 or not all(isinstance(k, slice) for k in key[:2]):
            raise IndexError(f"ResampledLevel takes row and column slices, got {key!r}")
        ry = range(*key[0].indices(self.shape[0]))
        rx = range(*key[1].indices(self.shape[1]))
        if not ry or not rx:
            return np.zeros((len(ry), len(rx), *self.shape[2:]), self.dtype)[(..., *key[2:])]
        if ry.step < 0 or rx.step < 0:
            raise IndexError("ResampledLevel does not take negative steps")
        out = self.read(ry.start, ry[-1] + 1, rx.start, rx[-1] + 1)
        return out[:: ry.step, :: rx.step][(slice(None), slice(None), *key[2:])]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read(0, self.shape[0], 0, self.shape[1])
        return out if dtype is None else out.astype(dtype)
