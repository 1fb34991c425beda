"""Slide layout: tissue mask and graded-region partition, as pure functions of position.

Everything is evaluated in level-0 micrometres, so every pyramid level samples the same
continuous model. Two evaluators exist for each field: a grid one (blocks of pixels, fast)
and a scattered-point one (gland placement); they agree bit for bit (see ``_noise``).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key, uniforms
from napari_sgnet.synthetic._noise import Octave, SmoothField
from napari_sgnet.synthetic.config import SynthConfig

__all__ = ["Layout"]

#: Tissue blobs: a few mm across with ragged edges down to ~0.1 mm.
TISSUE_OCTAVES = (
    Octave.iso(4000.0, 0),
    Octave.iso(1600.0, 1),
    Octave.iso(640.0, 2),
    Octave.iso(250.0, 3),
    Octave.iso(100.0, 4),
)
TISSUE_CONTROL_UM = 20.0
WARP_CONTROL_UM = 40.0
_TISSUE_SAMPLES = 160
_EPS = 1e-5
_N_CLASSES = 5


class Layout:
    """Tissue field, region partition and their thresholds for one :class:`SynthConfig`.

    Parameters
    ----------
    config : SynthConfig
        The slide description.
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        seed = config.seed
        self.width_um = config.width * config.mpp
        self.height_um = int(config.rows) * config.mpp
        self.tissue = SmoothField(derive_key(seed, "tissue"), TISSUE_OCTAVES, TISSUE_CONTROL_UM)
        self.region_key = derive_key(seed, "region")
        self.edge_margin_um = min(1500.0, 0.08 * min(self.width_um, self.height_um))
        s = config.region_size_um
        self.region_size = s
        self.warp_amplitude = 0.3 * s
        warp = (Octave.iso(0.9 * s, 0), Octave.iso(0.3 * s, 1), Octave.iso(0.1 * s, 2))
        self.warps = tuple(
            SmoothField(derive_key(seed, "warp", axis), warp, min(WARP_CONTROL_UM, s / 40.0))
            for axis in "xy"
        )
        rng = np.random.default_rng(derive_key(seed, "class-permutation"))
        self.class_permutation = rng.permutation(_N_CLASSES)
        weights = np.asarray(config.class_weights, dtype=np.float64)
        self.class_cdf = np.cumsum(weights) / weights.sum()
        self.tissue_threshold = self._calibrate_threshold()

    # ------------------------------------------------------------------ tissue
    def _edge_penalty(self, coords: np.ndarray, extent: float) -> np.ndarray:
        distance = np.minimum(coords, extent - coords)
        ramp = np.clip(1.0 - distance / self.edge_margin_um, 0.0, None)
        return cast(np.ndarray, (1.5 * ramp * ramp).astype(np.float32))

    def tissue_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Tissue field on a grid (float32); tissue where it exceeds :attr:`tissue_threshold`."""
        field = self.tissue.grid(xs, ys)
        field -= self._edge_penalty(xs, self.width_um)[None, :]
        field -= self._edge_penalty(ys, self.height_um)[:, None]
        return field

    def tissue_points(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Tissue field at scattered points; equal to :meth:`tissue_grid` there."""
        field = self.tissue.points(px, py)
        field -= self._edge_penalty(np.asarray(px, dtype=np.float64).ravel(), self.width_um)
        field -= self._edge_penalty(np.asarray(py, dtype=np.float64).ravel(), self.height_um)
        return field

    def tissue_range(self, xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
        """Bounds of the tissue field over a grid, from control values only (cheap)."""
        f = self.tissue.controls(xs, ys)
        px, py = self._edge_penalty(xs, self.width_um), self._edge_penalty(ys, self.height_um)
        lo = float(f.min()) - float(px.max()) - float(py.max())
        hi = float(f.max()) - float(px.min()) - float(py.min())
        return lo - _EPS, hi + _EPS

    def _calibrate_threshold(self) -> float:
        """Threshold giving ``tissue_fraction`` tissue, from a coarse sampling of the slide."""
        if self.config.tissue_fraction >= 0.999:
            return -np.inf
        n = _TISSUE_SAMPLES
        xs = (np.arange(n) + 0.5) * (self.width_um / n)
        ys = (np.arange(n) + 0.5) * (self.height_um / n)
        field = self.tissue_grid(xs, ys)
        return float(np.quantile(field, 1.0 - self.config.tissue_fraction))

    # ------------------------------------------------------------------ regions
    def _sites(self, ix: np.ndarray, iy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Site position (µm) and class label (1..5) of region cells ``(ix, iy)`` (broadcast)."""
        u = uniforms(cell_hash(self.region_key, ix, iy), 3)
        s = self.region_size
        sx = (ix + 0.1 + 0.8 * u[..., 0]) * s
        sy = (iy + 0.1 + 0.8 * u[..., 1]) * s
        # Stratified classes: cells along a row/diagonal cycle through all bins, so that
        # neighbouring regions differ and even a small slide shows every class.
        stratum = self.class_permutation[np.mod(ix + 2 * iy, _N_CLASSES)]
        v = (stratum + u[..., 2]) / _N_CLASSES
        label = np.searchsorted(self.class_cdf, v, side="right").clip(0, _N_CLASSES - 1) + 1
        return sx, sy, label.astype(np.uint8)

    def _candidates(
        self, qx0: float, qx1: float, qy0: float, qy1: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sites (row-major cell order) that may be nearest to some point of a rectangle."""
        s = self.region_size
        ix = np.arange(int(np.floor(qx0 / s)) - 2, int(np.floor(qx1 / s)) + 3)
        iy = np.arange(int(np.floor(qy0 / s)) - 2, int(np.floor(qy1 / s)) + 3)
        gx, gy = np.meshgrid(ix, iy)
        sx, sy, label = (a.ravel() for a in self._sites(gx, gy))
        dx_near = np.maximum(np.maximum(qx0 - sx, sx - qx1), 0.0)
        dy_near = np.maximum(np.maximum(qy0 - sy, sy - qy1), 0.0)
        dx_far = np.maximum(np.abs(sx - qx0), np.abs(sx - qx1))
        dy_far = np.maximum(np.abs(sy - qy0), np.abs(sy - qy1))
        keep = dx_near**2 + dy_near**2 <= np.min(dx_far**2 + dy_far**2) + 1.0
        return sx[keep], sy[keep], label[keep]

    def region_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Region class label (1..5) on a grid, ``uint8 (len(ys), len(xs))``."""
        a = self.warp_amplitude
        wx, wy = (w.controls(xs, ys) for w in self.warps)
        sx, sy, label = self._candidates(
            xs[0] + a * float(wx.min()) - 1.0,
            xs[-1] + a * float(wx.max()) + 1.0,
            ys[0] + a * float(wy.min()) - 1.0,
            ys[-1] + a * float(wy.max()) + 1.0,
        )
        if np.unique(label).size == 1:
            return np.full((ys.size, xs.size), label[0], dtype=np.uint8)
        qx = self.warps[0].grid(xs, ys)
        qx *= np.float32(a)
        qx += xs.astype(np.float32)[None, :]
        qy = self.warps[1].grid(xs, ys)
        qy *= np.float32(a)
        qy += ys.astype(np.float32)[:, None]
        best = np.full(qx.shape, np.inf, dtype=np.float32)
        out = np.zeros(qx.shape, dtype=np.uint8)
        for k in range(label.size):
            d = np.square(qx - np.float32(sx[k]))
            d += np.square(qy - np.float32(sy[k]))
            nearer = d < best
            np.copyto(best, d, where=nearer)
            out[nearer] = label[k]
        return out

    def region_points(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Region class label (1..5) at scattered points; equal to :meth:`region_grid` there."""
        px = np.asarray(px, dtype=np.float64).ravel()
        py = np.asarray(py, dtype=np.float64).ravel()
        a = np.float32(self.warp_amplitude)
        qx = self.warps[0].points(px, py) * a + px.astype(np.float32)
        qy = self.warps[1].points(px, py) * a + py.astype(np.float32)
        s = self.region_size
        cx = np.floor(qx / s).astype(np.int64)
        cy = np.floor(qy / s).astype(np.int64)
        offsets = np.arange(-2, 3)
        oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
        sx, sy, label = self._sites(cx[:, None] + ox.ravel(), cy[:, None] + oy.ravel())
        d = np.square(qx[:, None] - sx.astype(np.float32))
        d += np.square(qy[:, None] - sy.astype(np.float32))
        return cast(np.ndarray, label[np.arange(px.size), np.argmin(d, axis=1)])
