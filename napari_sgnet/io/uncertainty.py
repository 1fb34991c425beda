"""Review order: the next region a pathologist should look at (lowest confidence first).

The store's level 0 is cut into a grid of ``region_size`` squares. A region is a
candidate when it holds predictions (pixels with a confidence above 0: predicted or
edited; never-predicted pixels and glass stay 0). Its score is the mean confidence of
those pixels. The summary is one pass over the confidence array, reduced to block
sums at a coarse cell size (``2**level`` store pixels, default: the largest power of
two dividing ``region_size``, at most 1/4 of it) with dask, so memory is that of the
coarse grid and the pass runs in parallel over chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.store import LabelStore

__all__ = ["ConfidenceSummary", "default_level", "next_uncertain_region"]

log = logging.getLogger(__name__)


def default_level(region_size: int) -> int:
    """Cell level for ``region_size``: largest ``2**k`` dividing it and at most a quarter of it."""
    if region_size <= 0:
        raise ValueError(f"region_size must be positive, got {region_size}")
    k = 0
    while region_size % 2 ** (k + 1) == 0 and 2 ** (k + 1) * 4 <= region_size:
        k += 1
    return k


def _block_sums(block: np.ndarray, cell: int) -> np.ndarray:
    """``(2, ceil(h / cell), ceil(w / cell))``: sum of confidence and count of pixels > 0."""
    h, w = block.shape
    ny, nx = -(-h // cell), -(-w // cell)
    if (ny * cell, nx * cell) != (h, w):
        padded = np.zeros((ny * cell, nx * cell), dtype=np.uint8)
        padded[:h, :w] = block
        block = padded
    cells = block.reshape(ny, cell, nx, cell)
    sums = cells.sum(axis=3, dtype=np.uint32).sum(axis=1, dtype=np.int64)
    counts = (cells > 0).sum(axis=3, dtype=np.uint32).sum(axis=1, dtype=np.int64)
    return np.stack([sums, counts])


#: Pixels per side of the blocks one summary task reads (many zarr chunks per task).
_TASK_SIDE = 2048


@dataclass(frozen=True)
class ConfidenceSummary:
    """Confidence reduced to ``cell`` x ``cell`` blocks of a store's level 0.

    Parameters
    ----------
    cell : int
        Cell side in store level-0 pixels (``2**level``).
    width, height : int
        Size of the store's level 0.
    sums : numpy.ndarray
        ``(ny, nx)`` int64 sum of confidence per cell.
    counts : numpy.ndarray
        ``(ny, nx)`` int64 number of pixels with confidence above 0 per cell.
    """

    cell: int
    width: int
    height: int
    sums: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)

    @classmethod
    def from_store(cls, store: LabelStore, level: int = 0) -> ConfidenceSummary:
        """One parallel pass over ``store``'s confidence array (see module doc)."""
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        cell = 2 ** int(level)
        chunk = store.chunk
        # Task blocks: whole zarr chunks and whole cells, so each cell is summed in one task.
        unit = math.lcm(cell, chunk)
        step = max(1, _TASK_SIDE // unit) * unit
        conf = da.from_zarr(str(Path(store.path)), component="confidence", chunks=(step, step))
        out_chunks = ((2,), *(tuple(-(-c // cell) for c in axis) for axis in conf.chunks))
        reduced = conf.map_blocks(
            _block_sums, cell, dtype=np.int64, chunks=out_chunks, new_axis=0
        ).compute()
        return cls(cell, store.width, store.height, reduced[0], reduced[1])

    def region_grid(self, region_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-region ``(sum, count)`` on the ``region_size`` grid anchored at ``(0, 0)``.

        When ``region_size`` is not a multiple of ``cell``, a cell counts towards the
        region holding its top-left corner.
        """
        ny, nx = -(-self.height // region_size), -(-self.width // region_size)
        ry = np.minimum(np.arange(self.sums.shape[0]) * self.cell // region_size, ny - 1)
        rx = np.minimum(np.arange(self.sums.shape[1]) * self.cell // region_size, nx - 1)
        sums = np.zeros((ny, nx), dtype=np.int64)
        counts = np.zeros((ny, nx), dtype=np.int64)
        np.add.at(sums, (ry[:, None], rx[None, :]), self.sums)
        np.add.at(counts, (ry[:, None], rx[None, :]), self.counts)
        return sums, counts


def _centres(size: int, region_size: int) -> np.ndarray:
    """Centres (doubled, to stay integral) of the clipped regions along one axis."""
    starts = np.arange(0, size, region_size)
    return starts + np.minimum(starts + region_size, size)


def _pick(summary: ConfidenceSummary, reviewed: Collection[Box], region_size: int) -> Box | None:
    sums, counts = summary.region_grid(region_size)
    open_ = counts > 0
    cy2 = _centres(summary.height, region_size)
    cx2 = _centres(summary.width, region_size)
    for box in reviewed:
        # A region counts as reviewed when its centre lies inside a reviewed box.
        rows = (2 * box.y <= cy2) & (cy2 < 2 * box.y1)
        cols = (2 * box.x <= cx2) & (cx2 < 2 * box.x1)
        open_[np.ix_(rows, cols)] = False
    if not open_.any():
        return None
    mean = np.where(open_, sums / np.maximum(counts, 1), np.inf)
    # Lowest mean first; ties go to the first region in row-major order (argmin is stable).
    iy, ix = np.unravel_index(int(np.argmin(mean)), mean.shape)
    region = Box(int(ix) * region_size, int(iy) * region_size, region_size, region_size)
    return region.clip(summary.width, summary.height)


def next_uncertain_region(
    store: LabelStore,
    reviewed: Collection[Box] | None,
    region_size: int,
    level: int | None = None,
) -> Box | None:
    """The unreviewed region with the lowest mean confidence, or ``None`` when none is left.

    Parameters
    ----------
    store : LabelStore
        The labels; its confidence is summarised in one parallel pass per call.
    reviewed : collection of Box, optional
        Boxes already reviewed (store level-0 pixels); a region whose centre lies in
        one of them is skipped. Regions returned earlier can be passed back as they are.
    region_size : int
        Side of the regions, store level-0 pixels.
    level : int, optional
        Summary cell level (cells of ``2**level`` pixels); see :func:`default_level`.

    Returns
    -------
    Box or None
        The region in store level-0 pixels: ``region_size`` a side, clipped at the
        store's right and bottom edges.
    """
    if region_size <= 0:
        raise ValueError(f"region_size must be positive, got {region_size}")
    lvl = default_level(region_size) if level is None else level
    return _pick(ConfidenceSummary.from_store(store, lvl), reviewed or (), region_size)
