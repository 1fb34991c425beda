"""The review queue: which region a pathologist should look at next, and why.

The store's level 0 is cut into square *regions* of :data:`REGION_UM` micrometres a
side (a grid anchored at the slide's top-left corner). For each region:

- its **predicted tissue** is the pixels holding a class (label id > 0): glass and
  never-predicted pixels (label 0) do not count;
- its **uncertainty score** is the mean of ``1 - confidence`` over its predicted tissue
  pixels, confidence being the model's max softmax (0..1; corrected pixels count as
  fully confident), so 0 is "sure of every pixel" and 1 - 1/K (K classes) the most
  doubtful a softmax can be;
- it is **skipped** when less than :data:`MIN_PREDICTED` of its area is predicted tissue
  (mostly glass or not predicted yet), or when its centre lies in a region already
  reviewed (so no region is shown twice).

Regions holding tissue a person erased to *unlabelled* that the model has not
predicted again yet (their done-map tiles are still "to do") come first, with the
reason ``"unlabelled"``, reviewed or not (the commit that erased them marked its crop
reviewed); the caller drops an unlabelled box once it has shown it
(``ReviewRecord.remove_unlabelled``), so it is not shown twice. Then the rest by
decreasing score (ties: top row first, then left first). Positions and sizes are
reported in µm of the slide.

Nothing here imports napari or Qt; boxes are in store level-0 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore

__all__ = [
    "MIN_PREDICTED",
    "REGION_UM",
    "QueueRegion",
    "rank_regions",
    "region_side",
    "store_um_per_px",
]

#: Side of a review region, micrometres of the slide.
REGION_UM = 256.0
#: Least fraction of a region's area that must be predicted tissue for it to be reviewed.
MIN_PREDICTED = 0.25
_TASK_SIDE = 2048


def store_um_per_px(store: LabelStore) -> float | None:
    """Micrometres per store level-0 pixel (``None`` when the slide's µm/px is unknown)."""
    mpp = store.slide_identity.get("mpp")
    return float(mpp) * store.base_downsample if mpp else None


def region_side(store: LabelStore, region_um: float = REGION_UM) -> int:
    """Region side in store level-0 pixels for ``region_um`` µm (256 pixels without µm/px)."""
    um = store_um_per_px(store)
    return max(8, round(region_um / um)) if um else 256


@dataclass(frozen=True)
class QueueRegion:
    """One region of the review queue.

    Parameters
    ----------
    box : Box
        The region, store level-0 pixels (clipped at the slide's edges).
    score : float
        Mean ``1 - confidence`` over its predicted tissue pixels (1.0 for "unlabelled").
    predicted : float
        Fraction of its area that is predicted tissue.
    reason : str
        ``"uncertain"`` or ``"unlabelled"`` (erased by a person, to predict again).
    um_per_px : float or None
        µm per store level-0 pixel, for :meth:`describe`.
    """

    box: Box
    score: float
    predicted: float
    reason: str = "uncertain"
    um_per_px: float | None = None

    def describe(self) -> str:
        """Where the region is and how big, in µm of the slide (pixels without µm/px)."""
        b = self.box
        cx, cy = b.x + b.w / 2, b.y + b.h / 2
        if self.um_per_px:
            u = self.um_per_px
            return (f"{b.w * u:.0f} x {b.h * u:.0f} µm centred at "
                    f"({cx * u:,.0f}, {cy * u:,.0f}) µm")
        return f"{b.w} x {b.h} label pixels centred at ({cx:,.0f}, {cy:,.0f})"


def _cell_sums(labels: np.ndarray, conf: np.ndarray, cell: int) -> np.ndarray:
    """``(3, ny, nx)`` per cell: sum of ``255 - conf`` and count over labels > 0, all pixels."""
    h, w = labels.shape
    ny, nx = -(-h // cell), -(-w // cell)
    tissue = labels > 0
    doubt = np.where(tissue, 255 - conf.astype(np.int64), 0)
    area = np.ones((h, w), dtype=np.int64)
    out = np.zeros((3, ny * cell, nx * cell), dtype=np.int64)
    out[0, :h, :w] = doubt
    out[1, :h, :w] = tissue
    out[2, :h, :w] = area
    sums: np.ndarray = out.reshape(3, ny, cell, nx, cell).sum(axis=(2, 4))
    return sums


def _region_sums(store: LabelStore, side: int) -> np.ndarray:
    """``(3, ny, nx)`` per region of ``side`` pixels (one parallel pass over two arrays)."""
    unit = math.lcm(side, store.chunk)
    step = max(1, _TASK_SIDE // unit) * unit
    path = str(Path(store.path))
    labels = da.from_zarr(path, component="0", chunks=(step, step))  # type: ignore[no-untyped-call]
    conf = da.from_zarr(path, component="confidence", chunks=(step, step))  # type: ignore[no-untyped-call]
    out_chunks = ((3,), *(tuple(-(-c // side) for c in axis) for axis in labels.chunks))
    sums = da.map_blocks(  # type: ignore[no-untyped-call]
        _cell_sums, labels, conf, side, dtype=np.int64, chunks=out_chunks, new_axis=0)
    return np.asarray(sums.compute())


def _stale_unlabelled(store: LabelStore, boxes: Collection[Box]) -> list[Box]:
    """The unlabelled boxes some of whose tiles are still "to do"."""
    if not boxes:
        return []
    done = store.done_map()
    t = store.tile
    out = []
    for b in boxes:
        tiles = done[b.y // t: -(-b.y1 // t), b.x // t: -(-b.x1 // t)]
        if tiles.size and (tiles == 0).any():
            out.append(b)
    return out


def rank_regions(
    store: LabelStore,
    reviewed: Collection[Box] = (),
    *,
    unlabelled: Collection[Box] = (),
    region_um: float = REGION_UM,
    min_predicted: float = MIN_PREDICTED,
) -> list[QueueRegion]:
    """Every region still to review, in review order (see the module doc for the score).

    Parameters
    ----------
    store : LabelStore
        The labels and their confidence.
    reviewed : collection of Box
        Regions already reviewed, store level-0 pixels; a region whose centre lies in
        one of them is skipped.
    unlabelled : collection of Box
        Boxes a person erased to "unlabelled" (``store.review.unlabelled()``); regions
        meeting one whose tiles are not predicted again yet come first (even reviewed).
    region_um : float
        Region side, µm (see :func:`region_side`).
    min_predicted : float
        Least predicted-tissue fraction of a region's area.

    Returns
    -------
    list of QueueRegion
        Most urgent first; empty when nothing is left to review.
    """
    side = region_side(store, region_um)
    um = store_um_per_px(store)
    sums = _region_sums(store, side)
    doubt, tissue, area = sums
    ny, nx = tissue.shape
    starts_y, starts_x = np.arange(ny) * side, np.arange(nx) * side
    cy2 = starts_y + np.minimum(starts_y + side, store.height)  # doubled centres
    cx2 = starts_x + np.minimum(starts_x + side, store.width)
    open_ = tissue >= min_predicted * np.maximum(area, 1)
    todo = np.zeros_like(open_)
    for b in _stale_unlabelled(store, unlabelled):
        todo[b.y // side: -(-b.y1 // side), b.x // side: -(-b.x1 // side)] = True
    for b in reviewed:
        rows = (2 * b.y <= cy2) & (cy2 < 2 * b.y1)
        cols = (2 * b.x <= cx2) & (cx2 < 2 * b.x1)
        open_[np.ix_(rows, cols)] = False
    score = np.where(tissue > 0, doubt / np.maximum(tissue, 1) / 255.0, 0.0)
    out: list[QueueRegion] = []
    for iy, ix in zip(*np.nonzero(todo), strict=True):
        box = Box(int(ix) * side, int(iy) * side, side, side).clip(store.width, store.height)
        out.append(QueueRegion(box, 1.0, float(tissue[iy, ix] / max(area[iy, ix], 1)),
                               "unlabelled", um))
    open_ &= ~todo
    order = np.lexsort((np.arange(ny * nx), -score.ravel()))  # score desc, then row-major
    for flat in order:
        iy, ix = divmod(int(flat), nx)
        if not open_[iy, ix]:
            continue
        box = Box(ix * side, iy * side, side, side).clip(store.width, store.height)
        out.append(QueueRegion(box, float(score[iy, ix]),
                               float(tissue[iy, ix] / max(area[iy, ix], 1)), "uncertain", um))
    return out
