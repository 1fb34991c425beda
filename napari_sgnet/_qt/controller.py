"""The app controller: model, slide, runs and the layers that show them.

It owns no widgets. The dock widget calls its methods (one per control) and listens
to its signals; the GUI tests and the latency benchmark call the same methods.
Long work runs in napari thread workers; their events arrive here on the main
thread, which is the only one that touches layers.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal

from napari_sgnet._napari.session import (
    camera_of,
    current_view,
    default_store_path,
    layer_role,
    pyramid_from_layer,
    slide_transform,
)
from napari_sgnet._qt.display import LayerDisplay
from napari_sgnet._qt.workers import function_worker, inference_worker, preload, start_worker
from napari_sgnet.app.models import ModelChoice, choose_model, warm_up, working_downsample
from napari_sgnet.app.review import MAX_VIEW_TILES, ReviewSession, coarse_view_message
from napari_sgnet.app.viewport import visible_box
from napari_sgnet.errors import SlideError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.request import InferenceRequest, RequestError
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.palette import GLEASON, Palette, PaletteError

__all__ = ["AppController"]

log = logging.getLogger(__name__)

#: Errors whose message is meant for a person (no traceback needed).
USER_ERRORS = (RequestError, SlideError, PaletteError, ValueError, OSError)


class AppController(LayerDisplay, QObject):
    """State and actions of the napari-sgnet app for one viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    store_dir : str or Path, optional
        Folder for label stores (default: beside the slide, see ``default_store_path``).
    """

    status = Signal(str)
    progress = Signal(int, int)
    busy = Signal(bool)
    coarse_view = Signal(str)  # "" when the view is fine
    model_changed = Signal(str, str)  # summary, error
    session_changed = Signal()
    palette_changed = Signal(object)
    shown = Signal(object)  # the ProgressEvent whose tiles the layers now show

    VIEW_BATCH = 2
    SLIDE_BATCH = 8
    DEBOUNCE_MS = 400
    REFRESH_MS = 200

    def __init__(self, viewer: Any, *, store_dir: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.store_dir = Path(store_dir) if store_dir else None
        self.device = "auto"
        self.model: ModelChoice | None = None
        self.palette: Palette = GLEASON
        self._user_palette = False
        self.opacity = 0.5
        self.follow_view = True
        self.max_view_tiles = MAX_VIEW_TILES
        self.show_confidence = False
        self.slide_layer: Any = None
        self.slide: Any = None
        self.session: ReviewSession | None = None
        self.last_event: Any = None
        self._view_mode = False
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._queued: InferenceRequest | None = None
        self._region: Box | None = None
        self._done_region: Box | None = None
        self._last_shown: Any = None
        self._closed = False
        self._view_timer = QTimer(self, singleShot=True, interval=self.DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._on_view_settled)
        self._refresh_timer = QTimer(self, singleShot=True, interval=self.REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh_layers)
        start_worker(function_worker(preload))
        camera = camera_of(viewer)
        camera.events.center.connect(self._on_camera)
        camera.events.zoom.connect(self._on_camera)
        canvas = getattr(viewer, "canvas", None)  # a bigger window shows more slide
        if canvas is not None and hasattr(canvas.events, "size"):
            canvas.events.size.connect(self._on_camera)

    # ------------------------------------------------------------------ model
    def set_model(self, source: Any = None, *, warm: bool = True) -> bool:
        """Choose the model: ``None`` (bundled), a checkpoint folder or a predictor."""
        try:
            choice = choose_model(source)
        except (RequestError, ValueError) as exc:
            self.model = None
            self.model_changed.emit("", str(exc))
            return False
        self.model = choice
        self._done_region = None
        if not self._user_palette:
            self.set_palette(choice.info.palette, user=False)
        self.model_changed.emit(choice.summary, "")
        if warm:
            self._warm_up()
        return True

    def _warm_up(self) -> None:
        """Load the model onto the device on a worker (the engine caches it for the runs)."""
        worker = function_worker(warm_up, self.model, self.device)
        worker.returned.connect(self._on_warm)
        worker.errored.connect(self.report_error)
        start_worker(worker)

    def _on_warm(self, device: str) -> None:
        if not self.running:  # a run reports its own progress
            self.status.emit(f"Model ready on {device}.")

    def set_device(self, device: str) -> None:
        """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"`` for the next runs."""
        self.device = device
        self._done_region = None
        if self.model is not None:
            self._warm_up()

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
            self.status.emit("Open a slide first (File > Open, or File > Open Sample).")
            return False
        if layer is self.slide_layer and self.slide is not None:
            return True
        if self.session is not None and self.session.edit is not None:
            self.status.emit("Commit or discard the open edit before switching slides.")
            return False
        self.slide_layer, self.slide = layer, pyramid_from_layer(layer)
        self.session, self._done_region = None, None
        path = default_store_path(self.slide, self.store_dir)
        shown = self.layer("prediction")  # e.g. a store opened with File > Open
        if shown is not None:
            shown_path = Path(shown.metadata["napari_sgnet"].get("store", ""))
            if LabelStore.is_store(shown_path):
                path = shown_path
        if LabelStore.is_store(path):
            self.open_store(path)
        return True

    @property
    def store_path(self) -> Path | None:
        """The label store of the current slide (it may not exist yet)."""
        if self.session is not None:
            return self.session.store.path
        return default_store_path(self.slide, self.store_dir) if self.slide is not None else None

    def open_store(self, path: str | Path, *, check: bool = True) -> Any:
        """Open a slide's label store, show it, and restore an autosaved edit.

        With ``check`` the store is verified to belong to the slide first; that reads
        a window of the slide, so it happens on a worker and this returns the worker.
        Without (the engine has just checked it), the store opens here at once.
        """
        if not check:
            self._set_store(LabelStore.open(path))
            return None
        worker = function_worker(LabelStore.open, Path(path), slide=self.slide)
        worker.returned.connect(self._set_store)
        worker.errored.connect(self.report_error)
        start_worker(worker)
        return worker

    def _set_store(self, store: LabelStore) -> None:
        if self._closed:
            return
        scale, translate = slide_transform(self.slide_layer)
        self.session = ReviewSession(self.slide, store, slide_scale=scale,
                                     slide_translate=translate)
        self.ensure_layers()
        self.session_changed.emit()

    # ------------------------------------------------------------------ running
    def view_box(self) -> Box:
        """The visible region in slide level-0 pixels."""
        scale, translate = slide_transform(self.slide_layer)
        return visible_box(current_view(self.viewer), scale=scale, translate=translate,
                           image_size=(self.slide.height, self.slide.width))

    def coarse_message(self) -> str | None:
        """Why the view is too zoomed out to run on, or ``None``."""
        if self.slide is None or self.model is None:
            return None
        scale, _ = slide_transform(self.slide_layer)
        info = self.model.info
        return coarse_view_message(
            current_view(self.viewer), self.view_box(), scale,
            working_downsample(self.slide, info), info.patch_size, self.max_view_tiles,
        )

    def _ready(self) -> bool:
        if self.model is None:
            self.status.emit("Choose a model first (bundled, or a checkpoint folder).")
            return False
        return self.attach()

    def run_on_view(self, *, force: bool = False, auto: bool = False) -> bool:
        """Predict the visible region (centre first); False when nothing was started."""
        if not self._ready():
            return False
        box = self.view_box()
        if box.is_empty:
            self.status.emit("The view shows no part of the slide.")
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
        elif (self._done_region is not None and self._done_region.contains(box)) or (
            self._worker is not None and self._region is not None and self._region.contains(box)
        ):
            return False
        self._submit(self._request(box, "center", self.VIEW_BATCH))
        return True

    def run_whole_slide(self) -> bool:
        """Predict the whole slide (resumes where an earlier run stopped)."""
        if not self._ready():
            return False
        self._view_mode = False
        self.coarse_view.emit("")
        self._submit(self._request(None, "raster", self.SLIDE_BATCH))
        return True

    def _request(self, region: Box | None, order: str, batch: int) -> InferenceRequest:
        return InferenceRequest(
            slide=self.slide, store=self.store_path, model=self.model.request_model,
            region=region, device=self.device, batch_size=batch, order=order,
        )

    @property
    def running(self) -> bool:
        """True while an inference worker runs."""
        return self._worker is not None

    def _submit(self, request: InferenceRequest) -> None:
        if self._worker is not None:  # supersede: stop the running one, then start this
            self._queued = request
            if self._cancel is not None:
                self._cancel.set()
            return
        self._cancel = threading.Event()
        worker = inference_worker(request, self._cancel)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self.report_error)
        worker.finished.connect(self._on_finished)
        self._worker, self._region = worker, request.region
        self.busy.emit(True)
        what = "the view" if request.region is not None else "the whole slide"
        self.status.emit(f"Running on {what}...")
        start_worker(worker)

    def cancel(self) -> None:
        """Stop the running job between batches (finished tiles stay in the store)."""
        self._queued = None
        if self._cancel is not None:
            self._cancel.set()
            self.status.emit("Cancelling...")

    def _on_event(self, ev: Any) -> None:
        if self._closed:  # the window is gone; the store has the tiles anyway
            return
        self.last_event = ev
        if ev.stage == "started":
            if self.session is None or self.session.store.path != Path(ev.store):
                self.open_store(ev.store, check=False)  # the engine checked it
            else:
                self.ensure_layers()
            self.progress.emit(0, max(ev.tiles_total, 1))
            cached = f" ({ev.tiles_cached} already done)" if ev.tiles_cached else ""
            self.status.emit(f"Predicting {ev.tiles_total} tiles{cached}...")
            return
        self.progress.emit(ev.tiles_done, max(ev.tiles_total, 1))
        if ev.boxes or ev.finished:
            self._last_shown = ev
            if ev.finished:
                self._refresh_timer.stop()
                self.refresh_layers()
            elif not self._refresh_timer.isActive():
                self._refresh_timer.start()
        if ev.finished:
            if ev.stage == "completed" and self._region is not None:
                self._done_region = self._region
            verb = "Done" if ev.stage == "completed" else "Stopped"
            self.status.emit(
                f"{verb}: {ev.tiles_done} of {ev.tiles_total} tiles in {ev.elapsed_s:.1f} s "
                f"({ev.mpix_per_s:.2f} Mpx/s)."
            )

    def _on_finished(self) -> None:
        self._worker = self._cancel = None
        if self._queued is not None and not self._closed:
            request, self._queued = self._queued, None
            self._submit(request)
        else:
            self.busy.emit(False)

    def report_error(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, USER_ERRORS):
            log.error("napari-sgnet error", exc_info=exc)
        self.status.emit(message)
        show_error(message)

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
        """Stop timers and the running job (called when the window or the dock closes)."""
        self._closed = True
        self._view_timer.stop()
        self._refresh_timer.stop()
        self.cancel()
