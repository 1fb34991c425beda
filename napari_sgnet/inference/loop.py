"""The one tile loop: plan -> read windows ahead -> predictor -> sink.

::

    feeder thread: batches of tiles -> reader threads: read + decode windows (bounded queue)
    caller thread: predict batch -> sink.write_batch(labels, confidence) -> yield the batch

The inference engine (a :class:`~napari_sgnet.inference.sinks.StoreSink`), the
distributed workers (the same sink, committed by their driver), evaluation (an
:class:`~napari_sgnet.inference.sinks.ArraySink` or a
:class:`~napari_sgnet.inference.sinks.ScoreSink`) and fine-tuning's held-out scoring all
run their tiles through :func:`run_tiles`, so a tile's labels do not depend on who asked.

Determinism: every forward pass sees exactly ``batch_size`` tissue tiles. A batch with fewer
(the last one, one cut short by a long stretch of glass, a resumed run's first) is padded by
repeating its last tile, and the padding's outputs are dropped (:func:`pad_batch`). The
floating-point result of a convolution depends on the batch size it runs at (oneDNN and
cuDNN pick kernels by shape), not on which other tiles share the batch, so with a constant
batch size a tile's bytes are the same whichever run, block or worker predicts it
(docs/inference.md, "Determinism").
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

__all__ = ["TileOutput", "TileSink", "iter_batches", "pad_batch", "run_tiles"]

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


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` (a batch along axis 0) padded to ``size`` rows by repeating its last row.

    Parameters
    ----------
    array : numpy.ndarray
        ``(n, ...)`` with ``1 <= n <= size``.
    size : int
        Rows wanted.

    Returns
    -------
    numpy.ndarray
        ``array`` itself when it has ``size`` rows, else a ``(size, ...)`` copy whose rows
        ``n:`` repeat row ``n - 1``.
    """
    n = array.shape[0]
    if n >= size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - n, axis=0)])


def _forward(
    predictor: Predictor,
    local: np.ndarray,
    context: np.ndarray | None,
    crop: int,
    n: int,
    probabilities: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One padded forward pass; the first ``n`` rows of labels, confidence (, probabilities)."""
    padded_predict = getattr(predictor, "predict_padded", None)  # judges only n rows
    probs: np.ndarray | None = None
    if padded_predict is not None:
        labels, conf, probs = padded_predict(local, context, crop, n, probabilities)
    elif probabilities:
        labels, conf, probs = getattr(predictor, "predict_probabilities")(  # noqa: B009
            local, context, crop
        )
    else:
        labels, conf = predictor.predict(local, context, crop=crop)
    return labels[:n], conf[:n], None if probs is None else probs[:n]


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
    probabilities: bool = False,
    head_start: bool = False,
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
        Tissue tiles per forward pass: every forward pass has exactly this many (a shorter
        batch is padded with copies of its last tile whose outputs are dropped), so a
        tile's labels and confidence do not depend on the batch it fell in.
    prefetch : int
        Batches read ahead of the predictor.
    readers : int
        Threads reading windows.
    cancel : threading.Event, optional
        Stop before the next batch once set.
    ramp : bool
        Grow the first batches (fewer tiles read before the first forward pass; each pass
        is still padded to ``batch_size``, so this saves reading, not computing).
    probabilities : bool
        Also hand the per-class probabilities (``predictor.predict_probabilities``) to
        ``sink.write_probabilities`` (a :class:`~napari_sgnet.inference.sinks.StoreSink`
        of a store that keeps them), before the batch is yielded (committed).
    head_start : bool
        Read and predict the first batch before reading ahead
        (:class:`~napari_sgnet.inference.prefetch.Prefetcher`): the first batch does not
        share the cores with the reads of the next ones. Timing only: the batches and
        their tiles are the same.

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
        iter_batches(work, batch_size, ramp=ramp), load, depth=prefetch, workers=readers,
        head_start=head_start,
    )
    try:
        for batch, tissue, windows in feeder:
            if cancel is not None and cancel.is_set():
                return
            outputs: list[TileOutput] = [(idx, None, None) for idx, glass in batch if glass]
            kept: list[tuple[TileIndex, np.ndarray | None]] = [
                (idx, None) for idx, glass in batch if glass
            ]
            if windows is not None:
                local, context = windows
                n = len(tissue)
                local = pad_batch(local, batch_size)
                context = None if context is None else pad_batch(context, batch_size)
                labels, conf, probs = _forward(
                    predictor, local, context, plan.overlap, n, probabilities
                )
                outputs.extend((idx, labels[i], conf[i]) for i, idx in enumerate(tissue))
                if probs is not None:
                    kept.extend((idx, probs[i]) for i, idx in enumerate(tissue))
            sink.write_batch(outputs)
            if probabilities:  # before the caller commits (marks done) the batch
                getattr(sink, "write_probabilities")(kept)  # noqa: B009 - a StoreSink
            yield batch
    finally:
        feeder.close()
