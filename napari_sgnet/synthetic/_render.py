"""Rasterise any window of any pyramid level: labels, H&E image, ground-truth gland mask.

Level pixel ``j`` of the level with downsample ``d`` samples level-0 pixel ``j * d + d // 2``
(at its centre). Labels are therefore an exact nearest-neighbour subsampling of level 0,
and the image is rendered at the level's own resolution (details finer than two pixels
replaced by their mean), never by reading level 0.
"""

from __future__ import annotations

import functools
import math
from typing import cast

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.synthetic._glands import GlandIndex, Primitive
from napari_sgnet.synthetic._hash import derive_key
from napari_sgnet.synthetic._layout import Layout
from napari_sgnet.synthetic._noise import Octave, SmoothField, periodic_tile
from napari_sgnet.synthetic._raster import NUCLEUS, GlandCanvas, draw_primitive, stamp_nuclei
from napari_sgnet.synthetic._stain import stain_for_shift
from napari_sgnet.synthetic.config import SynthConfig

__all__ = ["Renderer", "level_coords"]

_F32 = np.float32
#: Stain amounts (optical density) per compartment.
STROMA_H, STROMA_E = 0.09, 0.50
LUMEN_H, LUMEN_E = 0.01, 0.03
NUCLEUS_H, NUCLEUS_E = 1.15, 0.12
AMYLACEA_H, AMYLACEA_E = 0.25, 0.95
#: Stroma texture: fibres along x and along y mixed by a smooth field, plus mottling:
#: fine octaves come from tiles periodic over 1536 level-0 px (cheap at every level), the
#: coarse mottling from a non-periodic field (no visible repetition when zoomed out).
_TILE_PERIOD = 1536
_FIBRES_X = (Octave(40.0, 8.0, 0), Octave(16.0, 4.0, 1), Octave(7.0, 2.0, 2))
_FIBRES_Y = (Octave(8.0, 40.0, 0), Octave(4.0, 16.0, 1), Octave(2.0, 7.0, 2))
_MOTTLE = (Octave.iso(14.0, 0), Octave.iso(5.0, 1))
_MOTTLE_COARSE = (Octave.iso(90.0, 0), Octave.iso(35.0, 1))
_ORIENTATION = (Octave.iso(300.0, 0), Octave.iso(100.0, 1))
_STAINING = (Octave.iso(1500.0, 0), Octave.iso(400.0, 1))


