"""The one tile loop: plan -> read windows ahead -> predictor -> sink.

::

    feeder thread: batches of tiles -> reader threads: read + decode windows (bounded queue)
    caller thread: predict batch -> sink.write_batch(labels, confidence) -> yield the batch

The inference engine (a :class:`~napari_sgnet.inference.sinks.StoreSink`), the
distributed workers (the same sink, committed by their driver), evaluation (an
:class:`~napari_sgnet.inference.sinks.ArraySink` or a
:class:`~napari_sgnet.inference.sinks.ScoreSink`) and fine-tuning's held-out scoring all
run their tiles through :func:`run_tiles`, so a tile's labels do not depend on who asked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from napari_sgnet.inference.plan import TileIndex, TilePlan, WorkItem
from napari_sgnet.inference.predictor_base import Predictor
from napari_sgnet.inference.prefetch import Prefetcher
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["TileOutput", "TileSink", "iter_batches", "run_tiles"]

#: A tile and its predicted ``(tile, tile)`` uint8 labels and confidence (both ``None`` for
#: glass). Predictions are the valid centre of the patch and may extend past the level edge.
TileOutput = tuple[TileIndex, np.ndarray | None, np.ndarray | None]

_Loaded = tuple[list[WorkItem], list[TileIndex], tuple[np.ndarray, np.ndarray | None] | None]


class TileSink(Protocol):
    """Where the tile loop hands each batch's predictions."""

    def write_batch(self, items: Sequence[TileOutput]) -> None:
        """Take the outputs of one batch (predicted and glass tiles, in any order)."""
        ...


def iter_batches(
    work: Iterable[WorkItem], batch_size: int, *, ramp: bool = False
) -> Iterator[list[WorkItem]]:
    """Group work items into batches of ``batch_size`` tissue tiles, keeping their order.

    Parameters
    ----------
    work : iterable of ((ty, tx), glass)
        Tiles to do.
    batch_size : int
        Tissue tiles per batch. Glass tiles ride along with the batch they fall in (at
        most ``4 * batch_size`` items per batch, so long glass stretches still report
        progress).
    ramp : bool
        Grow the batches 1, 2, 4, ... up to ``batch_size``, so the first tile of a
        viewport shows as soon as possible.

    Yields
    ------
    list of ((ty, tx), glass)
        One batch.
    """
    limit = 1 if ramp else batch_size
    batch: list[WorkItem] = []
    n_tissue = 0
    for item in work:
        batch.append(item)
        n_tissue += not item[1]
        if n_tissue >= limit or len(batch) >= 4 * batch_size:
            yield batch
            batch, n_tissue = [], 0
            limit = min(batch_size, 2 * limit)
    if batch:
        yield batch


def run_tiles(
    pyramid: Pyramid,
    plan: TilePlan,
    predictor: Predictor,
    sink: TileSink,
    work: Iterable[WorkItem],
    *,
    batch_size: int,
    prefetch: int = 2,
    readers: int = 2,
    cancel: threading.Event | None = None,
    ramp: bool = False,
) -> Iterator[list[WorkItem]]:
    """Predict ``work`` and hand every batch to ``sink``; yields each batch once it is in.

    Parameters
    ----------
    pyramid : Pyramid
        The slide; windows are read from ``plan.level`` (glass-padded past the edge).
    plan : TilePlan
        The tiling (windows of each tile, overlap cropped from each prediction).
    predictor : Predictor
        Turns uint8 windows into uint8 labels (label id = class + 1) and confidences.
    sink : TileSink
        Receives each batch's outputs.
    work : iterable of ((ty, tx), glass)
        Tiles to do, in order; glass tiles are handed to the sink unpredicted.
    batch_size : int
        Tissue tiles per forward pass.
    prefetch : int
        Batches read ahead of the predictor.
    readers : int
        Threads reading windows.
    cancel : threading.Event, optional
        Stop before the next batch once set.
    ramp : bool
        Grow the first batches (viewports show their first tile sooner).

    Yields
    ------
    list of ((ty, tx), glass)
        Each batch, after the sink took it. Committing (coarser levels, done-map) is the
        caller's business.
    """

    def load(batch: list[WorkItem]) -> _Loaded:
        tissue = [idx for idx, glass in batch if not glass]
        return batch, tissue, (read_batch(pyramid, plan, tissue) if tissue else None)

    feeder: Prefetcher[list[WorkItem], _Loaded] = Prefetcher(
        iter_batches(work, batch_size, ramp=ramp), load, depth=prefetch, workers=readers
    )
    try:
        for batch, tissue, windows in feeder:
            if cancel is not None and cancel.is_set():
                return
            outputs: list[TileOutput] = [(idx, None, None) for idx, glass in batch if glass]
            if windows is not None:
                local, context = windows
                labels, conf = predictor.predict(local, context, crop=plan.overlap)
                outputs.extend((idx, labels[i], conf[i]) for i, idx in enumerate(tissue))
            sink.write_batch(outputs)
            yield batch
    finally:
        feeder.close()
