"""Write predicted tiles into a LabelStore and commit them (pyramid + done-map).

Writing is split in two so a crash can never mark a tile done whose labels or
coarser levels are incomplete: :meth:`TileWriter.write_predicted` /
:meth:`TileWriter.write_glass` write level 0 (and confidence) and remember the
tile; :func:`commit_tiles` then recomputes the coarser levels over those tiles and
only then marks them done. A distributed worker only writes; its driver commits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.inference.plan import TileIndex, TilePlan
from napari_sgnet.io.labelstore import DONE_GLASS, DONE_PREDICTED, LabelStore

__all__ = ["TileWriter", "commit_tiles"]

Written = tuple[TileIndex, int]
#: A tile and its predicted labels and confidence (both ``None`` for glass).
TileOutput = tuple[TileIndex, np.ndarray | None, np.ndarray | None]


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


class TileWriter:
    """Write the valid centres of predictions (and glass tiles) into level 0 of a store.

    Parameters
    ----------
    store : LabelStore
        Target store; its tile grid must equal the plan's.
    plan : TilePlan
        The tiling plan.
    glass_label : int or None
        Label written into glass tiles (confidence 255); ``None`` writes 0 (confidence 0).
    """

    def __init__(self, store: LabelStore, plan: TilePlan, *, glass_label: int | None) -> None:
        if store.tile != plan.tile or (store.height, store.width) != (plan.height, plan.width):
            raise ValueError(
                f"{store.path}: store grid (tile {store.tile}, {store.width} x {store.height}) "
                f"differs from the plan (tile {plan.tile}, {plan.width} x {plan.height})"
            )
        self.store = store
        self.plan = plan
        self.glass_label = glass_label
        self.pending: list[Written] = []

    def write_predicted(self, index: TileIndex, labels: np.ndarray, confidence: np.ndarray) -> None:
        """Write one tile's valid prediction (``(tile, tile)``, cut to the level edge)."""
        self.write_batch([(index, labels, confidence)])

    def write_glass(self, index: TileIndex) -> None:
        """Write a glass tile: the glass label with full confidence (edits are kept)."""
        self.write_batch([(index, None, None)])

    def _arrays(self, item: TileOutput) -> tuple[np.ndarray, np.ndarray]:
        index, labels, conf = item
        box = self.plan.tile_box(index)
        if labels is None or conf is None:
            value, c = (0, 0) if self.glass_label is None else (self.glass_label, 255)
            return (
                np.full((box.h, box.w), value, dtype=np.uint8),
                np.full((box.h, box.w), c, dtype=np.uint8),
            )
        return labels[: box.h, : box.w], conf[: box.h, : box.w]

    def write_batch(self, items: Sequence[TileOutput]) -> None:
        """Write several tiles; ``labels``/``conf`` ``None`` marks a glass tile.

        Horizontally adjacent tiles are written as one strip (fewer store calls; the
        strip still covers whole chunks).
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
        arrays = [self._arrays(item) for item in run]
        box = Box.from_bounds(boxes[0].x, boxes[0].y, boxes[-1].x1, boxes[-1].y1)
        self.store.write_tile(
            box,
            np.concatenate([a[0] for a in arrays], axis=1),
            np.concatenate([a[1] for a in arrays], axis=1),
        )
        self.pending.extend(
            (item[0], DONE_GLASS if item[1] is None else DONE_PREDICTED) for item in run
        )

    def take_pending(self) -> list[Written]:
        """Tiles written since the last call (and forget them)."""
        out, self.pending = self.pending, []
        return out

    def flush(self) -> list[Box]:
        """Commit pending tiles; returns their slide level-0 boxes."""
        return commit_tiles(self.store, self.plan, self.take_pending())
