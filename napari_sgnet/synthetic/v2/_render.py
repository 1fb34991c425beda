"""Rasterise any window of any level of a v2 slide: labels, tissue, H&E image, gland mask.

Sampling follows v1 (:mod:`napari_sgnet.synthetic._render`): level pixel ``j`` of downsample
``d`` samples level-0 pixel ``j * d + d // 2``, so labels and tissue are an exact
nearest-neighbour subsampling of level 0, and the image is rendered at the level's own
resolution with the v1 stain, texture, nuclei, noise and blur pipeline.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.synthetic._hash import derive_key
from napari_sgnet.synthetic._noise import SmoothField
from napari_sgnet.synthetic._raster import NUCLEUS, stamp_nuclei
from napari_sgnet.synthetic._render import (
    _MOTTLE_COARSE,
    _ORIENTATION,
    _STAINING,
    AMYLACEA_E,
    AMYLACEA_H,
    LUMEN_E,
    LUMEN_H,
    NUCLEUS_E,
    NUCLEUS_H,
    STROMA_E,
    STROMA_H,
    _noise_tile,
    _texture_tiles,
    level_coords,
)
from napari_sgnet.synthetic._stain import stain_for_shift
from napari_sgnet.synthetic.config import SynthConfig
from napari_sgnet.synthetic.v2._cores import AA_MAX_UM, Cores
from napari_sgnet.synthetic.v2._fields import smooth_grid
from napari_sgnet.synthetic.v2._index import ShapeIndex
from napari_sgnet.synthetic.v2._raster import Canvas, draw_shape
from napari_sgnet.synthetic.v2._regions import RegionMap, code_labels
from napari_sgnet.synthetic.v2._shapes import Shape

__all__ = ["RendererV2"]

_F32 = np.float32
#: Stain amounts of the v2 extras: basal/endothelial rims, nerve, vessel wall, red cells.
BASAL_H, BASAL_E = 1.0, 0.15
NERVE_H, NERVE_E = 0.07, 0.36
WALL_H, WALL_E = 0.12, 0.72
RED_H, RED_E = 0.02, 1.15


class RendererV2:
    """Renders windows of a v2 synthetic slide; a pure function of the config and the window.

    Parameters
    ----------
    config : SynthConfig
        The slide description (``version == 2``).
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.cores = Cores(config)
        self.regions = RegionMap(config, self.cores)
        self.shapes = ShapeIndex(self.regions, config.seed, config.gland_spacing)
        self.stain = stain_for_shift(config.stain_shift)
        seed = config.seed
        self._keys = {
            name: derive_key(seed, name)
            for name in ("nuclei", "fibres-x", "fibres-y", "mottle", "pixel-noise")
        }
        self._orientation = SmoothField(derive_key(seed, "orientation"), _ORIENTATION, 25.0)
        self._staining = SmoothField(derive_key(seed, "staining"), _STAINING, 100.0)
        self._mottle = SmoothField(derive_key(seed, "mottle-coarse"), _MOTTLE_COARSE, 8.0)

    # ----------------------------------------------------------------- helpers
    def _coords(self, downsample: int, box: Box) -> tuple[np.ndarray, np.ndarray]:
        mpp = self.config.mpp
        xs = level_coords(box.x, box.w, downsample, mpp)
        return xs, level_coords(box.y, box.h, downsample, mpp)

    def _find(self, xs: np.ndarray, ys: np.ndarray, px: float) -> list[Shape]:
        pad = 2.0 * px
        return self.shapes.find(xs[0] - pad, ys[0] - pad, xs[-1] + pad, ys[-1] + pad)

    def _explicit_nuclei(self, downsample: int) -> bool:
        return downsample * self.config.mpp <= NUCLEUS.CELL / 3.0

    # ----------------------------------------------------------------- labels
    def labels(self, downsample: int, box: Box) -> np.ndarray:
        """Label ids (uint8 ``(h, w)``): 0 glass, 1 stroma, 2 benign, 3-5 Gleason 3-5."""
        if box.is_empty:
            return np.zeros((box.h, box.w), dtype=np.uint8)
        xs, ys = self._coords(downsample, box)
        codes, _ = self.regions.grid(xs, ys)
        return code_labels(codes)

    def tissue(self, downsample: int, box: Box) -> np.ndarray:
        """True on tissue (bool ``(h, w)``)."""
        if box.is_empty:
            return np.zeros((box.h, box.w), dtype=bool)
        xs, ys = self._coords(downsample, box)
        return self.cores.grid(xs, ys).tissue

    def gland_mask(self, downsample: int, box: Box) -> np.ndarray:
        """Ground truth: True where a gland (epithelium, lumen, tumour cells) lies."""
        cv = Canvas((box.h, box.w), image=False)
        if box.is_empty:
            return cv.mask
        xs, ys = self._coords(downsample, box)
        px = downsample * self.config.mpp
        for p in self._find(xs, ys, px):
            draw_shape(p, cv, xs, ys, px)
        return cv.mask

    # ----------------------------------------------------------------- image
    def image(self, downsample: int, box: Box) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)``."""
        cfg = self.config
        if box.is_empty:
            return np.zeros((box.h, box.w, 3), dtype=np.uint8)
        px = downsample * cfg.mpp
        sigma = cfg.blur / downsample
        blur_halo = math.ceil(3.5 * sigma) if sigma >= 0.25 else 0
        nuc_halo = math.ceil(NUCLEUS.REACH / px) + 2 if self._explicit_nuclei(downsample) else 0
        halo = blur_halo + nuc_halo
        ext = Box(box.x - halo, box.y - halo, box.w + 2 * halo, box.h + 2 * halo)
        rgb = self._image_float(downsample, ext)
        if blur_halo:
            from scipy.ndimage import gaussian_filter

            rgb = gaussian_filter(rgb, sigma=(sigma, sigma, 0.0), mode="nearest", truncate=3.5)
        rgb = rgb[halo : halo + box.h, halo : halo + box.w]
        np.rint(rgb, out=rgb)
        np.clip(rgb, 0.0, 255.0, out=rgb)
        return rgb.astype(np.uint8)

    def _image_float(self, downsample: int, box: Box) -> np.ndarray:
        cfg = self.config
        px = downsample * cfg.mpp
        xs, ys = self._coords(downsample, box)
        sample = self.cores.grid(xs, ys)
        width = min(max(px, 1.0), AA_MAX_UM)
        alpha = np.clip(0.5 - sample.sdf / width, 0.0, 1.0).astype(_F32)
        # Glass: zero stain through the same colour formula as tissue (bit-identical).
        glass = np.empty((1, 1, 3), dtype=_F32)
        zero = np.zeros((1, 1), dtype=_F32)
        self.stain.to_rgb(zero, zero, glass)
        rgb = np.empty((box.h, box.w, 3), dtype=_F32)
        rgb[...] = glass
        rows = np.flatnonzero(alpha.any(axis=1))
        if rows.size:
            # Stains only where tissue is, plus the reach of a nucleus centred on glass.
            cols = np.flatnonzero(alpha.any(axis=0))
            m = math.ceil(NUCLEUS.REACH / px) + 2 if self._explicit_nuclei(downsample) else 0
            r0, r1 = max(0, int(rows[0]) - m), min(box.h, int(rows[-1]) + 1 + m)
            c0, c1 = max(0, int(cols[0]) - m), min(box.w, int(cols[-1]) + 1 + m)
            sub = Box(box.x + c0, box.y + r0, c1 - c0, r1 - r0)
            hem, eos = self._stains(downsample, sub, xs[c0:c1], ys[r0:r1], px)
            a = alpha[r0:r1, c0:c1]
            hem *= a
            eos *= a
            part = np.empty((sub.h, sub.w, 3), dtype=_F32)
            self.stain.to_rgb(hem, eos, part)
            rgb[r0:r1, c0:c1] = part
        if cfg.noise > 0:
            rgb += self._pixel_noise(downsample, box)
        return rgb

    def _stains(
        self, downsample: int, box: Box, xs: np.ndarray, ys: np.ndarray, px: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Haematoxylin and eosin amounts before the tissue mask."""
        shape = (box.h, box.w)
        horizontal = _grid_lod(self._orientation, xs, ys, px)
        horizontal *= _F32(2.0)
        horizontal += _F32(0.5)
        np.clip(horizontal, 0.0, 1.0, out=horizontal)
        tiles = _texture_tiles(
            self._keys["fibres-x"],
            self._keys["fibres-y"],
            self._keys["mottle"],
            downsample,
            self.config.mpp,
        )
        if tiles is not None:
            base, delta = tiles
            n = base.shape[0]
            rows, cols = np.arange(box.y, box.y1) % n, np.arange(box.x, box.x1) % n
            tex = delta.take(rows, axis=0).take(cols, axis=1)
            tex *= horizontal
            tex += base.take(rows, axis=0).take(cols, axis=1)
        else:
            tex = np.zeros(shape, _F32)
        tex += _grid_lod(self._mottle, xs, ys, px)
        gain = _grid_lod(self._staining, xs, ys, px)
        gain *= _F32(0.25)
        gain += _F32(1.0)
        hem = tex * _F32(0.35 * STROMA_H)
        hem += _F32(STROMA_H)
        eos = tex * _F32(0.4 * STROMA_E)
        eos += _F32(STROMA_E)
        eos *= gain
        shapes = self._find(xs, ys, px)
        if shapes:
            cv = Canvas(shape, image=True)
            for p in shapes:
                draw_shape(p, cv, xs, ys, px)
            _mix(
                hem,
                eos,
                cv.nerve,
                NERVE_H,
                (_F32(0.8) + _F32(0.35) * cv.fibre) * _F32(NERVE_E) * gain,
            )
            _mix(hem, eos, cv.wall, WALL_H, _F32(WALL_E) * gain)
            epi_h = _F32(0.06) + _F32(0.26) * cv.tone
            epi_e = (_F32(0.20) + _F32(0.16) * cv.tone) * gain
            hem += cv.epi * (epi_h - hem)
            eos += cv.epi * (epi_e - eos)
            _mix(hem, eos, cv.lum, LUMEN_H, _F32(LUMEN_E))
            _mix(hem, eos, cv.red, RED_H, _F32(RED_E))
            _mix(hem, eos, cv.amyl, AMYLACEA_H, _F32(AMYLACEA_E))
            _mix(hem, eos, cv.basal, BASAL_H, _F32(BASAL_E))
            density = np.maximum(cv.nuc, _F32(NUCLEUS.STROMA_DENSITY))
            density *= _F32(1.0) - cv.lum
            scale = cv.scale
        else:
            density = np.full(shape, NUCLEUS.STROMA_DENSITY, _F32)
            scale = np.full(shape, NUCLEUS.STROMA_SCALE, _F32)
        if self._explicit_nuclei(downsample):
            nuc = stamp_nuclei(
                self._keys["nuclei"],
                (box.x, box.y),
                downsample,
                self.config.mpp,
                density,
                scale,
                horizontal,
            )
        else:
            coverage = math.pi * NUCLEUS.RADIUS**2 * 0.8 / NUCLEUS.CELL**2
            nuc = density * (scale * scale) * _F32(coverage)
        hem += nuc * (_F32(NUCLEUS_H) - hem)
        eos += nuc * (_F32(NUCLEUS_E) - eos)
        return hem, eos

    def _pixel_noise(self, downsample: int, box: Box) -> np.ndarray:
        tile = _noise_tile(self._keys["pixel-noise"], downsample)
        n = tile.shape[0]
        rows, cols = np.arange(box.y, box.y1) % n, np.arange(box.x, box.x1) % n
        return cast(
            np.ndarray, tile.take(rows, axis=0).take(cols, axis=1) * _F32(self.config.noise)
        )


def _mix(
    hem: np.ndarray, eos: np.ndarray, cover: np.ndarray, h: float, e: np.ndarray | np.float32
) -> None:
    """Blend towards stain amounts ``(h, e)`` by ``cover`` (in place)."""
    if not cover.any():
        return
    hem += cover * (_F32(h) - hem)
    eos += cover * (e - eos)


def _grid_lod(field: SmoothField, xs: np.ndarray, ys: np.ndarray, pixel_um: float) -> np.ndarray:
    """:meth:`SmoothField.grid_lod` with the fine branch from cached control values."""
    if pixel_um <= 2.0 * field.spacing:
        return smooth_grid(field, xs, ys)
    return field.grid_lod(xs, ys, pixel_um)
