"""Viewport inference: one slide, one store, a stream of regions where the newest wins.

A viewer submits the visible region every time the view settles; the session
cancels the run in flight (it stops at its next batch boundary, leaving the store
consistent) and starts the new one with tiles ordered centre-first. Tiles already
done are served from the store, so panning back costs nothing, unless the model
changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.engine import run_inference
from napari_sgnet.inference.models import describe_model, get_predictor
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent

__all__ = ["InferenceSession", "SupersedableRun"]

log = logging.getLogger(__name__)


class SupersedableRun:
    """An iterator over one run's events that another thread can cancel safely.

    Iterate it from one thread (e.g. a napari ``thread_worker``); call
    :meth:`cancel` from any thread. A run that is not executing right now is closed
    at once (its store is consistent on return); one that is executing stops at
    its next batch boundary.
    """

    def __init__(
        self,
        events: Iterator[ProgressEvent],
        cancel: threading.Event,
        after: SupersedableRun | None = None,
        wait_s: float = 60.0,
    ) -> None:
        self._events = events
        self._cancel = cancel
        self._after = after
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._closed = False
        self.finished = threading.Event()

    def __iter__(self) -> SupersedableRun:
        return self

    def __next__(self) -> ProgressEvent:
        with self._lock:
            if self._closed:
                raise StopIteration
            if self._after is not None:
                # One writer at a time: let the superseded run reach its batch boundary.
                if not self._after.finished.wait(self._wait_s):
                    log.warning("previous viewport run did not stop within %.0f s", self._wait_s)
                self._after = None
            try:
                event = next(self._events)
            except BaseException:
                self._closed = True
                self.finished.set()
                raise
            if event.finished:  # the run's store work is over once its summary is out
                self.finished.set()
            return event

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop the run (now if idle, else at the next batch boundary)."""
        self._cancel.set()
        if self._lock.acquire(blocking=False):
            try:
                if not self._closed:
                    self._events.close()  # type: ignore[attr-defined]
                    self._closed = True
            finally:
                self._lock.release()
                self.finished.set()

    # ``close`` makes a SupersedableRun usable wherever a generator is expected.
    close = cancel


class InferenceSession:
    """Run viewport (and whole-slide) requests on one slide and store, newest first.

    Parameters
    ----------
    slide : str, Path or Pyramid
        The slide.
    store : str or Path
        Its label store (created on the first request).
    model : Any
        As in :class:`InferenceRequest`; loaded once for the whole session.
    **options
        Other :class:`InferenceRequest` fields (device, batch_size, overlap, ...).
    """

    def __init__(self, slide: Any, store: str | Path, model: Any = None, **options: Any) -> None:
        self.slide = slide
        self.store = Path(store)
        self.options = dict(options)
        self._model: Any = None
        self._current: SupersedableRun | None = None
        self._guard = threading.Lock()
        self.set_model(model)

    def set_model(self, model: Any) -> None:
        """Use another model from the next request on (its tiles are then recomputed)."""
        spec = describe_model(model)
        device = self.options.get("device", "auto")
        precision = self.options.get("precision", "auto")
        self._model = get_predictor(spec, device, precision)

    @property
    def model_id(self) -> str:
        """Identity of the session's model."""
        return self._model.info.model_id

    def request(
        self, region: Box | tuple[int, int, int, int] | None, **changes: Any
    ) -> InferenceRequest:
        """The request the session would run for ``region`` (level-0 pixels)."""
        fields = {"order": "center", "resume": True, **self.options, **changes}
        return InferenceRequest(
            slide=self.slide, store=self.store, model=self._model, region=region, **fields
        )

    def submit(
        self, region: Box | tuple[int, int, int, int] | None, **changes: Any
    ) -> SupersedableRun:
        """Start a run for ``region``, cancelling the one in flight.

        Returns
        -------
        SupersedableRun
            Iterate it to execute the run; it waits for the superseded run to stop.
        """
        request = self.request(region, **changes)
        with self._guard:
            previous = self._current
            if previous is not None:
                previous.cancel()
            cancel = threading.Event()
            run = SupersedableRun(run_inference(request, cancel=cancel), cancel, after=previous)
            self._current = run
        return run

    def cancel(self) -> None:
        """Cancel the run in flight, if any."""
        with self._guard:
            if self._current is not None:
                self._current.cancel()
