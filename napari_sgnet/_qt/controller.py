"""The dock's controller: runs, the camera follower and the layers that show an :class:`AppState`.

It owns no widgets and no shared state: the model, device, slide, store, session and palette
live in the viewer's :class:`~napari_sgnet.app.state.AppState`, which the controller observes
(and changes on the person's behalf). Runs go through the state's
:class:`~napari_sgnet.app.runs.ViewportRuns` (the tested newest-wins logic) on napari thread
workers; their events arrive here on the main thread, the only one that touches layers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal

from napari_sgnet._napari.session import layer_role, pyramid_from_layer, slide_transform
from napari_sgnet._qt.display import LayerDisplay
from napari_sgnet._qt.workers import function_worker, generator_worker, preload, start_worker
from napari_sgnet.app.models import ModelChoice, warm_up, working_downsample
from napari_sgnet.app.review import MAX_VIEW_TILES, ReviewSession, coarse_view_message
from napari_sgnet.app.runs import RunTicket
from napari_sgnet.app.state import AppState, open_review_session
from napari_sgnet.app.viewport import camera_of, view_of_viewer, visible_box
from napari_sgnet.errors import report_failure
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = ["AppController"]

log = logging.getLogger(__name__)


class AppController(LayerDisplay, QObject):
    """Runs and layers of the napari-sgnet dock for one viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    state : AppState
        The viewer's app state (see :func:`napari_sgnet.app.state.state_for`).
    """

    status = Signal(str)
    progress = Signal(int, int)
    busy = Signal(bool)
    coarse_view = Signal(str)  # "" when the view is fine
    shown = Signal(object)  # the ProgressEvent whose tiles the layers now show

    VIEW_BATCH = 2
    SLIDE_BATCH = 8
    DEBOUNCE_MS = 400
    REFRESH_MS = 200

    def __init__(self, viewer: Any, state: AppState) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = state
        self.runs = state.runs
        self.opacity = 0.5
        self.follow_view = True
        self.max_view_tiles = MAX_VIEW_TILES
        self.show_confidence = False
        self.slide_layer: Any = None
        self._view_mode = False
        self._workers: dict[int, Any] = {}  # ticket seq -> its worker, while it runs
        self._last_shown: Any = None
        self._closed = False
        self._view_timer = QTimer(self, singleShot=True, interval=self.DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._on_view_settled)
        self._refresh_timer = QTimer(self, singleShot=True, interval=self.REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh_layers)
        start_worker(function_worker(preload))
        ev = state.events
        ev.model.connect(self._on_model)
        ev.device.connect(self._on_device)
        ev.session.connect(self._on_session)
        ev.palette.connect(self.apply_palette)
        camera = camera_of(viewer)
        camera.events.center.connect(self._on_camera)
        camera.events.zoom.connect(self._on_camera)
        canvas = getattr(viewer, "canvas", None)  # a bigger window shows more slide
        if canvas is not None and hasattr(canvas.events, "size"):
            canvas.events.size.connect(self._on_camera)

    # ------------------------------------------------------------------ state views
    @property
    def model(self) -> ModelChoice | None:
        """The state's current model."""
        return self.state.model

    @property
    def slide(self) -> Pyramid | None:
        """The state's slide."""
        return self.state.slide

    @property
    def session(self) -> ReviewSession | None:
        """The state's review session."""
        return self.state.session

    @property
    def palette(self) -> Palette:
        """The state's palette."""
        return self.state.palette

    @property
    def store_path(self) -> Path | None:
        """The label store of the current slide (it may not exist yet)."""
        return self.state.store_path

    @property
    def last_event(self) -> Any:
        """The newest event of the current run."""
        current = self.runs.current
        return current.last_event if current is not None else None

    @property
    def running(self) -> bool:
        """True while the current run's worker runs."""
        return self.runs.running

    def say(self, message: str) -> None:
        """Show ``message`` in the dock's status line."""
        self.status.emit(message)

    # ------------------------------------------------------------------ model / device
    def _on_model(self, choice: ModelChoice) -> None:
        self._warm_up()

    def _on_device(self, device: str) -> None:
        if self.model is not None:
            self._warm_up()

    def _warm_up(self) -> None:
        """Load the model onto the device on a worker (the engine caches it for the runs)."""
        worker = function_worker(warm_up, self.model, self.state.device)
        worker.returned.connect(self._on_warm)
        worker.errored.connect(self.report_error)
        start_worker(worker)

    def _on_warm(self, device: str) -> None:
        if not self.running and not self._closed:  # a run reports its own progress
            self.say(f"Model ready on {device}.")

    # ------------------------------------------------------------------ slide / store
    def _find_slide_layer(self) -> Any:
        """The selected image layer, else the slide in use, else the first image layer."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and layer_role(active) is None:
            return active
        if self.slide_layer is not None and self.slide_layer in self.viewer.layers:
            return self.slide_layer
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and layer_role(layer) is None:
                return layer
        return None

    def attach(self, layer: Any = None) -> bool:
        """Use ``layer`` (default: the slide in the viewer) and reopen its store if any."""
        layer = layer or self._find_slide_layer()
        if layer is None:
            self.say("Open a slide first (File > Open, or File > Open Sample).")
            return False
        if layer is self.slide_layer and self.slide is not None:
            return True
        if self.session is not None and self.session.edit is not None:
            self.say("Commit or discard the open edit before switching slides.")
            return False
        scale, translate = slide_transform(layer)
        self.slide_layer = layer
        self.state.set_slide(pyramid_from_layer(layer), scale=scale, translate=translate)
        path = self.state.store_path
        shown = self.layer("prediction")  # e.g. a store opened with File > Open
        if shown is not None:
            shown_path = Path(shown.metadata["napari_sgnet"].get("store", ""))
            if LabelStore.is_store(shown_path):
                path = shown_path
        if path is not None and LabelStore.is_store(path):
            self.open_store(path)
        return True

    def open_store(self, path: str | Path, *, check: bool = True) -> Any:
        """Open a slide's label store, show it, and restore an autosaved edit.

        With ``check`` the store is verified to belong to the slide first; that reads
        a window of the slide, so it happens on a worker and this returns the worker.
        Without (the engine has just checked it), the store opens here at once.
        """
        slide, transform = self.slide, self.state.slide_transform
        if not check:
            self._set_session(open_review_session(slide, path, transform=transform, check=False))
            return None
        worker = function_worker(open_review_session, slide, Path(path), transform=transform)
        worker.returned.connect(self._set_session)
        worker.errored.connect(self.report_error)
        start_worker(worker)
        return worker

    def _set_session(self, session: ReviewSession) -> None:
        if not self._closed and session.slide is self.slide:  # not for a slide left since
            self.state.set_session(session)

    def _on_session(self, session: ReviewSession | None) -> None:
        if session is not None:
            self.ensure_layers()

    # ------------------------------------------------------------------ running
    def view_box(self) -> Box:
        """The visible region in slide level-0 pixels."""
        scale, translate = self.state.slide_transform
        slide = self.slide
        assert slide is not None
        return visible_box(view_of_viewer(self.viewer), scale=scale, translate=translate,
                           image_size=(slide.height, slide.width))

    def coarse_message(self) -> str | None:
        """Why the view is too zoomed out to run on, or ``None``."""
        if self.slide is None or self.model is None:
            return None
        info = self.model.info
        return coarse_view_message(
            view_of_viewer(self.viewer), self.view_box(), self.state.slide_transform[0],
            working_downsample(self.slide, info), info.patch_size, self.max_view_tiles,
        )

    def _ready(self) -> bool:
        if self.model is None:
            self.say("Choose a model first (bundled, or a checkpoint folder).")
            return False
        return self.attach()

    def run_on_view(self, *, force: bool = False, auto: bool = False) -> bool:
        """Predict the visible region (centre first); False when nothing was started."""
        if not self._ready():
            return False
        box = self.view_box()
        if box.is_empty:
            self.say("The view shows no part of the slide.")
            return False
        message = None if force else self.coarse_message()
        self.coarse_view.emit(message or "")
        if message:
            if not auto:
                show_info(message)
            return False
        self._view_mode = True
        if not auto:
            self._view_timer.stop()  # this run already covers any pending camera move
        elif self.runs.covers(box):
            return False
        self._submit(box, "center", self.VIEW_BATCH)
        return True

    def run_whole_slide(self) -> bool:
        """Predict the whole slide (resumes where an earlier run stopped)."""
        if not self._ready():
            return False
        self._view_mode = False
        self.coarse_view.emit("")
        self._submit(None, "raster", self.SLIDE_BATCH)
        return True

    def _submit(self, region: Box | None, order: str, batch: int) -> None:
        """Start a run that supersedes the one in flight (see :class:`ViewportRuns`)."""
        model, path = self.model, self.store_path
        assert model is not None and path is not None
        ticket = self.runs.ticket(self.slide, path, model.request_model, region,
                                  device=self.state.device, batch_size=batch, order=order)
        worker = generator_worker(self.runs.events, ticket)
        worker.yielded.connect(lambda ev, t=ticket: self._on_event(t, ev))
        worker.errored.connect(lambda exc, t=ticket: self._on_error(t, exc))
        worker.finished.connect(lambda t=ticket: self._on_finished(t))
        self._workers[ticket.seq] = worker
        self.busy.emit(True)
        self.say(f"Running on {'the view' if region is not None else 'the whole slide'}...")
        start_worker(worker)

    def cancel(self) -> None:
        """Stop the running job between batches (finished tiles stay in the store)."""
        if self.runs.running:
            self.say("Cancelling...")
        start_worker(function_worker(self.runs.cancel))  # closing a run writes: not here

    def _on_event(self, ticket: RunTicket, ev: Any) -> None:
        if self._closed:  # the window is gone; the store has the tiles anyway
            return
        self.runs.record(ticket, ev)
        current = self.runs.is_current(ticket)
        session = self.session
        if session is None or Path(session.store.path) != Path(ev.store):
            if not (current and ev.stage == "started" and ticket.slide is self.slide):
                return  # a superseded run on a slide left since
            self.open_store(ev.store, check=False)  # the engine has just checked it
        elif ev.stage == "started":
            self.ensure_layers()
        if current:
            self.progress.emit(ev.tiles_done, max(ev.tiles_total, 1))
        if ev.stage == "started":
            if current:
                cached = f" ({ev.tiles_cached} already done)" if ev.tiles_cached else ""
                self.say(f"Predicting {ev.tiles_total} tiles{cached}...")
            return
        if ev.boxes or ev.finished:
            self._last_shown = ev
            if ev.finished and current:
                self._refresh_timer.stop()
                self.refresh_layers()
            elif not self._refresh_timer.isActive():
                self._refresh_timer.start()
        if ev.finished and current:
            verb = "Done" if ev.stage == "completed" else "Stopped"
            self.say(f"{verb}: {ev.tiles_done} of {ev.tiles_total} tiles in {ev.elapsed_s:.1f} s "
                     f"({ev.mpix_per_s:.2f} Mpx/s).")

    def _on_error(self, ticket: RunTicket, exc: BaseException) -> None:
        if self.runs.is_current(ticket):
            self.report_error(exc)
        else:
            log.warning("a superseded run failed: %s", exc, exc_info=exc)

    def _on_finished(self, ticket: RunTicket) -> None:
        self.runs.end(ticket)
        self._workers.pop(ticket.seq, None)
        if self.runs.is_current(ticket) and not self._closed:
            self.busy.emit(False)

    def report_error(self, exc: BaseException) -> None:
        """Show a failure: a user error as its message; anything else logged with its traceback."""
        failure = report_failure(exc, log, "napari-sgnet dock")
        self.say(failure.message)
        show_error(failure.message)

    # ------------------------------------------------------------------ camera
    def _on_camera(self, event: Any = None) -> None:
        self._view_timer.start()

    def _on_view_settled(self) -> None:
        if self._closed:
            return
        if self.slide is None or self.model is None or self.slide_layer not in self.viewer.layers:
            return
        if self.follow_view and self._view_mode:
            self.run_on_view(auto=True)
        else:
            self.coarse_view.emit(self.coarse_message() or "")

    def shutdown(self) -> None:
        """Stop timers, the running job and listening to the state (window or dock closing)."""
        if self._closed:
            return
        self._closed = True
        self._view_timer.stop()
        self._refresh_timer.stop()
        ev = self.state.events
        for signal, slot in ((ev.model, self._on_model), (ev.device, self._on_device),
                             (ev.session, self._on_session), (ev.palette, self.apply_palette)):
            signal.disconnect(slot)
        self.runs.cancel()  # on the main thread: the window is closing, nothing to keep fluid
