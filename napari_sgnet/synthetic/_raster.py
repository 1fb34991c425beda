"""Rasterisers: gland primitives into per-block fields, and nuclei as stamped ellipses.

All geometry is in level-0 µm and every pixel value is a pure function of the pixel's
position and of the shapes covering it; fields combine by maximum, so neither the order
of shapes nor the block they are drawn in can change a pixel.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from napari_sgnet.synthetic._glands import CRIBRIFORM, GLAND, SOLID, Primitive
from napari_sgnet.synthetic._hash import cell_hash, uniforms

__all__ = [
    "NUCLEUS",
    "GlandCanvas",
    "draw_primitive",
    "outline_distance",
    "paint_gland",
    "stamp_nuclei",
]

_F32 = np.float32
_OUTLINE_SAMPLES = 2048


class NUCLEUS:
    """Nucleus model: one candidate per ``CELL`` µm cell, placed anywhere in it."""

    CELL = 7.0
    RADIUS = 2.7
    #: Largest semi-axis any nucleus can have (µm): sets the block halo.
    REACH = 8.0
    STROMA_DENSITY = 0.06
    STROMA_SCALE = 0.85


class GlandCanvas:
    """Per-block gland fields, combined by maximum (order independent).

    ``mask`` marks gland pixels (ground truth); ``epi``/``lum``/``amyl`` are coverages of
    epithelium, lumen and corpora amylacea; ``nuc`` the nuclear density; ``scale`` the
    nuclear size; ``tone`` the cytoplasm tone (0 pale benign, 1 dark tumour).
    """

    def __init__(self, shape: tuple[int, int], image: bool) -> None:
        self.mask = np.zeros(shape, dtype=bool)
        self.image = image
        if image:
            self.epi = np.zeros(shape, _F32)
            self.lum = np.zeros(shape, _F32)
            self.nuc = np.zeros(shape, _F32)
            self.scale = np.full(shape, NUCLEUS.STROMA_SCALE, _F32)
            self.tone = np.zeros(shape, _F32)
            self.amyl = np.zeros(shape, _F32)


def _outline_tables(p: Primitive) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline radius and papillary fold depth (µm) at ``_OUTLINE_SAMPLES`` angles in ``[-pi, pi)``.

    Folds are epithelial tufts: they thicken the epithelium towards the lumen and leave
    the outer (basement membrane) outline smooth.
    """
    phi = np.linspace(-math.pi, math.pi, _OUTLINE_SAMPLES, endpoint=False)
    phi += math.pi / _OUTLINE_SAMPLES
    r = np.ones_like(phi)
    for k, amp, phase in p.harmonics:
        r += amp * np.cos(k * phi + phase)
    folds = None
    if p.papillae:
        f = np.zeros_like(phi)
        for k, depth, phase in p.papillae:
            f += depth * np.maximum(np.cos(k * phi + phase), 0.0) ** 2
        folds = (p.radius * f).astype(_F32)
    return (p.radius * r).astype(_F32), folds


def _holes(p: Primitive, dx: np.ndarray, dy: np.ndarray, inv: float) -> np.ndarray:
    """Coverage of a cribriform gland's punched-out lumens on the grid ``dy x dx`` (µm)."""
    hs = p.hole_spacing
    ix = np.floor(dx / hs).astype(np.int64)
    iy = np.floor(dy / hs).astype(np.int64)
    fx = (dx - (ix + 0.5) * hs).astype(_F32)
    fy = (dy - (iy + 0.5) * hs).astype(_F32)
    gx, gy = np.meshgrid(np.arange(ix[0], ix[-1] + 1), np.arange(iy[0], iy[-1] + 1))
    u = uniforms(cell_hash(p.key, gx, gy), 4).astype(_F32)
    radius = p.hole_radius * (0.55 + 0.9 * u[..., 3])
    room = np.maximum(hs - 2.0 * radius - 3.0, 0.0)
    jx, jy = (u[..., 1] - 0.5) * room, (u[..., 2] - 0.5) * room
    radius = np.where(u[..., 0] < 0.8, radius, 0.0).astype(_F32)
    idx = (iy - iy[0])[:, None] * gx.shape[1] + (ix - ix[0])[None, :]
    d = np.hypot(fx[None, :] - jx.ravel().take(idx), fy[:, None] - jy.ravel().take(idx))
    return cast(
        np.ndarray, np.clip(_F32(0.5) - (d - radius.ravel().take(idx)) * _F32(inv), 0.0, 1.0)
    )


