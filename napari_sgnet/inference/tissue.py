"""Tissue detection on a low-resolution view of the slide: where the glass is.

The mask is computed once per slide, on the whole slide (never on a region), so every
run (whole, in pieces, resumed, distributed) makes the same glass decisions:

1. **View.** The slide at about :data:`TARGET_MPP` (8 µm/px): the coarsest level that is
   at least that fine, averaged over ``f x f`` blocks (area averaging, read in row strips
   so memory stays bounded). Without a µm/px the view's larger side is about
   :data:`FALLBACK_SIDE` px.
2. **Threshold.** Stained tissue is saturated, glass is not: tissue where the HSV
   saturation ``(max - min) / max`` of the averaged RGB exceeds the glass's own
   saturation (a low percentile over the bright pixels, so a tinted or warm glass is not
   taken for tissue) plus :data:`SATURATION_MARGIN`. A threshold can also be given.
   Otsu's threshold is *not* used: on a real slide the glass peak is tall and narrow, and
   Otsu's cut falls half-way to the tissue peak, dropping pale stroma and fibres.
3. **Cleanup.** Tissue specks smaller than :data:`MIN_TISSUE_UM2` are dropped (dust,
   debris); holes smaller than :data:`MAX_HOLE_UM2` are filled (small lumens and gaps
   inside tissue stay tissue, tears and large lumens stay glass). An optional dilation.

:meth:`TissueMask.glass` maps the mask to the pixels of any level (nearest mask pixel
under each pixel's centre), which is how the store sink keeps glass pixels unlabelled;
:meth:`TissueMask.any_tissue` decides which tiles are skipped whole.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from napari_sgnet.geometry import Box, scale_box
from napari_sgnet.inference.sampler import to_rgb_uint8
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.resample import block_mean

__all__ = [
    "MAX_HOLE_UM2",
    "MIN_TISSUE_UM2",
    "SATURATION_MARGIN",
    "TARGET_MPP",
    "TissueMask",
    "tissue_mask",
]

log = logging.getLogger(__name__)

#: µm/px of the view the mask is computed on.
TARGET_MPP = 8.0
#: Larger side (px) of the view when the slide has no µm/px.
FALLBACK_SIDE = 1024
#: Tissue: saturation above the glass's saturation plus this margin (saturation is 0-1).
SATURATION_MARGIN = 0.05
#: Pixels darker than this optical density (mean over RGB, ``-ln(I / 255)``) are never
#: counted as glass when estimating the glass's saturation.
GLASS_MAX_OD = 0.2
#: Glass saturation assumed when fewer than :data:`MIN_GLASS_SHARE` of the view is
#: bright enough to be glass (a slide covered by tissue): white glass.
DEFAULT_GLASS_SATURATION = 0.02
#: The glass's saturation estimate is clamped to at most this (a pale, all-tissue view
#: must not raise the threshold above faint eosin).
MAX_GLASS_SATURATION = 0.12
MIN_GLASS_SHARE = 0.02
#: Percentile of the bright pixels' saturation taken as the glass's.
GLASS_PERCENTILE = 25.0
#: Tissue components smaller than this (µm²) are dropped: dust and debris.
MIN_TISSUE_UM2 = 5000.0
#: Glass components enclosed by tissue and smaller than this (µm²) become tissue.
MAX_HOLE_UM2 = 10000.0
#: Source levels with more pixels than this are not read (detection is skipped).
MAX_SOURCE_PIXELS = 2**30

_CACHE: OrderedDict[tuple[object, ...], TissueMask] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Masks being computed now, each with the lock its computation holds.
_COMPUTING: dict[tuple[object, ...], threading.Lock] = {}


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask of a low-resolution view of the slide.

    Attributes
    ----------
    mask : numpy.ndarray
        ``(h, w)`` bool, True on tissue. Mask pixel ``(i, j)`` covers slide level-0 pixels
        ``[j * downsample, (j + 1) * downsample)`` x ``[i * downsample, (i + 1) * downsample)``.
    downsample : float
        Slide level-0 pixels per mask pixel.
    threshold : float
        Saturation threshold (0-1) that was applied.
    mpp : float or None
        µm/px of the mask, when the slide knows its µm/px.
    """

    mask: np.ndarray
    downsample: float
    threshold: float
    mpp: float | None = None

    def any_tissue(self, box: Box) -> bool:
        """True when a slide level-0 box meets tissue."""
        h, w = self.mask.shape
        sub = scale_box(box, 1.0 / self.downsample).clip(w, h)
        return bool(not sub.is_empty and self.mask[sub.slices()].any())

    def glass(self, box: Box, downsample: float) -> np.ndarray:
        """Where a box of a level is glass.

        Parameters
        ----------
        box : Box
            In pixels of a level whose pixels are ``downsample`` slide level-0 pixels.
        downsample : float
            Slide level-0 pixels per pixel of that level (``TilePlan.downsample``).

        Returns
        -------
        numpy.ndarray
            ``(box.h, box.w)`` bool: True on glass, i.e. where the mask pixel under the
            pixel's centre is not tissue; pixels past the slide edge are glass.
        """
        h, w = self.mask.shape
        scale = float(downsample) / self.downsample
        cols = np.floor((np.arange(box.x, box.x1) + 0.5) * scale).astype(np.int64)
        rows = np.floor((np.arange(box.y, box.y1) + 0.5) * scale).astype(np.int64)
        col_ok, row_ok = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
        tissue = self.mask[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
        return ~(tissue & row_ok[:, None] & col_ok[None, :])

    @property
    def fraction(self) -> float:
        """Share of the slide covered by tissue."""
        return float(self.mask.mean())


def _view_plan(pyramid: Pyramid) -> tuple[int, int] | None:
    """``(level, factor)``: the source level and the block size averaged on it."""
    if pyramid.mpp is not None and pyramid.mpp > 0:
        target = TARGET_MPP / pyramid.mpp
    else:
        target = max(pyramid.width, pyramid.height) / FALLBACK_SIDE
    target = max(1.0, target)
    level = pyramid.level_for_downsample(target)
    factor = max(1, round(target / pyramid.downsamples[level]))
    w, h = pyramid.level_size(level)
    if w * h > MAX_SOURCE_PIXELS:
        return None
    return level, factor


def _averaged_view(pyramid: Pyramid, level: int, f: int) -> np.ndarray:
    """The level averaged over ``f x f`` blocks, as float RGB, read in row strips."""
    array = pyramid.levels[level]
    h = int(array.shape[0])
    chunk_rows = int(array.chunksize[0]) if hasattr(array, "chunksize") else 1024
    strip = f * max(1, math.ceil(chunk_rows / f))
    parts = []
    for y in range(0, h, strip):
        block = array[y : y + strip]
        data = np.asarray(block.compute() if hasattr(block, "compute") else block)
        parts.append(block_mean(to_rgb_uint8(data).astype(np.float32), f))
    return np.concatenate(parts, axis=0)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0).astype(np.float32)


