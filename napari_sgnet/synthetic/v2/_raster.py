"""Rasterise v2 shapes into per-block fields, combined by maximum (order independent)."""

from __future__ import annotations

import functools
import math
from typing import cast

import numpy as np

from napari_sgnet.synthetic._raster import (
    GlandCanvas,
    _outline_tables,
    outline_distance,
    paint_gland,
)
from napari_sgnet.synthetic.v2._shapes import EPITHELIAL, INFLAMMATION, NERVE, VESSEL, Shape

__all__ = ["Canvas", "draw_shape"]

_F32 = np.float32
#: Nuclear density and size of lymphocytes (inflammation).
LYMPHOCYTE_DENSITY, LYMPHOCYTE_SCALE = 1.0, 0.8


class Canvas(GlandCanvas):
    """v1 gland fields plus ``basal`` (dark basal/endothelial rims), ``nerve`` (coverage),
    ``fibre`` (nerve fibre modulation), ``wall`` (vessel muscle) and ``red`` (red cells)."""

    def __init__(self, shape: tuple[int, int], image: bool) -> None:
        super().__init__(shape, image)
        if image:
            self.basal = np.zeros(shape, _F32)
            self.nerve = np.zeros(shape, _F32)
            self.fibre = np.zeros(shape, _F32)
            self.wall = np.zeros(shape, _F32)
            self.red = np.zeros(shape, _F32)


@functools.lru_cache(maxsize=16384)
def _tables(p: Shape) -> tuple[np.ndarray, np.ndarray | None]:
    return _outline_tables(p)


def _window(p: Shape, xs: np.ndarray, ys: np.ndarray, px: float) -> tuple[slice, slice] | None:
    reach = p.extent + 2.0 * px
    c0, c1 = np.searchsorted(xs, (p.cx - reach, p.cx + reach))
    r0, r1 = np.searchsorted(ys, (p.cy - reach, p.cy + reach))
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def _band(s: np.ndarray, width: float, inv: np.float32) -> np.ndarray:
    """Anti-aliased coverage of ``-width < s < 0`` (fainter when thinner than a pixel)."""
    half = _F32(0.5 * width)
    cov = np.clip(_F32(0.5) - (np.abs(s + half) - half) * inv, 0.0, 1.0)
    cov *= _F32(min(1.0, width * float(inv)))
    return cast(np.ndarray, cov)


def draw_shape(p: Shape, cv: Canvas, xs: np.ndarray, ys: np.ndarray, px: float) -> None:
    """Rasterise one shape into ``cv`` on the grid ``ys x xs`` (µm, pixel size ``px``)."""
    win = _window(p, xs, ys, px)
    if win is None:
        return
    if not cv.image and p.kind not in EPITHELIAL:
        return
    dx = (xs[win[1]] - p.cx).astype(_F32)
    dy = (ys[win[0]] - p.cy).astype(_F32)
    ca, sa = _F32(math.cos(p.angle)), _F32(math.sin(p.angle))
    inv = _F32(1.0 / px)
    if p.kind == NERVE:
        _nerve(p, cv, win, dx, dy, ca, sa, inv, px)
        return
    outline, folds = _tables(p)
    theta, idx, s = outline_distance(p, dx, dy, ca, sa, outline)
    if p.kind in EPITHELIAL:
        cv.mask[win] |= s < 0
    if not cv.image:
        return
    inside = np.clip(_F32(0.5) - s * inv, 0.0, 1.0)
    if p.kind == VESSEL:
        _vessel(p, cv, win, s, inside, theta, inv, px)
        return
    if p.kind == INFLAMMATION:
        np.maximum(cv.nuc[win], inside * _F32(LYMPHOCYTE_DENSITY), out=cv.nuc[win])
        big = np.where(inside > 0.5, _F32(LYMPHOCYTE_SCALE), _F32(0.0))
        np.maximum(cv.scale[win], big, out=cv.scale[win])
        return
    paint_gland(p, cv, win, dx, dy, s, idx, folds, inside, inv)
    if p.basal_rim > 0:
        rim = _band(s, p.basal_rim, inv)
        rim *= _beads(theta, p, px)
        np.maximum(cv.basal[win], rim, out=cv.basal[win])


def _beads(theta: np.ndarray, p: Shape, px: float) -> np.ndarray:
    """Dark flattened nuclei strung along an outline (their mean where a pixel is coarse)."""
    count = max(6, round(2.0 * math.pi * p.radius / 11.0))
    if px * count > 2.0 * math.pi * p.radius / 2.5:
        return np.full(theta.shape, _F32(0.55))
    phase = _F32(6.283 * ((p.key >> 11) % 1000) / 1000.0)
    wave = np.cos(theta * _F32(count) + phase)
    return cast(np.ndarray, np.clip(wave * _F32(1.8) + _F32(0.5), 0.0, 1.0))


def _vessel(
    p: Shape,
    cv: Canvas,
    win: tuple[slice, slice],
    s: np.ndarray,
    inside: np.ndarray,
    theta: np.ndarray,
    inv: np.float32,
    px: float,
) -> None:
    inner = s + _F32(p.wall)
    lumen = np.clip(_F32(0.5) - (inner + _F32(1.5)) * inv, 0.0, 1.0)
    np.maximum(cv.lum[win], lumen, out=cv.lum[win])
    if p.wall > 0:
        wall = inside - np.clip(_F32(0.5) - inner * inv, 0.0, 1.0)
        np.maximum(cv.wall[win], wall, out=cv.wall[win])
    rim = _band(inner, 2.0, inv) * _beads(theta, p, px) * _F32(0.8)
    np.maximum(cv.basal[win], rim, out=cv.basal[win])
    if p.red_cells > 0:
        red = lumen * _F32(p.red_cells)
        np.maximum(cv.red[win], red, out=cv.red[win])


def _nerve(
    p: Shape,
    cv: Canvas,
    win: tuple[slice, slice],
    dx: np.ndarray,
    dy: np.ndarray,
    ca: np.float32,
    sa: np.float32,
    inv: np.float32,
    px: float,
) -> None:
    u = dx[None, :] * ca + dy[:, None] * sa
    v = dy[:, None] * ca - dx[None, :] * sa
    amp, wavelength, phase = p.wave
    length = _F32(p.radius * p.aspect)
    centre = np.sin(u * _F32(2 * math.pi / wavelength) + _F32(phase)) * _F32(amp)
    off = v - centre
    taper = np.sqrt(np.clip(_F32(1.0) - np.square(u / length), 0.0, 1.0))
    d = np.abs(off) - _F32(p.radius) * taper
    body = np.clip(_F32(0.5) - d * inv, 0.0, 1.0)
    np.maximum(cv.nerve[win], body, out=cv.nerve[win])
    if px < 2.0:
        fibre = np.cos(off * _F32(2 * math.pi / 4.5)) * _F32(0.35) + _F32(0.5)
        np.maximum(cv.fibre[win], fibre * body, out=cv.fibre[win])
