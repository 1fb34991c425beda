"""Tissue detection on a low-resolution level, to skip glass.

Stained tissue is saturated, glass is not: the mask is HSV saturation above an
Otsu threshold (clamped to a sane range, so a slide that is all tissue or all
glass is not split in two), dilated so tissue edges are never skipped. It is
computed on the whole slide, never on a region, so every run (whole, in pieces,
resumed, distributed) makes the same glass decisions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from napari_sgnet.geometry import Box, scale_box
from napari_sgnet.inference.sampler import to_rgb_uint8
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["TissueMask", "tissue_mask"]

log = logging.getLogger(__name__)

#: Otsu's threshold on saturation (0-1) is clamped to this range.
OTSU_RANGE = (0.04, 0.15)
#: Largest side of the level the mask is computed on.
MAX_SIDE = 1024
#: Beyond this side there is no usable low-resolution level and detection is skipped.
MAX_FALLBACK_SIDE = 8192

_CACHE: OrderedDict[tuple, TissueMask] = OrderedDict()
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask of a low-resolution level.

    Attributes
    ----------
    mask : numpy.ndarray
        ``(h, w)`` bool, True on tissue.
    downsample : float
        Downsample of the mask relative to the slide's level 0.
    threshold : float
        Saturation threshold (0-1) that was applied.
    """

    mask: np.ndarray
    downsample: float
    threshold: float

    def any_tissue(self, box: Box) -> bool:
        """True when a slide level-0 box meets tissue."""
        h, w = self.mask.shape
        sub = scale_box(box, 1.0 / self.downsample).clip(w, h)
        return bool(not sub.is_empty and self.mask[sub.slices()].any())

    @property
    def fraction(self) -> float:
        """Share of the slide covered by (dilated) tissue."""
        return float(self.mask.mean())


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)


def _pick_level(pyramid: Pyramid) -> int | None:
    for level in range(pyramid.n_levels):
        if max(pyramid.level_size(level)) <= MAX_SIDE:
            return level
    last = pyramid.n_levels - 1
    return last if max(pyramid.level_size(last)) <= MAX_FALLBACK_SIDE else None


def _compute(pyramid: Pyramid, level: int, threshold: float | None, dilate: int) -> TissueMask:
    w, h = pyramid.level_size(level)
    step = max(1, -(-max(w, h) // MAX_SIDE))
    # Strided lazily: dask decodes chunk by chunk and keeps only the thumbnail.
    thumb = pyramid.levels[level][::step, ::step]
    rgb = to_rgb_uint8(np.asarray(thumb.compute() if hasattr(thumb, "compute") else thumb))
    from scipy import ndimage  # imported here: workers that never detect tissue skip them
    from skimage.filters import threshold_otsu

    sat = _saturation(rgb)
    if threshold is None:
        lo, hi = OTSU_RANGE
        threshold = float(np.clip(threshold_otsu(sat), lo, hi)) if np.ptp(sat) > 0 else lo
    mask = sat > threshold
    if dilate > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=dilate)
    return TissueMask(mask, float(pyramid.downsamples[level]) * step, float(threshold))


def tissue_mask(
    pyramid: Pyramid, *, threshold: float | None = None, dilate: int = 2
) -> TissueMask | None:
    """The tissue mask of a slide, or ``None`` when it has no low-resolution level.

    Parameters
    ----------
    pyramid : Pyramid
        The slide.
    threshold : float, optional
        Saturation threshold (0-1); ``None`` uses Otsu clamped to ``OTSU_RANGE``.
    dilate : int
        Dilation iterations at the mask's resolution.

    Returns
    -------
    TissueMask or None
        Cached per slide level and settings.
    """
    level = _pick_level(pyramid)
    if level is None:
        log.warning(
            "%s: no level of at most %d px a side; tissue detection skipped",
            pyramid.name,
            MAX_FALLBACK_SIDE,
        )
        return None
    key = (pyramid.levels[level].name, pyramid.downsamples[level], threshold, dilate)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    result = _compute(pyramid, level, threshold, dilate)
    log.info(
        "%s: tissue %.1f%% (saturation > %.3f at downsample %g)",
        pyramid.name,
        100 * result.fraction,
        result.threshold,
        result.downsample,
    )
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
    return result
