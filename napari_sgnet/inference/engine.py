"""The inference engine: request -> progress events, cancellable between batches.

::

    feeder thread: batches of tiles -> reader threads: read + decode windows (bounded queue)
    caller thread: predict batch -> write valid centres -> update coarser levels -> mark done

The store is consistent after every batch, so stopping (a ``threading.Event``, closing
the generator, Ctrl-C, or a killed process) loses at most the batch in flight, and a
resumed run recomputes exactly the tiles that are not marked done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.models import get_predictor
from napari_sgnet.inference.plan import TilePlan
from napari_sgnet.inference.predictor_base import Predictor
from napari_sgnet.inference.prefetch import Prefetcher
from napari_sgnet.inference.prepare import PreparedRun, WorkItem, prepare
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.inference.writer import TileOutput, TileWriter
from napari_sgnet.io.labelstore.meta import now_iso
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["RunStats", "iter_batches", "predict_slide", "process_tiles", "run_inference"]

log = logging.getLogger(__name__)


def iter_batches(
    work: Iterable[WorkItem], batch_size: int, *, ramp: bool = False
) -> Iterator[list[WorkItem]]:
    """Group work items into batches of ``batch_size`` tissue tiles, keeping their order.

    Glass tiles ride along with the batch they fall in (at most ``4 * batch_size``
    items per batch, so long glass stretches still report progress). With ``ramp``
    the batches grow 1, 2, 4, ... up to ``batch_size``, so the first tile of a
    viewport shows as soon as possible.
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


def process_tiles(
    pyramid: Pyramid,
    plan: TilePlan,
    predictor: Predictor,
    writer: TileWriter,
    work: Iterable[WorkItem],
    *,
    batch_size: int,
    prefetch: int = 2,
    readers: int = 2,
    cancel: threading.Event | None = None,
    ramp: bool = False,
) -> Iterator[list[WorkItem]]:
    """Predict and write level 0 for ``work``; yields each batch once written.

    Commits (coarser levels, done-map) are left to the caller. Stops before the
    next batch when ``cancel`` is set. ``ramp`` grows the first batches (viewports).
    """

    def load(batch: list[WorkItem]) -> tuple[list[WorkItem], list[Any], Any]:
        tissue = [idx for idx, glass in batch if not glass]
        return batch, tissue, (read_batch(pyramid, plan, tissue) if tissue else None)

    feeder = Prefetcher(
        iter_batches(work, batch_size, ramp=ramp), load, depth=prefetch, workers=readers
    )
    try:
        for batch, tissue, windows in feeder:
            if cancel is not None and cancel.is_set():
                return
            outputs: list[TileOutput] = [(idx, None, None) for idx, glass in batch if glass]
            if tissue:
                local, context = windows
                labels, conf = predictor.predict(local, context, crop=plan.overlap)
                outputs.extend((idx, labels[i], conf[i]) for i, idx in enumerate(tissue))
            writer.write_batch(outputs)
            yield batch
    finally:
        feeder.close()


class RunStats:
    """Counts of a run, turned into :class:`ProgressEvent`\\ s."""

    def __init__(self, run: PreparedRun) -> None:
        self.run = run
        self.t0 = time.perf_counter()
        self.done = self.predicted = self.glass = 0
        self.pixels = 0

    def add(self, batch: Iterable[WorkItem]) -> None:
        """Count a finished batch."""
        for idx, glass in batch:
            self.done += 1
            self.glass += glass
            self.predicted += not glass
            self.pixels += self.run.plan.tile_box(idx).area

    def event(self, stage: str, boxes: Iterable[Box] = ()) -> ProgressEvent:
        """The current state as an event."""
        run = self.run
        return ProgressEvent(
            stage=stage,
            tiles_done=self.done,
            tiles_total=len(run.work),
            tiles_predicted=self.predicted,
            tiles_glass=self.glass,
            tiles_cached=run.n_cached,
            megapixels=self.pixels / 1e6,
            elapsed_s=time.perf_counter() - self.t0,
            store=run.store.path,
            level=run.plan.level,
            downsample=run.plan.downsample,
            tissue_fraction=run.tissue_fraction,
            boxes=tuple(boxes),
        )

    def record(self, status: str) -> None:
        """Write the run's outcome into the store's request record."""
        ev = self.event(status)
        self.run.store.update_request(
            self.run.request_number,
            status=status,
            finished=now_iso(),
            elapsed_s=round(ev.elapsed_s, 3),
            predicted=self.predicted,
            glass=self.glass,
        )


def run_inference(
    request: InferenceRequest, *, cancel: threading.Event | None = None
) -> Iterator[ProgressEvent]:
    """Run a request, yielding a :class:`ProgressEvent` after every batch.

    Nothing happens until the generator is iterated. The first event has stage
    ``"started"``; the last has ``"completed"`` or ``"cancelled"`` and is the run's
    summary. Setting ``cancel`` or closing the generator stops between batches and
    leaves the store consistent.

    Raises
    ------
    RequestError, SlideError, StoreError
        From the first ``next()``, for a bad request, slide or store.
    """
    run = prepare(request)
    stats = RunStats(run)
    status = "failed"
    writer = TileWriter(run.store, run.plan, glass_label=request.glass_label)
    last_commit = -float("inf")
    final_boxes: list[Box] = []
    try:
        predictor = get_predictor(run.spec, request.device, request.precision)
        yield stats.event("started")
        for batch in process_tiles(
            run.pyramid,
            run.plan,
            predictor,
            writer,
            run.work,
            batch_size=request.batch_size,
            prefetch=request.prefetch,
            readers=request.readers,
            cancel=cancel,
            ramp=request.order == "center",
        ):
            boxes: list[Box] = []
            if time.perf_counter() - last_commit >= request.commit_interval:
                boxes = writer.flush()
                last_commit = time.perf_counter()
            stats.add(batch)
            yield stats.event("progress", boxes)
        status = "cancelled" if cancel is not None and cancel.is_set() else "completed"
    except GeneratorExit:
        status = "cancelled"
        raise
    finally:
        final_boxes = writer.flush()
        stats.record(status)
        log.info("%s: run %s after %d tiles", run.store.path, status, stats.done)
    yield stats.event(status, final_boxes)


def predict_slide(
    slide: Any, store: Any, model: Any = None, *, progress: Any = None, **options: Any
) -> ProgressEvent:
    """Run a whole request to the end and return its summary event.

    Parameters
    ----------
    slide, store, model
        As in :class:`InferenceRequest`.
    progress : callable, optional
        Called with every :class:`ProgressEvent`.
    **options
        Any other :class:`InferenceRequest` field; plus ``workers`` / ``scheduler``
        to run on dask.distributed (see :func:`run_distributed`).
    """
    workers = options.pop("workers", None)
    scheduler = options.pop("scheduler", None)
    request = InferenceRequest(slide=slide, store=store, model=model, **options)
    if workers or scheduler:
        from napari_sgnet.inference.distributed import run_distributed

        events = run_distributed(request, n_workers=workers, scheduler_address=scheduler)
    else:
        events = run_inference(request)
    last = None
    for last in events:
        if progress is not None:
            progress(last)
    assert last is not None
    return last
