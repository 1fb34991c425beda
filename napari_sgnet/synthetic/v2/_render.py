"""Rasterise any window of any level of a v2 slide: labels, tissue, H&E image, gland mask.

Sampling follows v1 (:mod:`napari_sgnet.synthetic._render`): level pixel ``j`` of downsample
``d`` samples level-0 pixel ``j * d + d // 2``, so labels and tissue are an exact
nearest-neighbour subsampling of level 0, and the image is rendered at the level's own
resolution with the v1 stain, texture, nuclei, noise and blur pipeline.
"""

from __future__ import annotations

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.synthetic._noise import SmoothField
from napari_sgnet.synthetic._render import (
    AMYLACEA_E,
    AMYLACEA_H,
    LUMEN_E,
    LUMEN_H,
    RendererBase,
    mix_epithelium,
)
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


class RendererV2(RendererBase[Shape, Canvas]):
    """Renders windows of a v2 synthetic slide; a pure function of the config and the window.

    Parameters
    ----------
    config : SynthConfig
        The slide description (``version == 2``).
    """

    def __init__(self, config: SynthConfig) -> None:
        super().__init__(config)
        self.cores = Cores(config)
        self.regions = RegionMap(config, self.cores)
        self.shapes = ShapeIndex(self.regions, config.seed, config.gland_spacing)

    def _find(self, xs: np.ndarray, ys: np.ndarray, px: float) -> list[Shape]:
        pad = 2.0 * px
        return self.shapes.find(xs[0] - pad, ys[0] - pad, xs[-1] + pad, ys[-1] + pad)

    def _new_canvas(self, shape: tuple[int, int], image: bool) -> Canvas:
        return Canvas(shape, image)

    def _draw(self, p: Shape, cv: Canvas, xs: np.ndarray, ys: np.ndarray, px: float) -> None:
        draw_shape(p, cv, xs, ys, px)

    def _field(self, field: SmoothField, xs: np.ndarray, ys: np.ndarray, px: float) -> np.ndarray:
        return _grid_lod(field, xs, ys, px)

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

    # ----------------------------------------------------------------- image
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
            m = self._nucleus_halo(downsample)
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
        return rgb

    def _mix_glands(self, hem: np.ndarray, eos: np.ndarray, cv: Canvas, gain: np.ndarray) -> None:
        _mix(
            hem,
            eos,
            cv.nerve,
            NERVE_H,
            (_F32(0.8) + _F32(0.35) * cv.fibre) * _F32(NERVE_E) * gain,
        )
        _mix(hem, eos, cv.wall, WALL_H, _F32(WALL_E) * gain)
        mix_epithelium(hem, eos, cv, gain)
        _mix(hem, eos, cv.lum, LUMEN_H, _F32(LUMEN_E))
        _mix(hem, eos, cv.red, RED_H, _F32(RED_E))
        _mix(hem, eos, cv.amyl, AMYLACEA_H, _F32(AMYLACEA_E))
        _mix(hem, eos, cv.basal, BASAL_H, _F32(BASAL_E))


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