def glass_saturation(rgb: np.ndarray) -> float:
    """The glass's saturation: the :data:`GLASS_PERCENTILE` th percentile over bright pixels
    (mean OD below :data:`GLASS_MAX_OD`), so pale tissue among them does not count while
    glass is at least that share of them.

    :data:`DEFAULT_GLASS_SATURATION` when too few pixels are that bright; at most
    :data:`MAX_GLASS_SATURATION`.
    """
    od = -np.log(np.maximum(rgb, 1.0) / 255.0).mean(axis=-1)
    bright = od < GLASS_MAX_OD
    if bright.mean() < MIN_GLASS_SHARE:
        return DEFAULT_GLASS_SATURATION
    sat = np.percentile(_saturation(rgb[bright]), GLASS_PERCENTILE)
    return float(min(sat, MAX_GLASS_SATURATION))


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_pixels`` pixels."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def clean_mask(tissue: np.ndarray, mpp: float | None, dilate: int = 0) -> np.ndarray:
    """Drop tissue specks, fill small holes (sizes in µm², at ``mpp`` µm per mask pixel)."""
    pixel_um2 = (mpp if mpp is not None else TARGET_MPP) ** 2
    out = _drop_small(tissue, MIN_TISSUE_UM2 / pixel_um2)
    # Holes: glass components (4-connected, as the complement of 8-connected tissue) that
    # do not reach the border and are small.
    padded = np.pad(~out, 1, constant_values=True)
    from scipy import ndimage

    labels, n = ndimage.label(padded)
    if n:
        sizes = np.bincount(labels.ravel())
        small = sizes < MAX_HOLE_UM2 / pixel_um2
        small[0] = False
        small[labels[0, 0]] = False  # the glass around the slide (the padding joins it)
        out = out | small[labels][1:-1, 1:-1]
    if dilate > 0 and out.any():
        out = ndimage.binary_dilation(out, iterations=dilate)
    return out


def _compute(
    pyramid: Pyramid, level: int, f: int, threshold: float | None, dilate: int
) -> TissueMask:
    rgb = _averaged_view(pyramid, level, f)
    downsample = float(pyramid.downsamples[level]) * f
    mpp = pyramid.mpp * downsample if pyramid.mpp else None
    sat = _saturation(rgb)
    if threshold is None:
        threshold = glass_saturation(rgb) + SATURATION_MARGIN
    mask = clean_mask(sat > threshold, mpp, dilate)
    return TissueMask(mask, downsample, float(threshold), mpp)


def tissue_mask(
    pyramid: Pyramid, *, threshold: float | None = None, dilate: int = 0
) -> TissueMask | None:
    """The tissue mask of a slide, or ``None`` when it cannot be computed.

    Parameters
    ----------
    pyramid : Pyramid
        The slide (RGB; a slide of another kind gets ``None``: no detection).
    threshold : float, optional
        Saturation threshold (0-1); ``None`` uses the glass's saturation plus
        :data:`SATURATION_MARGIN`.
    dilate : int
        Dilation iterations at the mask's resolution (0: none).

    Returns
    -------
    TissueMask or None
        Cached per slide level and settings. ``None`` for a slide that is not RGB, or
        whose coarsest usable level has more than :data:`MAX_SOURCE_PIXELS` pixels.
    """
    if not pyramid.is_rgb:
        log.info("%s: not an RGB slide; tissue detection skipped", pyramid.name)
        return None
    view = _view_plan(pyramid)
    if view is None:
        log.warning(
            "%s: no level of at most %d pixels; tissue detection skipped",
            pyramid.name,
            MAX_SOURCE_PIXELS,
        )
        return None
    level, f = view
    key = (
        pyramid.levels[level].name,
        pyramid.downsamples[level],
        pyramid.mpp,
        f,
        threshold,
        dilate,
    )
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        computing = _COMPUTING.setdefault(key, threading.Lock())
    with computing:  # one computation per slide: a second caller waits for the first's result
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        try:
            result = _compute(pyramid, level, f, threshold, dilate)
            with _CACHE_LOCK:
                _CACHE[key] = result
                while len(_CACHE) > 8:
                    _CACHE.popitem(last=False)
        finally:
            with _CACHE_LOCK:
                _COMPUTING.pop(key, None)
    log.info(
        "%s: tissue %.1f%% (saturation > %.3f at downsample %g)",
        pyramid.name,
        100 * result.fraction,
        result.threshold,
        result.downsample,
    )
    return result