def draw_primitive(
    p: Primitive, cv: GlandCanvas, xs: np.ndarray, ys: np.ndarray, px: float
) -> None:
    """Rasterise one primitive into ``cv`` on the grid ``ys x xs`` (µm, pixel size ``px``)."""
    reach = p.extent + 2.0 * px
    c0, c1 = np.searchsorted(xs, (p.cx - reach, p.cx + reach))
    r0, r1 = np.searchsorted(ys, (p.cy - reach, p.cy + reach))
    if c0 >= c1 or r0 >= r1:
        return
    dx = (xs[c0:c1] - p.cx).astype(_F32)
    dy = (ys[r0:r1] - p.cy).astype(_F32)
    ca, sa = _F32(math.cos(p.angle)), _F32(math.sin(p.angle))
    outline, folds = _outline_tables(p)
    _, idx, s = outline_distance(p, dx, dy, ca, sa, outline)
    win = (slice(r0, r1), slice(c0, c1))
    cv.mask[win] |= s < 0
    if not cv.image:
        return
    inv = _F32(1.0 / px)
    inside = np.clip(_F32(0.5) - s * inv, 0.0, 1.0)
    paint_gland(p, cv, win, dx, dy, s, idx, folds, inside, inv)


def outline_distance(
    p: Primitive,
    dx: np.ndarray,
    dy: np.ndarray,
    ca: np.float32,
    sa: np.float32,
    outline: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(theta, idx, s)`` on the grid ``dy x dx`` (µm from the centre; ``ca, sa`` the cosine
    and sine of ``p.angle``): the polar angle in the gland's frame, its index into the
    outline tables (:func:`_outline_tables`), and the distance past the outline (µm, < 0
    inside)."""
    u = (dx[None, :] * ca + dy[:, None] * sa) * _F32(1.0 / p.aspect)
    v = dy[:, None] * ca - dx[None, :] * sa
    theta = np.arctan2(v, u)
    idx = ((theta + _F32(math.pi)) * _F32(_OUTLINE_SAMPLES / (2 * math.pi))).astype(np.int32)
    idx &= _OUTLINE_SAMPLES - 1
    return theta, idx, np.hypot(u, v) - outline.take(idx)


def paint_gland(
    p: Primitive,
    cv: GlandCanvas,
    win: tuple[slice, slice],
    dx: np.ndarray,
    dy: np.ndarray,
    s: np.ndarray,
    idx: np.ndarray,
    folds: np.ndarray | None,
    inside: np.ndarray,
    inv: np.float32,
) -> None:
    """The image fields of a gland (epithelium, lumen, holes, corpora amylacea, nuclei,
    tone) in the window ``win`` of ``cv``, from :func:`outline_distance` and the coverage
    ``inside`` (``inv`` = 1 / pixel size)."""
    np.maximum(cv.epi[win], inside, out=cv.epi[win])
    nuc = inside * _F32(p.nuclear_density)
    if p.kind != SOLID:
        depth = s + _F32(p.epithelium)
        if folds is not None:
            depth += folds.take(idx)
        inner = np.clip(_F32(0.5) - depth * inv, 0.0, 1.0)
        lum = inner * _holes(p, dx, dy, float(inv)) if p.kind == CRIBRIFORM else inner
        np.maximum(cv.lum[win], lum, out=cv.lum[win])
        if p.kind == GLAND and p.basal:
            nuc *= np.clip(_F32(0.5) + (s + _F32(0.45 * p.epithelium)) * inv, 0.0, 1.0)
        if p.amylacea is not None:
            ax, ay, ar = p.amylacea
            d = np.hypot(dx[None, :] - _F32(ax), dy[:, None] - _F32(ay))
            am = np.clip(_F32(0.5) - (d - _F32(ar)) * inv, 0.0, 1.0) * inner
            np.maximum(cv.amyl[win], am, out=cv.amyl[win])
    np.maximum(cv.nuc[win], nuc, out=cv.nuc[win])
    big = np.where(inside > 0.5, _F32(p.nuclear_scale), _F32(0.0))
    np.maximum(cv.scale[win], big, out=cv.scale[win])
    np.maximum(cv.tone[win], inside * _F32(p.tone), out=cv.tone[win])


def stamp_nuclei(
    key: int,
    origin: tuple[int, int],
    downsample: int,
    mpp: float,
    density: np.ndarray,
    scale: np.ndarray,
    horizontal: np.ndarray,
) -> np.ndarray:
    """Nucleus coverage of a level window at ``origin`` (level pixels ``x, y``), float32.

    Each ``NUCLEUS.CELL`` cell hashes one candidate nucleus anywhere in the cell; it exists
    when its hash is below the nuclear ``density`` at its centre pixel, takes its size from
    ``scale`` there, and is a spindle along the local fibres (``horizontal`` weight) in
    stroma or a plump, randomly oriented ellipse in epithelium. Only candidates centred in
    the window are drawn, so callers pad the window by ``NUCLEUS.REACH``.
    """
    c = NUCLEUS.CELL
    h, w = density.shape
    x0, y0 = origin
    px = downsample * mpp
    shift = downsample // 2 + 0.5
    xs = ((np.arange(x0, x0 + w) * downsample) + shift) * mpp
    ys = ((np.arange(y0, y0 + h) * downsample) + shift) * mpp
    out = np.zeros((h, w), _F32)
    ix = np.arange(math.floor(xs[0] / c), math.floor(xs[-1] / c) + 1)
    iy = np.arange(math.floor(ys[0] / c), math.floor(ys[-1] / c) + 1)
    gx, gy = (a.ravel() for a in np.meshgrid(ix, iy))
    u = uniforms(cell_hash(key, gx, gy), 7)
    ncx, ncy = (gx + u[:, 1]) * c, (gy + u[:, 2]) * c
    # Centre pixel in absolute level indices (depends on the nucleus alone).
    col = np.rint((ncx / mpp - shift) / downsample).astype(np.int64) - x0
    row = np.rint((ncy / mpp - shift) / downsample).astype(np.int64) - y0
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = row[ok] * w + col[ok]
    keep = u[ok, 0] < density.ravel().take(flat)
    if not keep.any():
        return out
    sel = np.flatnonzero(ok)[keep]
    u, ncx, ncy, col, row, flat = u[sel], ncx[sel], ncy[sel], col[sel], row[sel], flat[keep]
    epithelial = density.ravel().take(flat) > NUCLEUS.STROMA_DENSITY + 1e-3
    radius = NUCLEUS.RADIUS * (0.75 + 0.5 * u[:, 3]) * scale.ravel().take(flat)
    aspect = np.where(epithelial, 1.0 + 0.4 * u[:, 4], 2.6 + 1.6 * u[:, 4])
    fibre = np.where(horizontal.ravel().take(flat) > 0.5, 0.0, 0.5 * math.pi)
    angle = np.where(epithelial, 2.0 * math.pi * u[:, 5], fibre + 0.7 * (u[:, 5] - 0.5))
    shade = (0.7 + 0.3 * u[:, 6]).astype(_F32)
    # Spindles (stroma) and round nuclei (epithelium) get their own footprint sizes.
    for group in (epithelial, ~epithelial):
        if group.any():
            _stamp(
                out,
                xs,
                ys,
                px,
                ncx[group],
                ncy[group],
                col[group],
                row[group],
                radius[group],
                aspect[group],
                angle[group],
                shade[group],
            )
    return out


def _stamp(
    out: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    px: float,
    ncx: np.ndarray,
    ncy: np.ndarray,
    col: np.ndarray,
    row: np.ndarray,
    radius: np.ndarray,
    aspect: np.ndarray,
    angle: np.ndarray,
    shade: np.ndarray,
) -> None:
    """Max-composite anti-aliased ellipses into ``out`` (pixel centres ``ys x xs`` in µm)."""
    h, w = out.shape
    sq = np.sqrt(aspect)
    # Every nucleus gets the same square footprint, larger than any of them, so the
    # footprint never changes a pixel's value.
    half = math.ceil(float((radius * sq).max()) / px + 1.5)
    offs = np.arange(-half, half + 1)
    cols = np.clip(col[:, None] + offs, 0, w - 1)
    rows = np.clip(row[:, None] + offs, 0, h - 1)
    inv = 1.0 / px
    dx = (xs[cols] - ncx[:, None]).astype(_F32)[:, None, :]
    dy = (ys[rows] - ncy[:, None]).astype(_F32)[:, :, None]
    cos_a, sin_a = np.cos(angle) * inv, np.sin(angle) * inv
    ax, ay = (cos_a / sq).astype(_F32), (sin_a / sq).astype(_F32)
    bx, by = (-sin_a * sq).astype(_F32), (cos_a * sq).astype(_F32)
    a = dx * ax[:, None, None] + dy * ay[:, None, None]
    b = dx * bx[:, None, None] + dy * by[:, None, None]
    alpha = np.hypot(a, b)
    np.subtract((radius * inv + 0.5).astype(_F32)[:, None, None], alpha, out=alpha)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha *= shade[:, None, None]
    index = (rows * w)[:, :, None] + cols[:, None, :]
    hit = alpha > 0
    np.maximum.at(out.ravel(), index[hit], alpha[hit])
