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

from napari_sgnet._napari.session import (
    PLACEHOLDER_KEY,
    layer_role,
    pyramid_from_layer,
    slide_transform,
)
from napari_sgnet._qt.display import LayerDisplay
from napari_sgnet._qt.workers import (
    function_worker,
    generator_worker,
    original_error,
    preload,
    start_worker,
)
from napari_sgnet.app.models import ModelChoice, warm_up, working_downsample
from napari_sgnet.app.review import MAX_VIEW_TILES, ReviewSession, coarse_view_message
from napari_sgnet.app.runs import RunTicket, prime_slide
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
        self._model_warm = False  # a model has been loaded once (placeholders from then on)
        self._workers: dict[int, Any] = {}  # ticket seq -> its worker, while it runs
        self._opening: dict[Path, Any] = {}  # store path -> the worker opening it
        self._last_shown: Any = None
        self._shown_seq = 0  # the run whose tiles were last shown
        self._closed = False
        self._view_timer = QTimer(self, singleShot=True, interval=self.DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._on_view_settled)
        self._refresh_timer = QTimer(self, singleShot=True, interval=self.REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh_layers)
        worker = function_worker(preload)
        worker.errored.connect(lambda exc: log.warning("preloading failed: %s", exc))
        start_worker(worker)
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
        # several slides: the dock follows the selected one, and forgets one that is removed
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        viewer.layers.events.removed.connect(self._on_layers_removed)

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
        if self._closed:
            return
        if not self.running:  # a run reports its own progress
            self.say(f"Model ready on {device}.")
        # The empty prediction layer of a slide not yet predicted, made now rather than
        # while the model loads (napari's layer creation and the load share the cores).
        self._model_warm = True
        path = self.state.store_path
        if self.session is None and self.slide_layer is not None and path is not None \
                and not LabelStore.is_store(path):
            self.ensure_placeholder(path)

    # ------------------------------------------------------------------ slide / store
    @staticmethod
    def _is_slide(layer: Any) -> bool:
        from napari.layers import Image

        return isinstance(layer, Image) and layer_role(layer) is None

    def _find_slide_layer(self) -> Any:
        """The selected slide, else the slide in use, else the only visible one, else the first.

        A slide is an image layer that napari-sgnet did not make.
        """
        active = self.viewer.layers.selection.active
        if self._is_slide(active):
            return active
        if self.slide_layer is not None and self.slide_layer in self.viewer.layers:
            return self.slide_layer
        slides = [layer for layer in self.viewer.layers if self._is_slide(layer)]
        visible = [layer for layer in slides if layer.visible]
        if len(visible) == 1:
            return visible[0]
        return slides[0] if slides else None

    def _on_active_layer(self, event: Any = None) -> None:
        """The selection changed: follow it when it is another slide."""
        layer = self.viewer.layers.selection.active
        if self._closed or not self._is_slide(layer) or layer is self.slide_layer:
            return
        if self.model is None and self.slide_layer is None:
            return  # nothing to show yet: attach when a run needs it
        self.attach(layer)

    def _on_layers_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if self._closed or layer is None or not self._is_slide(layer):
            return
        # later: a window closing removes every layer first (``viewer.close()``) and only
        # then asks about an open edit; its slide's session must still be there for that
        QTimer.singleShot(0, lambda: self._slide_removed(layer))

    def _slide_removed(self, layer: Any) -> None:
        if self._closed or layer in self.viewer.layers:
            return
        self.state.forget_slide(layer.unique_id)
        if layer is self.slide_layer:
            session = self.session
            if session is not None and session.edit is not None and session.edit.dirty:
                session.autosave(force=True)  # it comes back with the slide
            self.slide_layer = None
            self.state.set_slide(None)

    def attach(self, layer: Any = None) -> bool:
        """Use ``layer`` (default: the slide in the viewer) and reopen its store if any.

        Each slide layer keeps its own store, layers and review state: switching back to a
        slide shown before restores them.
        """
        layer = layer or self._find_slide_layer()
        if layer is None:
            self.say("Open a slide first (File > Open, or File > Open Sample).")
            return False
        if layer is self.slide_layer and self.slide is not None:
            return True
        if self.session is not None and self.session.edit is not None:
            self.say("Commit or discard the open edit before switching slides.")
            return False
        key = layer.unique_id
        context = self.state.context(key)
        scale, translate = slide_transform(layer)
        self.slide_layer = layer
        slide = context.slide if context is not None else pyramid_from_layer(layer)
        self.state.set_slide(slide, scale=scale, translate=translate, key=key)
        if context is None:  # fingerprint + tissue mask now, not on the first run's path
            start_worker(function_worker(prime_slide, slide))
        if self.session is not None:  # restored: its layers are there (or come back)
            return True
        path = self.state.store_path
        shown = self._unclaimed_prediction_layer()  # e.g. a store opened with File > Open
        if shown is not None:
            shown_path = Path(shown.metadata["napari_sgnet"].get("store", ""))
            if LabelStore.is_store(shown_path):
                path = shown_path
        if path is not None and LabelStore.is_store(path):
            self.open_store(path, quiet=shown is not None and path != self.state.store_path)
        elif path is not None and self._model_warm:
            self.ensure_placeholder(path)  # the layer the first run's tiles will fill
        return True

    def _unclaimed_prediction_layer(self) -> Any:
        """A prediction layer that came with a store opened on its own, not yet any slide's."""
        claimed = {str(s.store.path) for s in self.state.sessions()}
        for candidate in self.viewer.layers:
            meta = (getattr(candidate, "metadata", {}) or {}).get("napari_sgnet") or {}
            if (meta.get("role") == "prediction" and meta.get("store") not in claimed
                    and not meta.get(PLACEHOLDER_KEY)):
                return candidate
        return None

    def open_store(self, path: str | Path, *, check: bool = True, quiet: bool = False) -> Any:
        """Open a slide's label store on a worker, show it, and restore an autosaved edit.

        With ``check`` the store is verified to belong to the slide first (that reads a
        window of the slide); without, the engine has just checked it. Opening reads the
        store's records and review state, so it never happens on the main thread; this
        returns the worker. ``quiet``: a store that is not the slide's is not an error
        (a store opened on its own, which may be another slide's).
        """
        slide, transform = self.slide, self.state.slide_transform
        path = Path(path)
        if path in self._opening:
            return self._opening[path]
        worker = function_worker(open_review_session, slide, path, transform=transform,
                                 check=check)
        worker.returned.connect(self._set_session)
        if quiet:
            worker.errored.connect(lambda exc: log.info("not this slide's store: %s", exc))
        else:
            worker.errored.connect(self.report_error)
        worker.finished.connect(lambda: self._opening.pop(path, None))
        self._opening[path] = worker
        start_worker(worker)
        return worker

    def _set_session(self, session: ReviewSession) -> None:
        if self._closed:
            return
        if session.slide is self.slide:
            if self.session is None or self.session.store.path != session.store.path:
                self.state.set_session(session)
            return
        self.state.keep_session(session)  # a slide left since: it is there when it comes back

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

    @property
    def whole_slide_run(self) -> bool:
        """True when the latest run is of the whole slide (not of the view)."""
        return not self._view_mode

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
        worker = function_worker(self.runs.cancel)  # closing a run writes: not here
        worker.errored.connect(self.report_error)
        start_worker(worker)

    def _on_event(self, ticket: RunTicket, ev: Any) -> None:
        if self._closed:  # the window is gone; the store has the tiles anyway
            return
        self.runs.record(ticket, ev)
        current = self.runs.is_current(ticket)
        session = self.session
        if session is None or Path(session.store.path) != Path(ev.store):
            if not (current and ticket.slide is self.slide):
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
            if (ev.finished and current) or ticket.seq != self._shown_seq:
                self._shown_seq = ticket.seq  # a run's first tiles show at once, then batched
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
            self._view_mode = False  # a failing run is not repeated on every pan: once is enough
            self._view_timer.stop()
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
        failure = report_failure(original_error(exc), log, "napari-sgnet dock")
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
        for emitter, slot in ((self.viewer.layers.selection.events.active, self._on_active_layer),
                              (self.viewer.layers.events.removed, self._on_layers_removed)):
            try:
                emitter.disconnect(slot)
            except (RuntimeError, TypeError, ValueError):  # already gone with the viewer
                pass
        self.runs.cancel()  # on the main thread: the window is closing, nothing to keep fluid
