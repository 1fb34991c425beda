"""The single-process inference engine: request -> progress events, cancellable between batches.

::

    feeder thread: batches of tiles -> reader threads: read + decode windows (bounded queue)
    caller thread: predict batch -> write valid centres -> update coarser levels -> mark done

The tiles run through the one tile loop (:func:`~napari_sgnet.inference.loop.run_tiles`)
into a :class:`~napari_sgnet.inference.sinks.StoreSink`; the lifecycle (checks, events,
cancel, the outcome record) is :func:`~napari_sgnet.inference.lifecycle.execute`, shared
with the distributed driver. The store is consistent after every commit, so stopping (a
``threading.Event``, closing the generator, Ctrl-C, or a killed process) loses at most the
batches since the last commit, and a resumed run recomputes exactly the tiles that are not
marked done. To run on dask.distributed, call
:func:`napari_sgnet.inference.distributed.run_distributed` instead (the caller chooses).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.lifecycle import Step, execute
from napari_sgnet.inference.loop import run_tiles
from napari_sgnet.inference.models import get_predictor
from napari_sgnet.inference.ood import OODMonitor
from napari_sgnet.inference.ood_check import watch
from napari_sgnet.inference.predictor_base import Predictor
from napari_sgnet.inference.prepare import PreparedRun
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent
from napari_sgnet.inference.sinks import StoreSink

__all__ = ["LocalExecutor", "predict_slide", "run_inference"]


class LocalExecutor:
    """Run a prepared request's tiles in this process, committing every ``commit_interval``."""

    def __init__(self) -> None:
        self.run: PreparedRun | None = None
        self.sink: StoreSink | None = None
        self.predictor: Predictor | None = None
        self.ood: OODMonitor | None = None  # judges the tiles this run predicts

    def start(self, run: PreparedRun) -> None:
        """Open the store sink and load the model."""
        request = run.request
        self.run = run
        self.sink = StoreSink(
            run.store, run.plan, glass_label=request.glass_label, tissue=run.tissue
        )
        if request.threads is not None and not isinstance(run.spec.obj, Predictor):
            import torch

            torch.set_num_threads(request.threads)
        scope = "slide" if request.region is None else "region"
        self.predictor, self.ood = watch(
            get_predictor(run.spec, request.device, request.precision), run.spec, scope
        )

    def steps(self, cancel: threading.Event | None) -> Generator[Step, None, None]:
        """Predict and write every batch; commit (pyramid + done-map) at most every interval."""
        assert self.run is not None and self.sink is not None and self.predictor is not None
        run, sink, predictor, request = self.run, self.sink, self.predictor, self.run.request
        last_commit = -float("inf")
        for batch in run_tiles(
            run.pyramid,
            run.plan,
            predictor,
            sink,
            run.work,
            batch_size=request.batch_size,
            prefetch=request.prefetch,
            readers=request.readers,
            cancel=cancel,
            probabilities=run.store.has_probabilities,
            head_start=request.region is not None,  # a view: its first tile before reading on
            # no ramp: every forward pass has batch_size tiles (determinism), so growing the
            # first batches would only add padded passes before the viewport fills
        ):
            boxes: list[Box] = []
            if time.perf_counter() - last_commit >= request.commit_interval:
                boxes = sink.flush()
                last_commit = time.perf_counter()
            yield batch, boxes

    def finish(self) -> list[Box]:
        """Commit the tiles written since the last commit."""
        return self.sink.flush() if self.sink is not None else []


def run_inference(
    request: InferenceRequest, *, cancel: threading.Event | None = None
) -> Generator[ProgressEvent, None, None]:
    """Run a request in this process, yielding a :class:`ProgressEvent` after every batch.

    Nothing happens until the generator is iterated. The first event has stage
    ``"started"``; the last has ``"completed"`` or ``"cancelled"`` and is the run's
    summary. Setting ``cancel`` or closing the generator stops between batches and
    leaves the store consistent.

    Raises
    ------
    RequestError, SlideError, StoreError
        From the first ``next()``, for a bad request, slide or store.
    """
    yield from execute(request, LocalExecutor(), cancel=cancel)


def predict_slide(
    slide: Any,
    store: Any,
    model: Any = None,
    *,
    progress: Callable[[ProgressEvent], object] | None = None,
    **options: Any,
) -> ProgressEvent:
    """Run a whole request in this process to the end and return its summary event.

    Parameters
    ----------
    slide, store, model
        As in :class:`InferenceRequest`.
    progress : callable, optional
        Called with every :class:`ProgressEvent`.
    **options
        Any other :class:`InferenceRequest` field.

    Returns
    -------
    ProgressEvent
        The last event (stage ``"completed"``).
    """
    request = InferenceRequest(slide=slide, store=store, model=model, **options)
    last = None
    for last in run_inference(request):
        if progress is not None:
            progress(last)
    assert last is not None
    return last
