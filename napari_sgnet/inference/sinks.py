"""Sinks of the tile loop: a label store, an in-memory array, a scorer.

Every sink takes :data:`~napari_sgnet.inference.loop.TileOutput` batches from
:func:`~napari_sgnet.inference.loop.run_tiles` and keeps only each tile's valid part (the
tile box, cut to the level edge).

**Glass.** Glass never carries a grade. Glass tiles (no prediction) and, when a sink is
given the slide's :class:`~napari_sgnet.inference.tissue.TissueMask`, the glass pixels of
predicted tiles (the mask mapped to the plan's level, see
:meth:`~napari_sgnet.inference.tissue.TissueMask.glass`) get label 0 ("no label",
transparent) with confidence 0: the project's convention (:data:`napari_sgnet.palette.GLASS_LABEL`).
A glass label other than ``None`` writes that label with confidence 255 instead (for a
palette with an explicit background class). Edited pixels are kept by the store whatever
is written.

- :class:`StoreSink` writes level 0 (and confidence) of a
  :class:`~napari_sgnet.io.labelstore.LabelStore` chunk-aligned and remembers the tiles;
  :func:`commit_tiles` then recomputes the coarser levels over them and only then marks
  them done, so a crash never marks a tile done whose labels are incomplete. A
  distributed worker only writes; its driver commits.
- :class:`ArraySink` fills a ``(height, width)`` label array of the plan's level.
- :class:`ScoreSink` scores against ground truth as the tiles arrive (confusion matrix
  and, optionally, seam counts on the tile grid) without keeping the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.inference.loop import TileOutput
from napari_sgnet.inference.plan import TileIndex, TilePlan
from napari_sgnet.inference.tissue import TissueMask
from napari_sgnet.io.labelstore import DONE_GLASS, DONE_PREDICTED, LabelStore
from napari_sgnet.metrics import ConfusionMatrix, SeamCounts, seam_counts

__all__ = ["ArraySink", "ScoreSink", "StoreSink", "Written", "commit_tiles", "tile_arrays"]

#: A written tile and its done value (predicted or glass).
Written = tuple[TileIndex, int]


def tile_arrays(
    plan: TilePlan,
    item: TileOutput,
    glass_label: int | None,
    tissue: TissueMask | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The valid ``(labels, confidence)`` of one output, cut to its tile box.

    Parameters
    ----------
    plan : TilePlan
        Gives the tile's box.
    item : ((ty, tx), labels, confidence)
        One loop output; ``labels``/``confidence`` ``None`` for glass.
    glass_label : int or None
        Label of glass (confidence 255); ``None`` gives 0, "no label" (confidence 0).
    tissue : TissueMask, optional
        The slide's tissue mask: the glass pixels of a predicted tile get the glass label
        too. ``None`` keeps every predicted pixel.

    Returns
    -------
    labels, confidence : numpy.ndarray
        ``(box.h, box.w)`` uint8.
    """
    index, labels, conf = item
    box = plan.tile_box(index)
    value, c = (0, 0) if glass_label is None else (glass_label, 255)
    if labels is None or conf is None:
        return (
            np.full((box.h, box.w), value, dtype=np.uint8),
            np.full((box.h, box.w), c, dtype=np.uint8),
        )
    labels, conf = labels[: box.h, : box.w], conf[: box.h, : box.w]
    if tissue is not None:
        glass = tissue.glass(box, plan.downsample)
        if glass.any():
            labels = np.where(glass, np.uint8(value), labels)
            conf = np.where(glass, np.uint8(c), conf)
    return labels, conf


def commit_tiles(store: LabelStore, plan: TilePlan, written: Sequence[Written]) -> list[Box]:
    """Update the coarser levels over written tiles, then mark them done.

    Parameters
    ----------
    store : LabelStore
        The store the tiles were written to.
    plan : TilePlan
        The plan they belong to (same tile grid as the store).
    written : sequence of ((ty, tx), kind)
        Tiles and their done value (predicted or glass).

    Returns
    -------
    list of Box
        The tiles' boxes in slide level-0 pixels (what a viewer should refresh).
    """
    if not written:
        return []
    boxes = [plan.tile_box(idx) for idx, _ in written]
    store.update_pyramid(boxes)
    for kind in (DONE_PREDICTED, DONE_GLASS):
        tiles = [idx for idx, k in written if k == kind]
        if tiles:
            store.mark_done(tiles, kind)
    return [plan.to_slide(b) for b in boxes]


