"""Needle-biopsy cores: roughly parallel, gently curved ~1 mm bands on glass.

Cores run along x in *lanes* ``pitch`` µm apart. A lane's centreline is a shared slow bend
plus a small lane-specific wobble; its half-width varies slowly; a 2-D noise makes the edges
ragged; occasional gap cells break a core into fragments. Along each lane, x is cut into
cells of ``CELL_UM`` (boundaries warped by a smooth 2-D field): gaps and graded regions
(:mod:`._regions`) both live on these cells, so a gap never splits a region.

Every quantity is an element-wise function of position evaluated with the same float64
formulas for grids and points, so any window equals the same part of a larger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key, uniforms
from napari_sgnet.synthetic._noise import Octave, SmoothField
from napari_sgnet.synthetic.config import SynthConfig
from napari_sgnet.synthetic.v2._fields import Field1D, smooth_grid, smooth_points

__all__ = ["AA_MAX_UM", "CELL_UM", "HALF_WIDTH_UM", "CoreSample", "Cores", "Lane", "pair_table"]

#: Along-core cell length (µm): unit of gaps and graded regions.
CELL_UM = 500.0
#: Range of a core's mean half-width (µm): cores are 0.85-1.15 mm wide.
HALF_WIDTH_UM = (425.0, 575.0)
#: Amplitudes (µm) of the shared bend, the lane wobble, the ragged edge and the cell warp.
BEND_UM, WOBBLE_UM, RAGGED_UM, WARP_UM = 260.0, 45.0, 22.0, 90.0
#: Tissue stays this far from the slide border (µm).
BORDER_UM = 150.0
#: A lane is ignored this far (µm) beyond its tissue: positions there are glass whatever
#: lanes a window considers, and anti-aliasing (at most ``AA_MAX_UM`` wide) agrees too.
LANE_MARGIN_UM = 300.0
AA_MAX_UM = 100.0
GAP_PROBABILITY = 0.07
_GAP_SPAN = (0.2, 0.8)
_RAGGED = (Octave.iso(140.0, 0), Octave.iso(45.0, 1))
_WARP = (Octave.iso(900.0, 0), Octave.iso(350.0, 1))
_BEND = (Octave.iso(7000.0, 0), Octave.iso(2600.0, 1))
_WOBBLE = (Octave.iso(1800.0, 0), Octave.iso(700.0, 1))
_WIDTH = (Octave.iso(2200.0, 0),)
_ZERO = np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class Lane:
    """One lane: its index, base centre (µm) and mean half-width (µm)."""

    index: int
    centre: float
    half_width: float
    y_min: float
    y_max: float


@dataclass
class CoreSample:
    """Core geometry sampled at positions (arrays of one shape).

    ``sdf`` is a signed distance-like value in µm (negative on tissue), ``lane`` the index
    into :attr:`Cores.lanes` of the nearest lane (-1 far from every lane), ``across`` the
    offset from that lane's centreline (µm), ``cell`` the along-core cell, ``frac`` the
    position in it (0-1) and ``gap`` whether
    that cell is a gap cell.
    """

    sdf: np.ndarray
    lane: np.ndarray
    across: np.ndarray
    cell: np.ndarray
    frac: np.ndarray
    gap: np.ndarray

    @property
    def tissue(self) -> np.ndarray:
        """True on tissue."""
        return self.sdf < 0.0


def pair_table(lane: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat index of each (lane, cell) into a small table and the table's lanes and cells.

    Returns ``index`` (shape of the inputs), ``lanes`` ``(n, 1)`` and ``cells`` ``(1, m)``:
    ``table.ravel().take(index)`` looks a value of the table ``f(lanes, cells)`` up.
    """
    lane = np.maximum(lane, 0)
    if lane.size == 0:
        return lane, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
    l0, l1 = int(lane.min()), int(lane.max())
    k0, k1 = int(cell.min()), int(cell.max())
    span = k1 - k0 + 1
    index = (lane - l0) * span + (cell - k0)
    lanes = np.arange(l0, l1 + 1, dtype=np.int64)[:, None]
    cells = np.arange(k0, k1 + 1, dtype=np.int64)[None, :]
    return index, lanes, cells


