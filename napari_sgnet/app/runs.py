"""The app's inference runs: the newest request wins, one writer per store, off the main thread.

:class:`ViewportRuns` is what the dock's "Run on view", "Run whole slide", the camera
follower and "Cancel" go through. The superseding itself is
:class:`~napari_sgnet.inference.session.InferenceSession` (a new request cancels the run
in flight, which stops at its next batch boundary, leaving the store consistent); this class
adds what an app needs around it:

- :meth:`ViewportRuns.ticket` (main thread, instant) makes a request the current one;
  :meth:`ViewportRuns.events` (a worker thread) builds or re-targets the session (loading
  the model there, never on the main thread), submits the request, waits for the
  superseded run to stop, then yields the new run's events;
- a request superseded or cancelled before its worker started never starts (no empty
  "cancelled" run is recorded in the store);
- a change of slide, store or device starts a new session whose first run still waits for
  the previous session's run to stop;
- :meth:`ViewportRuns.covers` tells the camera follower that a view needs no new run (its
  region was finished, or is being predicted now).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.models import ModelSpec
from napari_sgnet.inference.request import ProgressEvent
from napari_sgnet.inference.session import InferenceSession, SupersedableRun
from napari_sgnet.inference.tissue import tissue_mask
from napari_sgnet.io.labelstore.meta import slide_identity
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["RunTicket", "ViewportRuns", "prime_slide"]

log = logging.getLogger(__name__)


def prime_slide(slide: Any) -> bool:
    """Compute ahead what the first run on ``slide`` reads before its first tile.

    That is the slide's fingerprint (recorded in a new store, checked against an existing
    one) and its tissue mask (which tiles are glass). Both are computed once per slide and
    process and cached by the slide's content token, so calling this on a worker when the
    slide is attached takes them off the first "Run on view"; a run that starts while they
    are still being computed waits for them instead of computing them twice. They are the
    same values the run would compute, so results do not change.

    Parameters
    ----------
    slide : Pyramid
        The slide (anything else is ignored).

    Returns
    -------
    bool
        True when both were computed (or cached already); False for a slide that is not a
        :class:`~napari_sgnet.io.pyramid.Pyramid` or could not be read (the run reports
        that itself).
    """
    if not isinstance(slide, Pyramid):
        return False
    try:
        slide_identity(slide)
        tissue_mask(slide)
    except Exception as exc:  # best effort: the run itself says what is wrong
        log.debug("priming %s failed: %s", slide.name, exc, exc_info=exc)
        return False
    return True


@dataclass(eq=False)
class RunTicket:
    """One request of the app: what to run, and how far it got.

    Attributes
    ----------
    seq : int
        Position in the order of requests (the newest ticket is the current one).
    slide : Pyramid or path
        The slide.
    store : Path
        Its label store.
    model : ModelSpec
        The model.
    region : Box or None
        Slide level-0 region, ``None`` for the whole slide.
    device : str
        Where the model runs.
    options : dict
        Other :class:`~napari_sgnet.inference.request.InferenceRequest` fields (batch size,
        tile order).
    last_event : ProgressEvent or None
        The newest event of the run (set by :meth:`ViewportRuns.record`).
    ended : bool
        The run's worker has finished (set by :meth:`ViewportRuns.end`).
    """

    seq: int
    slide: Any
    store: Path
    model: ModelSpec
    region: Box | None
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    last_event: ProgressEvent | None = None
    ended: bool = False
    run: SupersedableRun | None = field(default=None, repr=False)


class ViewportRuns:
    """Newest-wins inference runs for the app (see the module docstring).

    Parameters
    ----------
    wait_s : float
        How long a new run waits for the superseded one to reach its batch boundary.
    """

    def __init__(self, wait_s: float = 60.0) -> None:
        self.wait_s = float(wait_s)
        self._counter = itertools.count(1)
        self._seq = 0  # the newest ticket's seq (written on the main thread only)
        self._cancelled_upto = 0  # tickets up to this seq must not run
        self._current: RunTicket | None = None
        self._lock = threading.Lock()  # taken on worker threads only
        self._session: InferenceSession | None = None
        self._session_key: tuple[Any, ...] | None = None
        self._last: SupersedableRun | None = None
        self.done_region: Box | None = None

    # ------------------------------------------------------------------ main thread
    def ticket(
        self,
        slide: Any,
        store: str | Path,
        model: ModelSpec,
        region: Box | None,
        *,
        device: str = "auto",
        **options: Any,
    ) -> RunTicket:
        """Make a request the current one (instant; call :meth:`events` on a worker)."""
        ticket = RunTicket(next(self._counter), slide, Path(store), model, region, device,
                           dict(options))
        self._seq, self._current = ticket.seq, ticket
        return ticket

    @property
    def current(self) -> RunTicket | None:
        """The newest ticket (``None`` before the first)."""
        return self._current

    def is_current(self, ticket: RunTicket) -> bool:
        """True for the newest ticket: only its events drive progress and status."""
        return ticket.seq == self._seq

    @property
    def running(self) -> bool:
        """True while the current ticket's worker has not finished."""
        return self._current is not None and not self._current.ended

    def record(self, ticket: RunTicket, event: ProgressEvent) -> None:
        """Note an event of ``ticket`` (a finished region is remembered by :meth:`covers`)."""
        ticket.last_event = event
        if event.stage == "completed" and ticket.region is not None and self.is_current(ticket):
            self.done_region = ticket.region

    def end(self, ticket: RunTicket) -> None:
        """Note that the worker of ``ticket`` has finished."""
        ticket.ended = True

    def covers(self, box: Box) -> bool:
        """True when ``box`` needs no new run: finished already, or being predicted now."""
        if self.done_region is not None and self.done_region.contains(box):
            return True
        current = self._current
        return (self.running and current is not None and current.region is not None
                and current.region.contains(box))

    def invalidate(self) -> None:
        """Forget the finished region (the model, device or slide changed)."""
        self.done_region = None

    # ------------------------------------------------------------------ any thread
    def cancel(self) -> None:
        """Stop the current run at its next batch boundary; a ticket not started never starts.

        Cancelling a run that is between batches closes it at once, which writes its last
        tiles: call this from a worker thread, not the main thread.
        """
        self._cancelled_upto = self._seq
        run = self._last
        if run is not None:
            run.cancel()

    # ------------------------------------------------------------------ worker thread
    def _session_for(self, ticket: RunTicket) -> InferenceSession:
        """The session for ``ticket``, built (loading the model) or re-targeted here."""
        key = (id(ticket.slide), ticket.store, ticket.device)
        session = self._session
        if session is None or self._session_key != key or session.slide is not ticket.slide:
            if session is not None:
                session.cancel()
            self._session = InferenceSession(ticket.slide, ticket.store, ticket.model,
                                             device=ticket.device)
            self._session_key = key
            return self._session
        if session.model_id != ticket.model.info.model_id:
            session.set_model(ticket.model)  # its tiles are recomputed, edits kept
        return session

    def events(self, ticket: RunTicket) -> Iterator[ProgressEvent]:
        """Run ``ticket`` (on a worker thread), yielding its progress events.

        Yields nothing when the ticket was superseded or cancelled before it started.

        Raises
        ------
        RequestError, SlideError, StoreError
            For a bad request, slide or store (from the first ``next()``).
        """
        with self._lock:
            if ticket.seq != self._seq or ticket.seq <= self._cancelled_upto:
                return
            previous = self._last
            session = self._session_for(ticket)
            run = session.submit(ticket.region, **ticket.options)  # cancels the run in flight
            ticket.run = self._last = run
        if ticket.seq <= self._cancelled_upto:  # "Cancel" came while the model loaded
            run.cancel()
        if previous is not None:
            previous.cancel()  # a run of an earlier session (same session: already cancelled)
            if not previous.finished.wait(self.wait_s):
                log.warning("the superseded run did not stop within %.0f s", self.wait_s)
        yield from run
