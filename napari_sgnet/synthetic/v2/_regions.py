"""Outlined regions: runs of along-core cells sharing a class, as a pathologist draws them.

Each lane's cells (:data:`~._cores.CELL_UM` long, warped boundaries) take the class of the
nearest of a jittered row of *nodes* every ``NODE_UM``; so consecutive cells form regions of
one to several cells (0.3 to a few mm), a class change between neighbouring cells is a
benign/tumour (or tumour/tumour) interface inside one core, and stroma cells and stroma nodes
leave unlabelled stroma between groups. Across the core a region covers an interval of the
offset from the centreline (often the whole width, sometimes one side only).
"""

from __future__ import annotations

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key, uniforms
from napari_sgnet.synthetic._noise import Octave, SmoothField
from napari_sgnet.synthetic.config import SynthConfig
from napari_sgnet.synthetic.v2._cores import CELL_UM, Cores, CoreSample, pair_table
from napari_sgnet.synthetic.v2._fields import smooth_grid, smooth_points

__all__ = [
    "BENIGN",
    "CROWDED",
    "GLASS",
    "MIN_REGION_MM2",
    "NODE_UM",
    "STROMA",
    "RegionMap",
    "code_labels",
]

#: Region codes: the label ids, plus ``CROWDED`` (benign glands at tumour density, label 2).
GLASS, STROMA, BENIGN, CROWDED = 0, 1, 2, 6
NODE_UM = 1500.0
#: Probability that a cell is left as unlabelled stroma whatever its node says.
STROMA_CELL_PROBABILITY = 0.12
CROWDED_PROBABILITY = 0.3
#: Across the core, a region covers ``(-a, b) x mean half-width`` with a, b in this range.
_ACROSS = (0.55, 1.3)
#: Documented lower bound of a labelled region's area (mm²), away from the slide border.
MIN_REGION_MM2 = 0.05
#: Corner radius of outlines at run ends, and amplitude of the outline bulges (µm).
CORNER_UM, BULGE_UM = 220.0, 70.0
_BULGE = (Octave.iso(700.0, 0), Octave.iso(260.0, 1))
_LABELS = np.array([0, 1, 2, 3, 4, 5, 2], dtype=np.uint8)


def code_labels(code: np.ndarray) -> np.ndarray:
    """Label ids (uint8) of region codes."""
    return np.asarray(_LABELS.take(code), dtype=np.uint8)


class RegionMap:
    """Region codes of one slide (0 glass, 1 stroma, 2-5 classes, 6 crowded benign).

    Parameters
    ----------
    config : SynthConfig
        Slide description; ``class_weights`` weigh the node classes.
    cores : Cores
        The slide's cores.
    """

    def __init__(self, config: SynthConfig, cores: Cores) -> None:
        self.cores = cores
        self._cell_key = derive_key(config.seed, "v2-region-cell")
        self._node_key = derive_key(config.seed, "v2-region-node")
        weights = np.asarray(config.class_weights, dtype=np.float64)
        self._cdf = np.cumsum(weights) / weights.sum()
        self._ids = np.array([la.index for la in cores.lanes] + [0], dtype=np.int64)
        self._half = np.array([la.half_width for la in cores.lanes] + [1.0])
        self.bulge = SmoothField(derive_key(config.seed, "v2-bulge"), _BULGE, 40.0)

    def _table(
        self, lanes: np.ndarray, cells: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Code, node, lower and upper across-limit (µm) of (lane, cell) pairs (broadcast)."""
        ids = self._ids[lanes]
        u = uniforms(cell_hash(self._cell_key, ids, cells), 2)
        x = (cells + 0.5) * CELL_UM + (u[..., 0] - 0.5) * 0.9 * NODE_UM
        node = np.floor(x / NODE_UM + 0.5).astype(np.int64)
        v = uniforms(cell_hash(self._node_key, ids, node), 4)
        cls = np.searchsorted(self._cdf, v[..., 0], side="right").clip(0, 4) + 1
        code = np.where((cls == BENIGN) & (v[..., 1] < CROWDED_PROBABILITY), CROWDED, cls)
        code = np.where(u[..., 1] < STROMA_CELL_PROBABILITY, STROMA, code)
        code = np.where(self.cores.border_cell(cells), STROMA, code)
        half = self._half[lanes]
        lo = -half * (_ACROSS[0] + (_ACROSS[1] - _ACROSS[0]) * v[..., 2])
        hi = half * (_ACROSS[0] + (_ACROSS[1] - _ACROSS[0]) * v[..., 3])
        return code.astype(np.uint8), node, lo, hi

    def codes(self, s: CoreSample, bulge: np.ndarray) -> np.ndarray:
        """Region code (uint8) at every sampled position (``bulge``: the outline noise)."""
        out = np.zeros(s.sdf.shape, dtype=np.uint8)
        tissue = s.tissue
        if not tissue.any():
            return out
        lane, cell = s.lane[tissue], s.cell[tissue]
        index, lanes, cells = pair_table(lane, cell - 1)
        # The table spans one cell either side: run ends round the outline's corners.
        cells = np.concatenate([cells, cells[:, -1:] + 1, cells[:, -1:] + 2], axis=1)
        span = cells.shape[1]
        index = index + (index // (span - 2)) * 2 + 1
        code, node, lo, hi = self._table(lanes, cells)
        fc, fn, flo, fhi = (a.ravel() for a in (code, node, lo, hi))
        prev_end = (fc.take(index - 1) != fc.take(index)) | (fn.take(index - 1) != fn.take(index))
        next_end = (fc.take(index + 1) != fc.take(index)) | (fn.take(index + 1) != fn.take(index))
        frac = s.frac[tissue]
        e = np.full(frac.shape, np.inf)
        e = np.where(prev_end, frac * CELL_UM, e)
        e = np.minimum(e, np.where(next_end, (1.0 - frac) * CELL_UM, np.inf))
        r = CORNER_UM
        inset = r - np.sqrt(np.maximum(r * r - np.square(r - np.minimum(e, r)), 0.0))
        b = bulge[tissue] * BULGE_UM
        across = s.across[tissue]
        inside = (across > flo.take(index) + inset + b) & (across < fhi.take(index) - inset + b)
        inside &= ~s.gap[tissue]
        out[tissue] = np.where(inside, fc.take(index), np.uint8(STROMA))
        return out

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, CoreSample]:
        """Region codes on the grid ``ys x xs`` (µm) and the core sample they came from."""
        s = self.cores.grid(xs, ys)
        if not s.tissue.any():
            return np.zeros(s.sdf.shape, np.uint8), s
        return self.codes(s, smooth_grid(self.bulge, xs, ys).astype(np.float64)), s

    def points(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Region codes at scattered points (µm); equal to :meth:`grid` there."""
        px = np.asarray(px, dtype=np.float64).ravel()
        py = np.asarray(py, dtype=np.float64).ravel()
        bulge = smooth_points(self.bulge, px, py).astype(np.float64)
        return self.codes(self.cores.points(px, py), bulge)