class Cores:
    """The cores of one slide.

    Parameters
    ----------
    config : SynthConfig
        Slide description; ``tissue_fraction`` sets the lane pitch (``1 mm / fraction``,
        clamped to 1.5-6 mm).
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        seed = config.seed
        self.width_um = config.width * config.mpp
        self.height_um = int(config.rows) * config.mpp
        self.pitch = min(6000.0, max(1500.0, 1000.0 / config.tissue_fraction))
        tilt = float(uniforms(cell_hash(derive_key(seed, "v2-tilt"), _ZERO, _ZERO), 1)[0, 0])
        self.slope = math.tan(math.radians(6.0 * (tilt - 0.5)))
        self.bend = Field1D(derive_key(seed, "v2-bend"), _BEND, 100.0)
        self.ragged = SmoothField(derive_key(seed, "v2-ragged"), _RAGGED, 12.0)
        self.warp = SmoothField(derive_key(seed, "v2-warp"), _WARP, 40.0)
        self.gap_key = derive_key(seed, "v2-gap")
        self._lane_key = derive_key(seed, "v2-lane")
        self.lanes = self._make_lanes()
        self._lane_ids = np.array([la.index for la in self.lanes] + [0], dtype=np.int64)

    # ------------------------------------------------------------------ lanes
    def _wobble(self, j: int) -> Field1D:
        return Field1D(self._lane_key, _WOBBLE, 50.0, row=1.0e6 + 7919.0 * j)

    def _width(self, j: int) -> Field1D:
        return Field1D(self._lane_key, _WIDTH, 100.0, row=-1.0e6 - 7919.0 * j)

    def centreline(self, lane: Lane, x: np.ndarray) -> np.ndarray:
        """Centreline y (µm) of ``lane`` at ``x`` (µm)."""
        y = self.bend.at(x) * BEND_UM
        y += self._wobble(lane.index).at(x) * WOBBLE_UM
        y += x * self.slope
        y += lane.centre
        return y

    def half_width(self, lane: Lane, x: np.ndarray) -> np.ndarray:
        """Half-width (µm) of ``lane`` at ``x``."""
        return lane.half_width * (1.0 + 0.06 * self._width(lane.index).at(x))

    def _make_lanes(self) -> tuple[Lane, ...]:
        """Lanes that stay inside the slide over its whole width (decided once per slide)."""
        xs = np.arange(0.0, self.width_um + 50.0, 50.0)
        reach = HALF_WIDTH_UM[1] * 1.1 + RAGGED_UM * 1.5 + LANE_MARGIN_UM
        drift = float(np.abs(xs * self.slope).max()) + 1.6 * BEND_UM
        first = math.floor(-drift / self.pitch) - 1
        last = math.ceil((self.height_um + drift) / self.pitch) + 1
        # Lanes are centred on the slide (the drift of the tilt is centred too).
        offset = 0.5 * (self.height_um % self.pitch) - 0.5 * self.width_um * self.slope
        lanes = []
        for j in range(first, last + 1):
            u = uniforms(cell_hash(self._lane_key, np.array([j]), _ZERO), 2)[0]
            centre = offset + (j + 0.5 + 0.08 * (u[0] - 0.5)) * self.pitch
            half = HALF_WIDTH_UM[0] + (HALF_WIDTH_UM[1] - HALF_WIDTH_UM[0]) * u[1]
            lane = Lane(j, centre, half, 0.0, 0.0)
            y = self.centreline(lane, xs)
            lo, hi = float(y.min()) - reach, float(y.max()) + reach
            tissue_lo, tissue_hi = lo + LANE_MARGIN_UM, hi - LANE_MARGIN_UM
            if tissue_lo >= BORDER_UM and tissue_hi <= self.height_um - BORDER_UM:
                lanes.append(Lane(j, centre, half, lo, hi))
        return tuple(lanes)

    def lanes_near(self, y0: float, y1: float, xs: np.ndarray | None = None) -> list[int]:
        """Indices (into :attr:`lanes`) of lanes that may reach ``[y0, y1]`` (at ``xs``)."""
        near = [i for i, la in enumerate(self.lanes) if la.y_max >= y0 and la.y_min <= y1]
        if xs is None or not near:
            return near
        reach = HALF_WIDTH_UM[1] * 1.1 + RAGGED_UM * 1.5 + LANE_MARGIN_UM
        out = []
        for i in near:
            y = self.centreline(self.lanes[i], xs)
            if float(y.max()) + reach >= y0 and float(y.min()) - reach <= y1:
                out.append(i)
        return out

    # ------------------------------------------------------------------ sampling
    def _sample(
        self,
        x: np.ndarray,
        y: np.ndarray,
        ragged: np.ndarray,
        warp: np.ndarray,
        lanes: list[int],
        rows: list[slice] | None = None,
    ) -> CoreSample:
        """Core geometry at broadcast positions ``x``, ``y`` (µm) given the 2-D fields there.

        ``rows`` (grids only) restricts each lane to the rows it can reach: elsewhere the
        lane is more than ``LANE_MARGIN_UM`` away, which changes nothing but glass.
        """
        shape = np.broadcast_shapes(x.shape, y.shape, ragged.shape)
        best = np.full(shape, np.inf)
        lane = np.full(shape, -1, dtype=np.int64)
        across = np.zeros(shape)
        for n, i in enumerate(lanes):
            la = self.lanes[i]
            r = slice(None) if rows is None else rows[n]
            yy = y[r] if y.ndim == 2 else y
            t = yy - self.centreline(la, x)
            d = np.abs(t) - self.half_width(la, x)
            b = best[r]
            nearer = d < b
            np.copyto(b, d, where=nearer)
            np.copyto(lane[r], i, where=nearer)
            np.copyto(across[r], t, where=nearer)
        sdf = best + ragged * RAGGED_UM
        xw = x + warp * WARP_UM
        g = xw / CELL_UM
        cell = np.floor(g)
        frac = np.broadcast_to(g - cell, shape)
        cell_i = np.broadcast_to(cell.astype(np.int64), shape)
        gap = self._gap_table(lane, cell_i)
        if gap.any():
            inside_gap = np.minimum(frac - _GAP_SPAN[0], _GAP_SPAN[1] - frac) * CELL_UM
            sdf = np.where(gap, np.maximum(sdf, inside_gap), sdf)
        if rows is None:
            border = np.maximum(BORDER_UM - xw, xw - (self.width_um - BORDER_UM))
            sdf = np.maximum(sdf, border)
        else:
            # On a grid, only columns near the side edges can have the border above the
            # lowest possible tissue sdf (about -650 µm): skipping the others is exact.
            reach = BORDER_UM + 1.5 * WARP_UM + 800.0
            cols = np.flatnonzero((x[0] < reach) | (x[0] > self.width_um - reach))
            if cols.size:
                xc = xw[:, cols]
                border = np.maximum(BORDER_UM - xc, xc - (self.width_um - BORDER_UM))
                sdf[:, cols] = np.maximum(sdf[:, cols], border)
        return CoreSample(sdf, lane, across, cell_i, frac, gap)

    def _gap_table(self, lane: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Whether (lane, cell) is a gap cell, via one hash per distinct pair."""
        if lane.size == 0:
            return np.zeros(lane.shape, dtype=bool)
        lanes = np.arange(max(int(lane.min()), 0), max(int(lane.max()), 0) + 1)[:, None]
        cells = np.arange(int(cell.min()), int(cell.max()) + 1)[None, :]
        ids = self._lane_ids[lanes]
        gap = uniforms(cell_hash(self.gap_key, ids, cells), 1)[..., 0] < GAP_PROBABILITY
        gap &= ~self.border_cell(cells, 2)
        if not gap.any():
            return np.zeros(lane.shape, dtype=bool)
        index, _, _ = pair_table(lane, cell)
        return gap.ravel().take(index) & (lane >= 0)

    def border_cell(self, cells: np.ndarray, reach: int = 0) -> np.ndarray:
        """Whether cells are cut by the slide's left/right border (or within ``reach`` cells
        of it): no gap there and no region, so neither leaves a sliver of tissue."""
        lo = (cells - reach) * CELL_UM < BORDER_UM
        hi = (cells + 1 + reach) * CELL_UM > self.width_um - BORDER_UM
        return cast(np.ndarray, lo | hi)

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> CoreSample:
        """Core geometry on the grid ``ys x xs`` (µm), arrays ``(len(ys), len(xs))``."""
        shape = (ys.size, xs.size)
        out = CoreSample(
            np.full(shape, np.inf),
            np.full(shape, -1, dtype=np.int64),
            np.zeros(shape),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape),
            np.zeros(shape, dtype=bool),
        )
        lanes = self.lanes_near(float(ys[0]) - 1.0, float(ys[-1]) + 1.0, xs)
        if not lanes:
            return out
        reach = HALF_WIDTH_UM[1] * 1.1 + RAGGED_UM * 1.5 + LANE_MARGIN_UM
        bands = []
        for i in lanes:
            y = self.centreline(self.lanes[i], xs)
            r0, r1 = np.searchsorted(ys, (float(y.min()) - reach, float(y.max()) + reach))
            bands.append((int(r0), int(r1)))
        lo, hi = min(b[0] for b in bands), max(b[1] for b in bands)
        sub = ys[lo:hi]
        ragged = smooth_grid(self.ragged, xs, sub).astype(np.float64)
        warp = smooth_grid(self.warp, xs, sub).astype(np.float64)
        rows = [slice(b0 - lo, b1 - lo) for b0, b1 in bands]
        s = self._sample(xs[None, :], sub[:, None], ragged, warp, lanes, rows)
        for name in ("sdf", "lane", "across", "cell", "frac", "gap"):
            getattr(out, name)[lo:hi] = getattr(s, name)
        return out

    def points(self, px: np.ndarray, py: np.ndarray) -> CoreSample:
        """Core geometry at scattered points (µm); equal to :meth:`grid` there."""
        px = np.asarray(px, dtype=np.float64).ravel()
        py = np.asarray(py, dtype=np.float64).ravel()
        lanes = self.lanes_near(float(py.min()) - 1.0, float(py.max()) + 1.0) if py.size else []
        ragged = smooth_points(self.ragged, px, py).astype(np.float64)
        warp = smooth_points(self.warp, px, py).astype(np.float64)
        return self._sample(px, py, ragged, warp, lanes)
