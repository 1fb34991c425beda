"""Rasterise any window of any pyramid level: labels, H&E image, ground-truth gland mask.

Level pixel ``j`` of the level with downsample ``d`` samples level-0 pixel ``j * d + d // 2``
(at its centre). Labels are therefore an exact nearest-neighbour subsampling of level 0,
and the image is rendered at the level's own resolution (details finer than two pixels
replaced by their mean), never by reading level 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Generic, TypeVar, cast

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.synthetic._glands import GlandIndex, Primitive
from napari_sgnet.synthetic._hash import derive_key
from napari_sgnet.synthetic._layout import Layout
from napari_sgnet.synthetic._noise import Octave, SmoothField, periodic_tile
from napari_sgnet.synthetic._raster import NUCLEUS, GlandCanvas, draw_primitive, stamp_nuclei
from napari_sgnet.synthetic._stain import stain_for_shift
from napari_sgnet.synthetic.config import SynthConfig

__all__ = ["Renderer", "RendererBase", "level_coords", "mix_epithelium"]

_F32 = np.float32
_P = TypeVar("_P", bound=Primitive)
_C = TypeVar("_C", bound=GlandCanvas)
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


class RendererBase(Generic[_P, _C]):
    """What the v1 and v2 renderers share: the stroma texture and staining fields, the
    nuclei, the pixel noise and blur, and the gland mask; a version supplies its shapes
    (:meth:`_find`, :meth:`_new_canvas`, :meth:`_draw`) and :meth:`_image_float`.

    Parameters
    ----------
    config : SynthConfig
        The slide description.
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.stain = stain_for_shift(config.stain_shift)
        seed = config.seed
        self._keys = {
            name: derive_key(seed, name)
            for name in ("nuclei", "fibres-x", "fibres-y", "mottle", "pixel-noise")
        }
        self._orientation = SmoothField(derive_key(seed, "orientation"), _ORIENTATION, 25.0)
        self._staining = SmoothField(derive_key(seed, "staining"), _STAINING, 100.0)
        self._mottle = SmoothField(derive_key(seed, "mottle-coarse"), _MOTTLE_COARSE, 8.0)

    # ------------------------------------------------------- version specifics
    def _find(self, xs: np.ndarray, ys: np.ndarray, px: float) -> Sequence[_P]:
        """The shapes that may touch the grid ``ys x xs`` (pixel size ``px``)."""
        raise NotImplementedError

    def _new_canvas(self, shape: tuple[int, int], image: bool) -> _C:
        raise NotImplementedError

    def _draw(self, p: _P, cv: _C, xs: np.ndarray, ys: np.ndarray, px: float) -> None:
        raise NotImplementedError

    def _image_float(self, downsample: int, box: Box) -> np.ndarray:
        """Float RGB of ``box`` before the noise and the blur."""
        raise NotImplementedError

    def _mix_glands(self, hem: np.ndarray, eos: np.ndarray, cv: _C, gain: np.ndarray) -> None:
        """Blend the stains towards the compartments drawn in ``cv`` (in place)."""
        raise NotImplementedError

    def _field(self, field: SmoothField, xs: np.ndarray, ys: np.ndarray, px: float) -> np.ndarray:
        """A smooth field on the grid ``ys x xs`` at pixel size ``px`` (image appearance)."""
        return field.grid_lod(xs, ys, px)

    # ----------------------------------------------------------------- helpers
    def _coords(self, downsample: int, box: Box) -> tuple[np.ndarray, np.ndarray]:
        mpp = self.config.mpp
        xs = level_coords(box.x, box.w, downsample, mpp)
        return xs, level_coords(box.y, box.h, downsample, mpp)

    def _explicit_nuclei(self, downsample: int) -> bool:
        """Nuclei are drawn one by one while a nucleus cell spans at least 3 pixels."""
        return downsample * self.config.mpp <= NUCLEUS.CELL / 3.0

    def _nucleus_halo(self, downsample: int) -> int:
        """Level pixels a nucleus centred outside a window can reach into it."""
        if not self._explicit_nuclei(downsample):
            return 0
        return math.ceil(NUCLEUS.REACH / (downsample * self.config.mpp)) + 2

    def _canvas(
        self, shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, px: float, image: bool
    ) -> _C | None:
        """The shapes near the grid drawn into a new canvas; ``None`` when there are none."""
        found = self._find(xs, ys, px)
        if not found:
            return None
        cv = self._new_canvas(shape, image)
        for p in found:
            self._draw(p, cv, xs, ys, px)
        return cv

    # ----------------------------------------------------------------- glands
    def gland_mask(self, downsample: int, box: Box) -> np.ndarray:
        """Ground truth: True where a gland (epithelium, lumen, tumour cells) lies."""
        if box.is_empty:
            return np.zeros((box.h, box.w), dtype=bool)
        xs, ys = self._coords(downsample, box)
        cv = self._canvas((box.h, box.w), xs, ys, downsample * self.config.mpp, image=False)
        return np.zeros((box.h, box.w), dtype=bool) if cv is None else cv.mask

    # ----------------------------------------------------------------- image
    def image(self, downsample: int, box: Box) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)``."""
        cfg = self.config
        if box.is_empty:
            return np.zeros((box.h, box.w, 3), dtype=np.uint8)
        sigma = cfg.blur / downsample
        blur_halo = math.ceil(3.5 * sigma) if sigma >= 0.25 else 0
        halo = blur_halo + self._nucleus_halo(downsample)
        ext = Box(box.x - halo, box.y - halo, box.w + 2 * halo, box.h + 2 * halo)
        rgb = self._image_float(downsample, ext)
        if cfg.noise > 0:
            rgb += self._pixel_noise(downsample, ext)
        if blur_halo:
            from scipy.ndimage import gaussian_filter

            rgb = gaussian_filter(rgb, sigma=(sigma, sigma, 0.0), mode="nearest", truncate=3.5)
        rgb = rgb[halo : halo + box.h, halo : halo + box.w]
        np.rint(rgb, out=rgb)
        np.clip(rgb, 0.0, 255.0, out=rgb)
        return rgb.astype(np.uint8)

    def _stroma(
        self, downsample: int, box: Box, xs: np.ndarray, ys: np.ndarray, px: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stroma stain amounts: ``(horizontal, gain, hem, eos)`` (fibre weight along x,
        staining gain, haematoxylin, eosin)."""
        horizontal = self._field(self._orientation, xs, ys, px)
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
            tex = np.zeros((box.h, box.w), _F32)
        tex += self._field(self._mottle, xs, ys, px)
        # Uneven staining across the slide (+-12 %).
        gain = self._field(self._staining, xs, ys, px)
        gain *= _F32(0.25)
        gain += _F32(1.0)
        hem = tex * _F32(0.35 * STROMA_H)
        hem += _F32(STROMA_H)
        eos = tex * _F32(0.4 * STROMA_E)
        eos += _F32(STROMA_E)
        eos *= gain
        return horizontal, gain, hem, eos

    def _stains(
        self, downsample: int, box: Box, xs: np.ndarray, ys: np.ndarray, px: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Haematoxylin and eosin amounts before the tissue mask."""
        horizontal, gain, hem, eos = self._stroma(downsample, box, xs, ys, px)
        cv = self._canvas((box.h, box.w), xs, ys, px, image=True)
        if cv is not None:
            self._mix_glands(hem, eos, cv, gain)
        self._add_nuclei(downsample, box, hem, eos, horizontal, cv)
        return hem, eos

    def _add_nuclei(
        self,
        downsample: int,
        box: Box,
        hem: np.ndarray,
        eos: np.ndarray,
        horizontal: np.ndarray,
        cv: GlandCanvas | None,
    ) -> None:
        """Blend the nuclei (drawn, or their mean coverage on coarse levels) into the stains."""
        shape = (box.h, box.w)
        if cv is not None:
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

    def _pixel_noise(self, downsample: int, box: Box) -> np.ndarray:
        tile = _noise_tile(self._keys["pixel-noise"], downsample)
        n = tile.shape[0]
        rows, cols = np.arange(box.y, box.y1) % n, np.arange(box.x, box.x1) % n
        return cast(
            np.ndarray, tile.take(rows, axis=0).take(cols, axis=1) * _F32(self.config.noise)
        )


class Renderer(RendererBase[Primitive, GlandCanvas]):
    """Renders windows of a synthetic slide; a pure function of the config and the window.

    Parameters
    ----------
    config : SynthConfig
        The slide description.
    """

    def __init__(self, config: SynthConfig) -> None:
        super().__init__(config)
        self.layout = Layout(config)
        self.glands = GlandIndex(self.layout)

    def _find(self, xs: np.ndarray, ys: np.ndarray, px: float) -> list[Primitive]:
        pad = 2.0 * px
        return self.glands.find(xs[0] - pad, ys[0] - pad, xs[-1] + pad, ys[-1] + pad)

    def _new_canvas(self, shape: tuple[int, int], image: bool) -> GlandCanvas:
        return GlandCanvas(shape, image)

    def _draw(
        self, p: Primitive, cv: GlandCanvas, xs: np.ndarray, ys: np.ndarray, px: float
    ) -> None:
        draw_primitive(p, cv, xs, ys, px)

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

    # ----------------------------------------------------------------- image
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
        return rgb

    def _mix_glands(
        self, hem: np.ndarray, eos: np.ndarray, cv: GlandCanvas, gain: np.ndarray
    ) -> None:
        mix_epithelium(hem, eos, cv, gain)
        hem += cv.lum * (_F32(LUMEN_H) - hem)
        eos += cv.lum * (_F32(LUMEN_E) - eos)
        hem += cv.amyl * (_F32(AMYLACEA_H) - hem)
        eos += cv.amyl * (_F32(AMYLACEA_E) - eos)


def mix_epithelium(hem: np.ndarray, eos: np.ndarray, cv: GlandCanvas, gain: np.ndarray) -> None:
    """Blend the stains towards epithelium (cytoplasm darker with ``cv.tone``; eosin scaled
    by the staining ``gain``) by its coverage ``cv.epi`` (in place)."""
    epi_h = _F32(0.06) + _F32(0.26) * cv.tone
    epi_e = (_F32(0.20) + _F32(0.16) * cv.tone) * gain
    hem += cv.epi * (epi_h - hem)
    eos += cv.epi * (epi_e - eos)


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
