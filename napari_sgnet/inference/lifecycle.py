"""The run lifecycle, written once: prepare -> execute batches -> finish, as progress events.

The single-process engine (:mod:`napari_sgnet.inference.engine`) and the distributed
driver (:mod:`napari_sgnet.inference.distributed`) differ only in how the batches of a
prepared run get done; both hand an :class:`Executor` to :func:`execute`, which owns the
rest: the checks and the store (:func:`~napari_sgnet.inference.prepare.prepare`), the
events, cancellation, and the outcome recorded in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Protocol

from napari_sgnet.geometry import Box
from napari_sgnet.inference.ood import OODMonitor
from napari_sgnet.inference.plan import WorkItem
from napari_sgnet.inference.prepare import PreparedRun, prepare
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent
from napari_sgnet.io.labelstore.meta import now_iso

__all__ = ["Executor", "RunStats", "execute"]

log = logging.getLogger(__name__)

#: Tiles finished (committed) by one step and the slide level-0 boxes to refresh.
Step = tuple[Sequence[WorkItem], list[Box]]


class Executor(Protocol):
    """How the work of a prepared run gets done (in this process, or on a cluster)."""

    def start(self, run: PreparedRun) -> None:
        """Get ready (load the model, connect, submit); called once, before any step."""
        ...

    def steps(self, cancel: threading.Event | None) -> Generator[Step, None, None]:
        """Do the work, yielding each step once its tiles are committed (or at least written).

        Stop early when ``cancel`` is set; the generator is closed when the consumer stops.
        """
        ...

    def finish(self) -> list[Box]:
        """Commit what is still pending and release resources; always called, even after
        a failed :meth:`start`. Returns the boxes committed now."""
        ...


class RunStats:
    """Counts of a run, turned into :class:`ProgressEvent`\\ s.

    Parameters
    ----------
    run : PreparedRun
        The run being counted.
    """

    def __init__(self, run: PreparedRun) -> None:
        self.run = run
        self.t0 = time.perf_counter()
        self.done = self.predicted = self.glass = 0
        self.pixels = 0
        self.ood: OODMonitor | None = None  # the executor's, when it judges its tiles

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
            ood=self.ood.result() if self.ood is not None else None,
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
            ood=ev.ood.to_dict() if ev.ood is not None else None,
        )


def execute(
    request: InferenceRequest, executor: Executor, *, cancel: threading.Event | None = None
) -> Iterator[ProgressEvent]:
    """Run ``request`` with ``executor``, yielding a :class:`ProgressEvent` after every step.

    Nothing happens until the generator is iterated. The first event has stage
    ``"started"``; the last has ``"completed"``, ``"cancelled"`` and is the run's summary
    (a failure raises after recording ``"failed"`` in the store). Setting ``cancel`` or
    closing the generator stops between steps and leaves the store consistent.

    Parameters
    ----------
    request : InferenceRequest
        What to run.
    executor : Executor
        How to run it.
    cancel : threading.Event, optional
        Stop between steps once set.

    Raises
    ------
    RequestError, SlideError, StoreError
        From the first ``next()``, for a bad request, slide or store.
    """
    run = prepare(request)
    try:  # nothing is written into an existing store until the model has loaded
        executor.start(run)
        run.begin()
    except BaseException:
        executor.finish()
        run.abandon()
        raise
    stats = RunStats(run)
    status = "failed"
    steps: Generator[Step, None, None] | None = None
    final: list[Box] = []
    try:
        stats.ood = getattr(executor, "ood", None)
        yield stats.event("started")
        steps = executor.steps(cancel)
        for done, boxes in steps:
            stats.add(done)
            yield stats.event("progress", boxes)
        status = "cancelled" if cancel is not None and cancel.is_set() else "completed"
    except GeneratorExit:
        status = "cancelled"
        raise
    finally:
        if steps is not None:
            steps.close()
        final = executor.finish()
        if status == "completed" or stats.done:
            run.store.discard_replaced()  # the new store holds this run's work now
        if run.store.restore_replaced():  # failed or cancelled before its first commit
            log.warning("%s: run %s before its first commit; the old store is back",
                        run.store.path, status)
        else:
            stats.record(status)
        log.info("%s: run %s after %d tiles", run.store.path, status, stats.done)
    yield stats.event(status, final)