def level_coords(start: int, n: int, downsample: int, mpp: float) -> np.ndarray:
    """Level-0 µm positions sampled by level pixels ``start .. start + n - 1``."""
    idx = np.arange(start, start + n, dtype=np.float64) * downsample
    return (idx + (downsample // 2 + 0.5)) * mpp


class Renderer:
    """Renders windows of a synthetic slide; a pure function of the config and the window.

    Parameters
    ----------
    config : SynthConfig
        The slide description.
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.layout = Layout(config)
        self.glands = GlandIndex(self.layout)
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

    def _glands(self, xs: np.ndarray, ys: np.ndarray, px: float) -> list[Primitive]:
        pad = 2.0 * px
        return self.glands.find(xs[0] - pad, ys[0] - pad, xs[-1] + pad, ys[-1] + pad)

    def _explicit_nuclei(self, downsample: int) -> bool:
        """Nuclei are drawn one by one while a nucleus cell spans at least 3 pixels."""
        return downsample * self.config.mpp <= NUCLEUS.CELL / 3.0

    # ----------------------------------------------------------------- labels
    def labels(self, downsample: int, box: Box) -> np.ndarray:
        """Label ids (uint8 ``(h, w)``): glass and stroma regions 1, graded regions 2..5."""
        if box.is_empty:
            return np.ones((box.h, box.w), dtype=np.uint8)
        xs, ys = self._coords(downsample, box)
        layout = self.layout
        lo, hi = layout.tissue_range(xs, ys)
        if hi <= layout.tissue_threshold:
            return np.ones((box.h, box.w), dtype=np.uint8)
        region = layout.region_grid(xs, ys)
        if lo > layout.tissue_threshold:
            return region
        tissue = layout.tissue_grid(xs, ys) > layout.tissue_threshold
        return np.where(tissue, region, np.uint8(1))

    def tissue(self, downsample: int, box: Box) -> np.ndarray:
        """True on tissue (bool ``(h, w)``); v1 labels say 1 on glass and on stroma alike."""
        if box.is_empty:
            return np.zeros((box.h, box.w), dtype=bool)
        xs, ys = self._coords(downsample, box)
        layout = self.layout
        lo, hi = layout.tissue_range(xs, ys)
        if hi <= layout.tissue_threshold:
            return np.zeros((box.h, box.w), dtype=bool)
        if lo > layout.tissue_threshold:
            return np.ones((box.h, box.w), dtype=bool)
        return cast(np.ndarray, layout.tissue_grid(xs, ys) > layout.tissue_threshold)

    def gland_mask(self, downsample: int, box: Box) -> np.ndarray:
        """Ground truth: True where a gland (epithelium, lumen, tumour cells) lies."""
        cv = GlandCanvas((box.h, box.w), image=False)
        if box.is_empty:
            return cv.mask
        xs, ys = self._coords(downsample, box)
        px = downsample * self.config.mpp
        for p in self._glands(xs, ys, px):
            draw_primitive(p, cv, xs, ys, px)
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
        cfg, layout = self.config, self.layout
        px = downsample * cfg.mpp
        xs, ys = self._coords(downsample, box)
        rgb = np.empty((box.h, box.w, 3), dtype=_F32)
        width = 4e-4 * max(px, 1.0)
        lo, hi = layout.tissue_range(xs, ys)
        if hi + 0.5 * width <= layout.tissue_threshold:
            rgb[...] = np.array([255.0 * math.exp(-g) for g in self.stain.glass], dtype=_F32)
        else:
            hem, eos = self._stains(downsample, box, xs, ys, px)
            if lo - 0.5 * width <= layout.tissue_threshold:
                alpha = layout.tissue_grid(xs, ys)
                alpha -= _F32(layout.tissue_threshold)
                alpha *= _F32(1.0 / width)
                alpha += _F32(0.5)
                np.clip(alpha, 0.0, 1.0, out=alpha)
                hem *= alpha
                eos *= alpha
            self.stain.to_rgb(hem, eos, rgb)
        if cfg.noise > 0:
            rgb += self._pixel_noise(downsample, box)
        return rgb

    def _stains(
        self, downsample: int, box: Box, xs: np.ndarray, ys: np.ndarray, px: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Haematoxylin and eosin amounts before the tissue mask."""
        shape = (box.h, box.w)
        horizontal = self._orientation.grid_lod(xs, ys, px)
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
        tex += self._mottle.grid_lod(xs, ys, px)
        # Uneven staining across the slide (+-12 %).
        gain = self._staining.grid_lod(xs, ys, px)
        gain *= _F32(0.25)
        gain += _F32(1.0)
        hem = tex * _F32(0.35 * STROMA_H)
        hem += _F32(STROMA_H)
        eos = tex * _F32(0.4 * STROMA_E)
        eos += _F32(STROMA_E)
        eos *= gain
        glands = self._glands(xs, ys, px)
        if glands:
            cv = GlandCanvas(shape, image=True)
            for p in glands:
                draw_primitive(p, cv, xs, ys, px)
            epi_h = _F32(0.06) + _F32(0.26) * cv.tone
            epi_e = (_F32(0.20) + _F32(0.16) * cv.tone) * gain
            hem += cv.epi * (epi_h - hem)
            eos += cv.epi * (epi_e - eos)
            hem += cv.lum * (_F32(LUMEN_H) - hem)
            eos += cv.lum * (_F32(LUMEN_E) - eos)
            hem += cv.amyl * (_F32(AMYLACEA_H) - hem)
            eos += cv.amyl * (_F32(AMYLACEA_E) - eos)
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


@functools.lru_cache(maxsize=8)
def _texture_tiles(
    key_x: int, key_y: int, key_mottle: int, downsample: int, mpp: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Tileable stroma textures of a level: ``base`` (mottling + y fibres) and ``delta``
    (x fibres - y fibres), the texture being ``base + horizontal * delta``; ``None`` on
    levels too coarse for any of their octaves."""
    if downsample > _TILE_PERIOD // 2:
        return None
    fx = periodic_tile(key_x, _TILE_PERIOD, downsample, mpp, _FIBRES_X)
    fy = periodic_tile(key_y, _TILE_PERIOD, downsample, mpp, _FIBRES_Y)
    base = _F32(0.6) * periodic_tile(key_mottle, _TILE_PERIOD, downsample, mpp, _MOTTLE) + fy
    delta = fx - fy
    if not (base.any() or delta.any()):
        return None
    base.setflags(write=False)
    delta.setflags(write=False)
    return base, delta


@functools.lru_cache(maxsize=32)
def _noise_tile(key: int, downsample: int) -> np.ndarray:
    """A fixed 257 x 257 x 3 standard-normal tile per level (period prime to chunk sizes)."""
    rng = np.random.Generator(np.random.PCG64(derive_key(key, downsample)))
    tile = rng.standard_normal((257, 257, 3), dtype=np.float32)
    tile.setflags(write=False)
    return tile
