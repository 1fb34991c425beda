"""Review actions: edit region, commit, discard, autosave, next uncertain region, close guard.

The state lives in :class:`~napari_sgnet.app.review.ReviewSession`; this class
shows it (the edit layer, the camera) and runs the slow parts on worker threads.
Edits are never lost silently: an autosave runs every few seconds while the crop
has unsaved changes, discarding asks first, and closing the window with an
uncommitted edit asks whether to commit it or keep it for later.
"""

from __future__ import annotations

import getpass
import logging
from typing import Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QWidget

from napari_sgnet._napari.session import edit_layer_data, layer_role, slide_transform
from napari_sgnet._qt import dialogs
from napari_sgnet._qt.controller import AppController
from napari_sgnet._qt.review_controls import watch_edit_layer
from napari_sgnet._qt.workers import function_worker, start_worker
from napari_sgnet.app.review import ERASER_UNLABELLED, EditRegion, ReviewError, ReviewSession
from napari_sgnet.app.viewport import camera_of, view_of_viewer

__all__ = ["AUTOSAVE_MS", "ReviewActions"]

log = logging.getLogger(__name__)

#: Autosave period while an edit has unsaved changes.
AUTOSAVE_MS = 5000


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in some containers
        return None


class ReviewActions(QObject):
    """Edit / commit / discard / next-uncertain for an :class:`AppController`.

    Parameters
    ----------
    controller : AppController
        The app controller (model, slide, session, layers).
    parent_widget : QWidget, optional
        Parent for dialogs.
    """

    edit_changed = Signal(bool)
    committed = Signal(object)  # the commit record
    region_shown = Signal(object)  # the region "Next uncertain region" went to, or None
    label_changed = Signal(int)  # the palette label the edit layer's brush paints
    brush_changed = Signal(str)  # the brush size, in label pixels and µm
    undone = Signal(object)  # the undone commit ({"box", "time", "left"})

    def __init__(self, controller: AppController, parent_widget: QWidget | None = None) -> None:
        super().__init__()
        self.c = controller
        self.viewer = controller.viewer
        self.parent_widget = parent_widget
        self.selected_label = 1
        #: What the eraser means at commit (see ``napari_sgnet.app.review.ERASER_MEANINGS``).
        self.eraser = ERASER_UNLABELLED
        self._committing = False
        self._autosaving = False
        self._closing = False  # the person has answered the close question (or none was needed)
        self._shut = False
        self._autosave_timer = QTimer(self, interval=AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave_now)
        controller.state.events.session.connect(self._on_session)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def session(self) -> Any:
        """The controller's review session (``None`` before the first run)."""
        return self.c.session

    def shutdown(self) -> None:
        """Stop the autosave timer and listening to the app state and the layers."""
        if self._shut:
            return
        self._shut = True
        self._autosave_timer.stop()
        self.c.state.events.session.disconnect(self._on_session)
        try:
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        except (RuntimeError, TypeError, ValueError):  # gone with the viewer
            pass

    # ------------------------------------------------------------------ edit layer
    def _on_session(self, session: ReviewSession | None) -> None:
        if session is None:
            return
        pending = session.pending()
        if pending is not None and session.edit is None:
            edit = session.restore_pending()
            if edit is not None:
                self._show_edit(edit)
                show_info(
                    f"Restored your uncommitted edit (autosaved {pending.saved}). "
                    "Commit or discard it when you are done."
                )
        elif session.edit is not None and self.c.layer("edit") is None:
            self._show_edit(session.edit)

    def _show_edit(self, edit: EditRegion) -> Any:
        scale, translate = slide_transform(self.c.slide_layer)
        data, kwargs, _ = edit_layer_data(
            edit, self.session.store, slide_scale=scale, slide_translate=translate,
            palette=self.c.palette, opacity=max(self.c.opacity, 0.6),
            units=self.c.slide_layer.units,
        )
        layer = self.viewer.add_labels(data, **kwargs)
        self.session.set_edit_labels(layer.data)
        layer.selected_label = self.selected_label
        layer.brush_size = max(2, min(edit.box.w, edit.box.h) // 40)
        watch_edit_layer(layer, self.session.palette, self.session.um_per_px(),
                         self._on_layer_label, self.brush_changed.emit)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self._autosave_timer.start()
        self.edit_changed.emit(True)
        return layer

    def set_selected_label(self, label: int) -> None:
        """The class the brush paints (label id = class index + 1)."""
        self.selected_label = int(label)
        layer = self.c.layer("edit")
        if layer is not None:
            layer.selected_label = self.selected_label

    def _on_layer_label(self, label: int) -> None:
        """The edit layer's label changed (napari's controls or keys): tell the dock."""
        if label:
            self.selected_label = int(label)
        self.label_changed.emit(int(label))

    def _remove_edit_layer(self) -> None:
        self._autosave_timer.stop()
        layer = self.c.layer("edit")
        if layer is not None:
            self.viewer.layers.remove(layer)
        self.edit_changed.emit(False)

    def _on_layer_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is None or layer_role(layer) != "edit" or self._committing or self._shut:
            return
        # later: a window closing removes every layer first (``viewer.close()``), and then
        # asks about the edit once, in :meth:`close_guard`
        QTimer.singleShot(0, self._edit_layer_gone)

    def _edit_layer_gone(self) -> None:
        session = self.session
        if (self._shut or self._closing or session is None or session.edit is None
                or self.c.layer("edit") is not None):
            return
        self._autosave_timer.stop()
        if session.edit.dirty:
            session.autosave()
            show_info("The edit layer was removed; your edit is kept (autosaved). "
                      "Click Edit region to bring it back.")
        else:
            session.discard()
        self.edit_changed.emit(session.edit is not None)

    # ------------------------------------------------------------------ actions
    def edit_region(self) -> bool:
        """Open the full-resolution labels of the current view for painting."""
        if self.session is None:
            self.c.say("Run the model first: there are no labels to edit yet.")
            return False
        if self.session.edit is not None:
            if self.c.layer("edit") is None:
                self._show_edit(self.session.edit)
            self.c.say("An edit is already open: commit or discard it first.")
            return False
        try:
            box = self.session.edit_box(view_of_viewer(self.viewer))
            edit = self.session.start_edit(box)
        except ReviewError as exc:
            self.c.say(str(exc))
            show_warning(str(exc))
            return False
        self._show_edit(edit)
        self.c.say(
            f"Editing {box.w} x {box.h} label pixels: paint with the brush (P), erase (E), "
            "fill (F), undo (Ctrl+Z); then Commit."
        )
        return True

    def commit(self) -> Any:
        """Write the edit to the store on a worker thread; returns the worker (or ``None``)."""
        session = self.session
        if session is None or session.edit is None or self._committing:
            self.c.say("No edit to commit.")
            return None
        edit = session.edit
        labels = np.asarray(edit.labels)
        try:  # on the main thread, before anything is frozen or written
            session.check_palette_labels(labels, labels != edit.original, edit.box)
        except ReviewError as exc:
            self.c.say(str(exc))
            show_warning(str(exc))
            return None
        layer = self.c.layer("edit")
        if layer is not None:  # freeze the crop: strokes after this point would be lost
            layer.mode = "pan_zoom"
            layer.editable = False
        self._committing = True
        self._autosave_timer.stop()
        worker = function_worker(session.commit, author=_user(), eraser=self.eraser)
        worker.returned.connect(self._on_committed)
        worker.errored.connect(self._on_commit_error)
        start_worker(worker)
        self.c.say("Committing...")
        return worker

    def _on_committed(self, record: dict[str, Any]) -> None:
        self._committing = False
        self._remove_edit_layer()
        self.c.refresh_layers()
        text = f"Committed {record['pixels']:,} changed pixels to the label store."
        if record.get("unlabelled"):
            text += (f" {record['unlabelled']:,} erased pixels are unlabelled: the next run "
                     "predicts them again.")
        self.c.say(text + " Undo last commit reverts it.")
        self.committed.emit(record)

    def undo_commit(self) -> Any:
        """Undo the newest commit on a worker thread; returns the worker (or ``None``)."""
        session = self.session
        if session is None or self._committing:
            self.c.say("Nothing to undo.")
            return None
        if session.edit is not None:
            self.c.say("Commit or discard the open edit before undoing a commit.")
            return None
        worker = function_worker(session.undo_commit)
        worker.returned.connect(self._on_undone)
        worker.errored.connect(self.c.report_error)
        start_worker(worker)
        self.c.say("Undoing the last commit...")
        return worker

    def _on_undone(self, result: dict[str, Any] | None) -> None:
        if result is None:
            self.c.say("Nothing to undo: no commit in the history.")
        else:
            self.c.refresh_layers()
            self.c.say(f"Undid the commit of {result['time']}; {result['left']} more can be "
                       "undone.")
        self.undone.emit(result)

    def _on_commit_error(self, exc: BaseException) -> None:
        self._committing = False
        layer = self.c.layer("edit")
        if layer is not None:
            layer.editable = True
        self._autosave_timer.start()
        self.c.report_error(exc)

    def discard(self, *, ask: bool = True) -> bool:
        """Drop the open edit (asking first when it has changes)."""
        session = self.session
        if session is None or session.edit is None:
            return False
        n = int(session.edit.changed.sum())
        if n and ask and not dialogs.confirm(
            self.parent_widget, "Discard edit",
            f"Discard your changes to {n:,} pixels? This cannot be undone.", ok="Discard",
        ):
            return False
        session.discard()
        self._remove_edit_layer()
        self.c.say("Edit discarded." if n else "Edit closed (nothing had changed).")
        return True

    def autosave_now(self, *, background: bool = True) -> None:
        """Autosave the open edit if it changed (on a worker thread by default)."""
        session = self.session
        if session is None or session.edit is None or self._autosaving or self._committing:
            return
        if not session.edit.unsaved:
            return
        if not background:
            session.autosave()
            return
        self._autosaving = True
        worker = function_worker(session.autosave)
        worker.finished.connect(lambda: setattr(self, "_autosaving", False))
        worker.errored.connect(self.c.report_error)
        start_worker(worker)

    def next_uncertain(self) -> Any:
        """Find the least confident region not reviewed yet (on a worker), then go there.

        Returns the worker (``None`` when there is nothing to review); ``region_shown``
        is emitted with the region (or ``None`` when every region was reviewed).
        """
        session = self.session
        if session is None:
            self.c.say("Run the model first: there is no confidence to review yet.")
            return None
        worker = function_worker(session.next_region)
        worker.returned.connect(self._go_to_region)
        worker.errored.connect(self.c.report_error)
        self.c.say("Looking for the least confident region...")
        start_worker(worker)
        return worker

    def _go_to_region(self, found: tuple[Any, int]) -> None:
        session = self.session
        region, left = found
        if region is None or session is None:
            self.c.say("No region left to review: every region with predicted tissue has been "
                       "reviewed (regions mostly glass or not predicted are skipped).")
            self.region_shown.emit(None)
            return
        session.show_region(region)
        box = region.box
        center, zoom = session.camera_for(box, tuple(self.viewer.canvas.size))
        camera = camera_of(self.viewer)
        camera.center, camera.zoom = center, zoom
        why = ("unlabelled tissue (erased to let the model predict again): run on view"
               if region.reason == "unlabelled" else
               f"uncertainty {region.score:.2f} (mean 1 - confidence over its predicted tissue)")
        after = (f"{left} more to review" if left else "this is the last region to review")
        self.c.say(f"Region {region.describe()}: {why}. Edit region to correct it; {after}.")
        self.region_shown.emit(box)

    # ------------------------------------------------------------------ closing
    def close_guard(self) -> bool:
        """Called before the window closes; False keeps it open.

        With an uncommitted edit it asks once whether to commit it or keep it for later
        (autosaved, it reopens with the slide); once answered, later calls of the same
        teardown (napari closes the window more than once on Exit) do not ask again.
        """
        session = self.session
        if self._closing or session is None or session.edit is None:
            return True
        if not session.edit.dirty:
            return True
        choice = dialogs.ask_close(_alive(self.parent_widget), int(session.edit.changed.sum()))
        if choice == "cancel":
            return False
        self._closing = True
        self._autosave_timer.stop()
        try:
            if choice == "commit":
                session.commit(author=_user())
            else:
                session.autosave(force=True)
        except Exception as exc:
            self._closing = False
            self.c.report_error(exc)
            return False
        return True


def _alive(widget: QWidget | None) -> QWidget | None:
    """``widget``, or ``None`` when Qt has deleted it already (a dialog's parent)."""
    try:
        if widget is not None:
            widget.objectName()
    except RuntimeError:  # wrapped C/C++ object has been deleted
        return None
    return widget