class StoreSink:
    """Write the valid centres of predictions (and glass tiles) into level 0 of a store.

    Parameters
    ----------
    store : LabelStore
        Target store; its tile grid must equal the plan's.
    plan : TilePlan
        The tiling plan.
    glass_label : int or None
        Label written on glass (confidence 255); ``None`` writes 0, "no label" (confidence 0).
    tissue : TissueMask, optional
        The slide's tissue mask; its glass pixels in predicted tiles get the glass label.

    Raises
    ------
    ValueError
        If the store's grid differs from the plan's.
    """

    def __init__(
        self,
        store: LabelStore,
        plan: TilePlan,
        *,
        glass_label: int | None,
        tissue: TissueMask | None = None,
    ) -> None:
        if store.tile != plan.tile or (store.height, store.width) != (plan.height, plan.width):
            raise ValueError(
                f"{store.path}: store grid (tile {store.tile}, {store.width} x {store.height}) "
                f"differs from the plan (tile {plan.tile}, {plan.width} x {plan.height})"
            )
        self.store = store
        self.plan = plan
        self.glass_label = glass_label
        self.tissue = tissue
        self.pending: list[Written] = []

    def write_batch(self, items: Sequence[TileOutput]) -> None:
        """Write several tiles; ``labels``/``conf`` ``None`` marks a glass tile.

        Horizontally adjacent tiles are written as one strip (fewer store calls; the
        strip still covers whole chunks). Edited pixels are kept by the store.
        """
        ordered = sorted(items, key=lambda it: it[0])
        run: list[TileOutput] = []
        for item in ordered:
            if run and (item[0][0] != run[-1][0][0] or item[0][1] != run[-1][0][1] + 1):
                self._write_run(run)
                run = []
            run.append(item)
        if run:
            self._write_run(run)

    def _write_run(self, run: list[TileOutput]) -> None:
        boxes = [self.plan.tile_box(item[0]) for item in run]
        arrays = [tile_arrays(self.plan, item, self.glass_label, self.tissue) for item in run]
        box = Box.from_bounds(boxes[0].x, boxes[0].y, boxes[-1].x1, boxes[-1].y1)
        self.store.write_tile(
            box,
            np.concatenate([a[0] for a in arrays], axis=1),
            np.concatenate([a[1] for a in arrays], axis=1),
        )
        self.pending.extend(
            (item[0], DONE_GLASS if item[1] is None else DONE_PREDICTED) for item in run
        )

    def write_probabilities(self, items: Sequence[tuple[TileIndex, np.ndarray | None]]) -> None:
        """Write per-class probabilities ``(K, tile, tile)`` uint8 of several tiles (``None``:
        a glass tile, all 0) into the store's optional array; glass pixels of the tissue mask
        get 0 too. Called before the batch is committed, so a tile marked done has them.
        """
        k = self.store.palette.num_classes
        ordered = sorted(items, key=lambda it: it[0])
        run: list[tuple[TileIndex, np.ndarray | None]] = []

        def write(run: list[tuple[TileIndex, np.ndarray | None]]) -> None:
            parts = []
            for index, probs in run:
                box = self.plan.tile_box(index)
                if probs is None:
                    parts.append(np.zeros((k, box.h, box.w), dtype=np.uint8))
                    continue
                probs = probs[:, : box.h, : box.w]
                if self.tissue is not None:
                    glass = self.tissue.glass(box, self.plan.downsample)
                    if glass.any():
                        probs = np.where(glass[None], np.uint8(0), probs)
                parts.append(probs)
            first, last = self.plan.tile_box(run[0][0]), self.plan.tile_box(run[-1][0])
            box = Box.from_bounds(first.x, first.y, last.x1, last.y1)
            self.store.write_probabilities(box, np.ascontiguousarray(np.concatenate(parts, 2)))

        for item in ordered:
            if run and (item[0][0] != run[-1][0][0] or item[0][1] != run[-1][0][1] + 1):
                write(run)
                run = []
            run.append(item)
        if run:
            write(run)

    def take_pending(self) -> list[Written]:
        """Tiles written since the last call (and forget them)."""
        out, self.pending = self.pending, []
        return out

    def flush(self) -> list[Box]:
        """Commit pending tiles; returns their slide level-0 boxes."""
        return commit_tiles(self.store, self.plan, self.take_pending())


class ArraySink:
    """Collect the labels (and optionally confidences) of a plan's level in memory.

    Parameters
    ----------
    plan : TilePlan
        The tiling; the arrays are ``(plan.height, plan.width)``.
    glass_label : int or None
        Label of glass (see :func:`tile_arrays`).
    tissue : TissueMask, optional
        The slide's tissue mask (see :func:`tile_arrays`).
    confidence : bool
        Also keep the confidences (in :attr:`confidence`).

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 label ids; 0 where no tile was written.
    confidence : numpy.ndarray or None
        uint8 max softmax x 255, when asked for.
    """

    def __init__(
        self,
        plan: TilePlan,
        *,
        glass_label: int | None = None,
        tissue: TissueMask | None = None,
        confidence: bool = False,
    ) -> None:
        self.plan = plan
        self.glass_label = glass_label
        self.tissue = tissue
        self.labels = np.zeros((plan.height, plan.width), dtype=np.uint8)
        self.confidence = np.zeros_like(self.labels) if confidence else None

    def write_batch(self, items: Sequence[TileOutput]) -> None:
        """Copy each tile's valid part into the arrays."""
        for item in items:
            box = self.plan.tile_box(item[0])
            labels, conf = tile_arrays(self.plan, item, self.glass_label, self.tissue)
            self.labels[box.slices()] = labels
            if self.confidence is not None:
                self.confidence[box.slices()] = conf


_Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ScoreSink:
    """Score predictions against ground truth as they arrive.

    Parameters
    ----------
    plan : TilePlan
        The tiling.
    truth : numpy.ndarray or sequence of (Box, numpy.ndarray)
        A ``(plan.height, plan.width)`` label-id map of the plan's level, or targets:
        boxes of that level with their ``(box.h, box.w)`` label ids. Truth 0 is ignored;
        a pixel in two targets counts twice.
    confusion : ConfusionMatrix
        Updated in place with every tile (truth vs predicted label ids).
    seams : bool
        Also count seams on the plan's tile grid (see :attr:`seams`).
    glass_label : int or None
        Label of glass tiles (see :func:`tile_arrays`).

    Notes
    -----
    Seam counts equal :func:`napari_sgnet.metrics.seam_counts` of the whole predicted map
    with borders every ``plan.tile`` pixels and mask ``truth != 0``: pairs inside a tile are
    counted when the tile arrives, pairs across a tile edge when its neighbour does (only
    the tiles' edge pixels are kept meanwhile).
    """

    def __init__(
        self,
        plan: TilePlan,
        truth: np.ndarray | Sequence[tuple[Box, np.ndarray]],
        confusion: ConfusionMatrix,
        *,
        seams: bool = False,
        glass_label: int | None = None,
    ) -> None:
        if isinstance(truth, np.ndarray):
            if truth.shape != (plan.height, plan.width):
                raise ValueError(
                    f"truth {truth.shape} differs from the level ({plan.height}, {plan.width})"
                )
            truth = [(Box(0, 0, plan.width, plan.height), truth)]
        self.plan = plan
        self.targets = list(truth)
        self.confusion = confusion
        self.glass_label = glass_label
        self.count_seams = seams
        self._seams = SeamCounts()
        self._edges: dict[TileIndex, _Edges] = {}
        self._planned = set(plan.tiles)
        self._seen: set[TileIndex] = set()

    @property
    def seams(self) -> SeamCounts:
        """Seam counts so far (zero unless the sink was made with ``seams=True``)."""
        return self._seams

    def write_batch(self, items: Sequence[TileOutput]) -> None:
        """Score each tile's valid part."""
        for item in items:
            box = self.plan.tile_box(item[0])
            pred, _ = tile_arrays(self.plan, item, self.glass_label)
            mask = np.zeros(pred.shape, dtype=bool) if self.count_seams else None
            for tbox, tarr in self.targets:
                inter = box.intersect(tbox)
                if inter.is_empty:
                    continue
                target = np.asarray(tarr[inter.relative_to(tbox).slices()])
                inside = inter.relative_to(box).slices()
                self.confusion.update(target, pred[inside])
                if mask is not None:
                    mask[inside] |= target != 0
            if mask is not None:
                self._add_seams(item[0], pred, mask)

    def _add_seams(self, index: TileIndex, pred: np.ndarray, mask: np.ndarray) -> None:
        self._seams = self._seams + seam_counts(pred, [], [], mask=mask)
        valid = mask & (pred != 0)
        # (labels, valid) of the first/last column and row, each as a (2, n) array.
        edges: _Edges = (
            np.stack([pred[:, 0], valid[:, 0]]),
            np.stack([pred[:, -1], valid[:, -1]]),
            np.stack([pred[0], valid[0]]),
            np.stack([pred[-1], valid[-1]]),
        )
        # (neighbour, its edge facing us, our edge facing it): left, up, right, down.
        facing = zip(_neighbours(index), (1, 3, 0, 2), (0, 2, 1, 3), strict=True)
        for neighbour, theirs, ours in facing:
            other = self._edges.get(neighbour)
            if other is not None:
                self._seams = self._seams + _border_counts(edges[ours], other[theirs])
        self._edges[index] = edges
        self._seen.add(index)
        for tile in (index, *_neighbours(index)):
            if tile in self._edges and all(
                n in self._seen or n not in self._planned for n in _neighbours(tile)
            ):
                del self._edges[tile]


def _neighbours(index: TileIndex) -> tuple[TileIndex, ...]:
    ty, tx = index
    return ((ty, tx - 1), (ty - 1, tx), (ty, tx + 1), (ty + 1, tx))


def _border_counts(a: np.ndarray, b: np.ndarray) -> SeamCounts:
    """Pairs across one tile edge: ``a``, ``b`` are ``(2, n)`` (labels, valid) of its sides."""
    ok = a[1].astype(bool) & b[1].astype(bool)
    return SeamCounts(int(ok.sum()), int((ok & (a[0] != b[0])).sum()), 0, 0)
