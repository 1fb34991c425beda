"""The napari-sgnet dock widget: thin controls over the viewer's :class:`AppState`.

The dock is handed the viewer's state (:func:`napari_sgnet.app.state.state_for`); each
control calls one state / controller / review / export method (the same ones the tests and
the benchmark call) and the dock shows what the state's events and the controller report.
It never looks for other widgets: the fine-tune dock reaches it only through the state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_sgnet._napari.session import PREDICTION_NAME
from napari_sgnet._qt import dialogs
from napari_sgnet._qt.controller import AppController
from napari_sgnet._qt.exports import ExportActions
from napari_sgnet._qt.geojson_drop import GeoJSONDrop
from napari_sgnet._qt.model_picker import ModelPicker
from napari_sgnet._qt.palette_view import PaletteView
from napari_sgnet._qt.review_actions import ReviewActions
from napari_sgnet._qt.review_controls import (
    SHORTCUTS,
    ActivityProgress,
    ConfidenceLegend,
    install_shortcuts,
    labels_model_name,
    provenance_text,
    scrolled,
)
from napari_sgnet._qt.throttle import Throttle
from napari_sgnet._qt.workers import function_worker, original_error, start_worker
from napari_sgnet.app import models as app_models
from napari_sgnet.app.exports import DOCK_EXPORT_KINDS, EXPORTS
from napari_sgnet.app.models import ModelChoice
from napari_sgnet.app.review import ERASER_MEANINGS
from napari_sgnet.app.state import AppState, state_for
from napari_sgnet.errors import UserInputError
from napari_sgnet.inference.ood import OODResult
from napari_sgnet.inference.request import DEVICES

__all__ = ["SGNetWidget"]

log = logging.getLogger(__name__)


def _button(text: str, tip: str, slot: Any, shortcut: str | None = None) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(f"{tip} ({SHORTCUTS[shortcut]})" if shortcut else tip)
    button.clicked.connect(lambda *_: slot())
    return button


def _forget_dock(controller: Any, slots: list[tuple[Any, Any]], *_: Any) -> None:
    """What :meth:`SGNetWidget.shutdown` must not leave behind, for a deleted dock."""
    for signal, slot in slots:
        with contextlib.suppress(Exception):  # already disconnected by shutdown()
            signal.disconnect(slot)
    try:
        controller.shutdown()
    except RuntimeError as exc:  # Qt deleted part of it already
        log.debug("closing: %s", exc)


class _CloseGuard(QObject):
    """Asks before the main window closes with an uncommitted edit; tidies up when it does."""

    def __init__(self, widget: SGNetWidget) -> None:
        super().__init__()
        self.widget = widget

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Close and not self.widget._shut:
            try:
                if not self.widget.review.close_guard():
                    event.ignore()
                    return True
                self.widget.shutdown()
            except RuntimeError as exc:  # Qt deleted part of the dock during teardown
                log.debug("closing: %s", exc)
        return False


class SGNetWidget(QWidget):
    """Run SGNet on the slide, review the least confident regions, correct, export.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    model : optional
        Model to select at start: ``None`` for the state's current model (else the bundled
        one), a checkpoint folder or a predictor.
    store_dir : str or Path, optional
        Where label stores go (default: see :mod:`napari_sgnet.app.store_paths`).
    state : AppState, optional
        The app state to show and change (default: the viewer's, :func:`state_for`).
    """

    PROGRESS_MS = 250  # shortest time between two repaints of the progress bars

    def __init__(self, napari_viewer: Any, *, model: Any = None,
                 store_dir: str | Path | None = None, state: AppState | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state if state is not None else state_for(napari_viewer)
        if store_dir is not None:
            self.state.set_store_dir(store_dir)
        self.controller = AppController(napari_viewer, self.state)
        self.review = ReviewActions(self.controller, self)
        self.exports = ExportActions(self.controller, self)
        self.geojson_drop = GeoJSONDrop(self.review)  # a dropped .geojson: an edit to review
        self._guarded = 0  # id() of the window with the close guard (no strong reference)
        self._shut = False
        self._model_request = 0  # the latest model choice described on a worker
        self._provenance_key: tuple[str, str | None] | None = None  # (store, model) shown
        self._close_guard = _CloseGuard(self)
        self._shortcuts: list[Any] = []
        self.activity = ActivityProgress("SGNet: predicting")
        # at most 4 progress repaints a second: per-batch repaints slowed runs ~2.7x
        self._bar_update = Throttle(self._on_progress, self.PROGRESS_MS, self)
        self._activity_update = Throttle(self.activity.update, self.PROGRESS_MS, self)
        content = QWidget()
        self.scroll = scrolled(content, self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        self.slide_label = QLabel("")  # which slide the dock works on (the selected one)
        self.slide_label.setObjectName("sgnet_slide_label")
        self.slide_label.setWordWrap(True)
        layout.addWidget(self.slide_label)
        layout.addWidget(self._model_box())
        layout.addWidget(self._run_box())
        layout.addWidget(self._display_box())
        layout.addWidget(self._review_box())
        layout.addWidget(self._export_box())
        layout.addStretch(1)
        self._connect()
        # Deleted without a close event (a window closed before the dock was ever shown):
        # stop listening to the state and stop the controller all the same.
        self.destroyed.connect(functools.partial(
            _forget_dock, self.controller,
            [*self._state_slots(), (self.state.events.session, self._show_provenance)]))
        self.controller.attach()
        self._show_slide()
        self._select_model(model)

    # ------------------------------------------------------------------ sections
    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = ModelPicker()
        self.model_combo.chosen.connect(self._on_model_chosen)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.ood_label = QLabel("")  # the out-of-distribution check, beside the model's name
        self.ood_label.setWordWrap(True)
        self.ood_label.setObjectName("sgnet_ood_label")
        self.ood_label.setVisible(False)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        if self.state.device in DEVICES:
            self.device_combo.setCurrentText(self.state.device)
        self.device_combo.currentTextChanged.connect(self.state.set_device)
        form.addRow("Model", self.model_combo)
        form.addRow(self.model_label)
        form.addRow(self.ood_label)
        form.addRow("Device", self.device_combo)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Predict")
        grid = QGridLayout(box)
        c = self.controller
        self.run_view_btn = _button("Run on view", "Predict what you see, centre first.",
                                    c.run_on_view, "run_view")
        self.run_slide_btn = _button("Run whole slide", "Predict every tile of the slide "
                                     "(resumes where a previous run stopped).", c.run_whole_slide)
        self.follow_check = QCheckBox("Follow the view (re-run after pan / zoom)")
        self.follow_check.setChecked(c.follow_view)
        self.follow_check.toggled.connect(lambda on: setattr(c, "follow_view", bool(on)))
        self.coarse_label = QLabel("")
        self.coarse_label.setWordWrap(True)
        self.coarse_label.setStyleSheet("color: #f0a030;")
        self.force_btn = _button("Run on the visible area anyway", "Predict every tile "
                                 "in view, however many.", lambda: c.run_on_view(force=True))
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.cancel_btn = _button("Cancel", "Stop after the current batch; finished tiles "
                                  "are kept.", c.cancel)
        self.cancel_btn.setEnabled(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        grid.addWidget(self.run_view_btn, 0, 0)
        grid.addWidget(self.run_slide_btn, 0, 1)
        grid.addWidget(self.follow_check, 1, 0, 1, 2)
        grid.addWidget(self.coarse_label, 2, 0, 1, 2)
        grid.addWidget(self.force_btn, 3, 0, 1, 2)
        grid.addWidget(self.progress_bar, 4, 0)
        grid.addWidget(self.cancel_btn, 4, 1)
        grid.addWidget(self.status_label, 5, 0, 1, 2)
        self._show_coarse("")
        return box

    def _display_box(self) -> QGroupBox:
        box = QGroupBox("Classes and display")
        lay = QVBoxLayout(box)
        self.palette_view = PaletteView(self.state.palette)
        self.palette_view.label_selected.connect(self.review.set_selected_label)
        lay.addWidget(self.palette_view)
        row = QHBoxLayout()
        row.addWidget(_button("Load palette...", "Class names and colours from a JSON file "
                              '({"name": ..., "classes": [{"name", "color"}]}).',
                              self._load_palette))
        self.confidence_check = QCheckBox("Show confidence")
        self.confidence_check.setToolTip("Highlight pixels the model is unsure about.")
        self.confidence_check.toggled.connect(self.controller.set_confidence_visible)
        row.addWidget(self.confidence_check)
        lay.addLayout(row)
        self.legend = ConfidenceLegend()
        self.legend.setVisible(False)
        self.confidence_check.toggled.connect(self.legend.setVisible)
        lay.addWidget(self.legend)
        form = QFormLayout()
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(self.controller.opacity * 100))
        self.opacity_slider.valueChanged.connect(lambda v: self.controller.set_opacity(v / 100))
        form.addRow("Opacity", self.opacity_slider)
        lay.addLayout(form)
        return box

    def _review_box(self) -> QGroupBox:
        box = QGroupBox("Review and correct")
        grid = QGridLayout(box)
        r = self.review
        self.next_btn = _button("Next uncertain region", "Go to the most uncertain region "
                                "of predicted tissue not reviewed yet.", r.next_uncertain, "next")
        self.edit_btn = _button("Edit region", "Open the labels in view at full resolution "
                                "for the brush, eraser and fill.", r.edit_region, "edit")
        self.commit_btn = _button("Commit", "Save the correction; later runs keep it.", r.commit,
                                  "commit")
        self.discard_btn = _button("Discard", "Drop the correction.", r.discard, "discard")
        self.undo_btn = _button("Undo last commit", "Put back the labels, confidence and "
                                "edited mark as they were before the last commit.",
                                r.undo_commit)
        self.brush_label = QLabel("")
        self.brush_label.setObjectName("sgnet_brush_label")
        self.eraser_buttons: dict[str, QRadioButton] = {}
        eraser = QGroupBox("The eraser (E) means")
        eraser_lay = QVBoxLayout(eraser)
        for meaning, text in ERASER_MEANINGS.items():
            radio = QRadioButton(text)
            radio.setChecked(meaning == r.eraser)
            radio.toggled.connect(lambda on, m=meaning: on and setattr(r, "eraser", m))
            self.eraser_buttons[meaning] = radio
            eraser_lay.addWidget(radio)
        self.provenance_label = QLabel(provenance_text(None))
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setObjectName("sgnet_provenance")
        grid.addWidget(self.next_btn, 0, 0, 1, 2)
        grid.addWidget(self.edit_btn, 1, 0, 1, 2)
        grid.addWidget(self.commit_btn, 2, 0)
        grid.addWidget(self.discard_btn, 2, 1)
        grid.addWidget(self.undo_btn, 3, 0, 1, 2)
        grid.addWidget(self.brush_label, 4, 0, 1, 2)
        grid.addWidget(eraser, 5, 0, 1, 2)
        grid.addWidget(self.provenance_label, 6, 0, 1, 2)
        self._on_edit_changed(False)
        return box

    def _export_box(self) -> QGroupBox:
        box = QGroupBox("Export")
        grid = QGridLayout(box)
        self.export_buttons: dict[str, QPushButton] = {}
        for i, (kind, row) in enumerate((k, EXPORTS[k]) for k in DOCK_EXPORT_KINDS):
            btn = _button(self.exports.button_text(kind), row.tooltip,
                          lambda k=kind: self.exports.export_with_dialog(k))
            self.export_buttons[kind] = btn
            grid.addWidget(btn, i // 2, i % 2)
        self.store_label = QLabel("")
        self.store_label.setWordWrap(True)
        self.store_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        grid.addWidget(self.store_label, 2, 0, 1, 2)
        for row, kind in enumerate(self.exports.options.forms, start=3):
            group = QGroupBox(f"{EXPORTS[kind].title} options")
            group_lay = QVBoxLayout(group)
            group_lay.setContentsMargins(4, 4, 4, 4)
            group_lay.addWidget(self.exports.options.forms[kind].native)
            grid.addWidget(group, row, 0, 1, 2)
        return box

    # ------------------------------------------------------------------ wiring
    def _state_slots(self) -> list[tuple[Any, Any]]:
        ev = self.state.events
        return [(ev.model, self._on_model), (ev.model_error, self._on_model_error),
                (ev.palette, self.palette_view.set_palette), (ev.store, self._update_store_label),
                (ev.offered, self._on_offered), (ev.ood, self._on_ood),
                (ev.slide, self._check_ood), (ev.slide, self._show_slide)]

    def _connect(self) -> None:
        c = self.controller
        c.status.connect(self.status_label.setText)
        c.progress.connect(self._bar_update)
        c.busy.connect(self.cancel_btn.setEnabled)
        c.coarse_view.connect(self._show_coarse)
        for signal, slot in self._state_slots():
            signal.connect(slot)
        self.review.edit_changed.connect(self._on_edit_changed)
        self.exports.progress.connect(self._bar_update)
        c.shown.connect(self.state.note_run_event)  # a run's check of the tiles it predicted
        self.review.label_changed.connect(self.palette_view.select_label)
        self.review.brush_changed.connect(self.brush_label.setText)
        c.progress.connect(self._show_activity)  # whole-slide runs: napari's activity panel too
        c.busy.connect(self._on_busy)
        c.shown.connect(self._provenance_on_shown)
        for signal in (self.review.committed, self.review.undone):
            signal.connect(self._show_provenance)
        self.state.events.session.connect(self._show_provenance)

    def _show_slide(self, *_: Any) -> None:
        layer = self.controller.slide_layer
        name = layer.name if layer is not None and self.state.slide is not None else None
        self.slide_label.setText(f"Slide: {name}" if name else "Slide: none (select one)")
        self.slide_label.setToolTip("The selected slide (each slide keeps its own labels).")

    def _show_activity(self, done: int, total: int) -> None:
        # Only whole-slide runs (long work) open a bar in napari's activity panel: while one
        # is open napari animates a "loading" image, and with a software-rendered canvas
        # every frame repaints the window (~0.6 of a core here), which made a 2 s view run
        # take 5-6 s. A view run shows its progress in the dock's bar.
        if self.controller.whole_slide_run:
            self._activity_update(done, total)

    def _on_busy(self, busy: bool) -> None:
        if not busy:  # the work ended: its last count, then the activity bar goes
            self._bar_update.flush()
            self._activity_update.cancel()
            self.activity.close()

    def _on_progress(self, done: int, total: int) -> None:
        bar = self.progress_bar
        # QProgressBar.setValue repaints synchronously, which with a software-rendered
        # canvas recomposes the window (100-700 ms measured); with updates off it only
        # schedules a paint, merged into the next frame
        bar.setUpdatesEnabled(False)
        try:
            bar.setRange(0, max(total, 1))
            bar.setValue(done)
        finally:
            bar.setUpdatesEnabled(True)
        bar.update()

    def _show_coarse(self, message: str) -> None:
        self.coarse_label.setText(message)
        self.coarse_label.setVisible(bool(message))
        self.force_btn.setVisible(bool(message))

    def _on_edit_changed(self, editing: bool) -> None:
        self.commit_btn.setEnabled(editing)
        self.discard_btn.setEnabled(editing)
        self.undo_btn.setEnabled(not editing)
        if not editing:
            self.brush_label.setText("")

    def _provenance_on_shown(self, ev: Any) -> None:
        # reading the store's records takes 3-150 ms of the main thread (more while a run
        # writes): once when a run's tiles first show (its model is the store's now) and
        # when it ends, not on every refresh
        model = self.controller.model
        key = (str(getattr(ev, "store", "")), model.info.model_id if model is not None else None)
        if key != self._provenance_key or getattr(ev, "finished", True):
            self._provenance_key = key
            self._show_provenance()

    def _show_provenance(self, *_: Any) -> None:
        """Which model made the labels on screen, with the research-use notice (dock + canvas)."""
        if self._shut:
            return
        session = self.state.session
        text = provenance_text(session.store if session is not None else None)
        self.provenance_label.setText(text)
        layer = self.controller.layer("prediction")
        if layer is not None and session is not None:
            layer.metadata.setdefault("napari_sgnet", {})["provenance"] = text
            name = f"{PREDICTION_NAME} ({labels_model_name(session.store)})"
            if layer.name != name:  # the layer list names the model of the labels shown
                layer.name = name

    def _update_store_label(self, path: Path | None = None) -> None:
        path = self.state.store_path
        if path is None:
            self.store_label.setText("")
            return
        home = Path.home()
        shown = f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)
        if len(shown) > 60:
            shown = f".../{path.parent.name}/{path.name}"
        self.store_label.setText(f"Labels are saved in: {shown}")
        self.store_label.setToolTip(str(path))

    def _on_model(self, choice: ModelChoice) -> None:
        """The state's model changed (here, or "Use this model" in the fine-tune dock)."""
        self.model_combo.select(self.state.model_source)
        self.model_label.setText(choice.summary)
        self.model_label.setStyleSheet("")
        self._check_ood()

    # ------------------------------------------------------------------ out of distribution
    def _check_ood(self, *_: Any) -> None:
        """Judge the slide with the model on a worker; the state's ``ood`` event brings it."""
        if self._shut or self.state.slide is None or self.state.model is None:
            self._on_ood(None)
            return
        self.ood_label.setText("Checking whether the slide is like the model's training data...")
        self.ood_label.setStyleSheet("color: gray;")
        self.ood_label.setVisible(True)
        worker = function_worker(self.state.check_slide_ood)
        worker.returned.connect(self._on_slide_checked)
        worker.errored.connect(lambda exc: log.warning("OOD check failed: %s", exc, exc_info=exc))
        start_worker(worker)

    def _on_slide_checked(self, checked: tuple[Any, Any, OODResult | None]) -> None:
        slide, model, result = checked
        if not self._shut:
            self.state.set_ood(result, slide=slide, model=model)

    def _on_ood(self, _result: OODResult | None = None) -> None:
        """Show the state's checks: a warning when the slide or view is out of distribution."""
        lines, worst = [], ""
        for title, result in (("Slide", self.state.ood_slide), ("View", self.state.ood_view)):
            if result is None:
                continue
            if result.out_of_distribution:
                worst = "ood"
                lines.append(f"\u26a0 Warning: {title.lower()} out of distribution, unlike "
                             f"the model's training data ({result.details()}); its labels may "
                             "be unreliable.")
            elif not result.judged:
                worst = worst or "unknown"
                lines.append(f"{title}: cannot judge whether it is out of distribution: "
                             f"{result.reason}.")
            else:
                lines.append(f"{title}: within the training distribution.")
        self.ood_label.setText("\n".join(lines))
        self.ood_label.setToolTip("\n".join(
            r.message() for r in (self.state.ood_slide, self.state.ood_view) if r is not None))
        style = {"ood": "color: #ff6040; font-weight: bold;", "unknown": "color: #f0a030;"}
        self.ood_label.setStyleSheet(style.get(worst, "color: gray;"))
        self.ood_label.setVisible(bool(lines))

    def _on_model_error(self, message: str) -> None:
        self.model_label.setText(message)
        self.model_label.setStyleSheet("color: #f0a030;")

    def _on_offered(self, path: Path | None) -> None:
        """A fine-tuned model is on offer: list it (it is used only when the person says so)."""
        if path is not None:
            self.model_combo.populate()
            self.model_combo.select(self.state.model_source)

    def _select_model(self, model: Any) -> None:
        state = self.state
        if model is None and state.model is not None:  # e.g. a model fine-tuned earlier
            self._on_model(state.model)
            return
        self.model_combo.select(model)
        state.set_model(model)

    def _on_model_chosen(self, source: Any) -> None:
        """A person picked a model: describe it on a worker (a checkpoint's weights digest
        reads the whole weights file; an ONNX model's contract check loads onnx)."""
        self._model_request += 1
        request = self._model_request
        name = Path(source).name if isinstance(source, (str, Path)) else type(source).__name__
        self.model_label.setText("Reading the chosen model...")
        self.model_label.setToolTip(name)
        self.model_label.setStyleSheet("color: gray;")
        worker = function_worker(app_models.choose_model, source)
        worker.returned.connect(lambda choice: self._on_model_described(request, source, choice))
        worker.errored.connect(lambda exc: self._on_model_undescribed(request, exc))
        start_worker(worker)

    def _on_model_described(self, request: int, source: Any, choice: ModelChoice) -> None:
        if request == self._model_request and not self._shut:  # else a later choice won
            self.state.set_model(source, choice=choice)

    def _on_model_undescribed(self, request: int, exc: BaseException) -> None:
        if request != self._model_request or self._shut:
            return
        err = original_error(exc)
        if isinstance(err, UserInputError):
            self.state.set_model_error(str(err))
        else:
            self.controller.report_error(err)

    def _load_palette(self) -> None:
        path = dialogs.ask_open_file(self, "Load a class palette", Path.home(), "JSON (*.json)")
        if path is not None:
            self.controller.load_palette(path)

    # ------------------------------------------------------------------ lifecycle
    def showEvent(self, event: Any) -> None:
        """Install the close guard on the main window once the dock is shown."""
        super().showEvent(event)
        window: Any = self  # docked: the main window; floating: the dock's parent is
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None and id(window) != self._guarded:
            window.installEventFilter(self._close_guard)
            self._guarded = id(window)
            self._shortcuts = install_shortcuts(window, {
                "run_view": self.run_view_btn.click, "next": self.next_btn.click,
                "edit": self.edit_btn.click, "commit": self.commit_btn.click,
                "discard": self.discard_btn.click,
            })

    def shutdown(self) -> None:
        """Keep the edit (autosave), stop the running job, stop listening (window closing)."""
        if self._shut:
            return
        self._shut = True
        self.review.autosave_now(background=False)
        self.review.shutdown()
        self.geojson_drop.shutdown()
        self.controller.shutdown()
        for signal, slot in self._state_slots():
            signal.disconnect(slot)
        self.state.events.session.disconnect(self._show_provenance)
        self.activity.close()
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)

    def closeEvent(self, event: Any) -> None:
        """The dock is closed: the same tidying up as when the window closes."""
        self.shutdown()
        super().closeEvent(event)
