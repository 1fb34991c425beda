"""Fine-tune dock widget: a thin layer over :func:`napari_sgnet.training.finetune.run.finetune`.

Pick the corrections (default: the label store of the current review session), the model and
the number of steps; the run goes to a napari thread worker, so the pathologist can keep
reviewing (later commits are not part of a run that has started). Progress shows loss, steps
and ETA; "Cancel" stops it and nothing is written. At the end the widget shows the held-out
mIoU before and after and *offers* the new model: it is used only when "Use this model" is
pressed. Earlier models stay selectable in the model list (:mod:`napari_sgnet.app.models`).

The widget is handed the viewer's :class:`~napari_sgnet.app.state.AppState`: the review
session's store and the model in use come from it, the new model is offered through it
(:meth:`AppState.offer_model`) and "Use this model" makes it the state's current model
(:meth:`AppState.use_offered`), which the review dock observes. It never looks for the
review dock.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, FloatSpinBox, SpinBox
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sgnet._qt import dialogs
from napari_sgnet._qt.review_controls import ActivityProgress, scrolled
from napari_sgnet._qt.workers import start_worker
from napari_sgnet.app.models import list_models
from napari_sgnet.app.state import AppState, state_for
from napari_sgnet.errors import SlideError, report_failure
from napari_sgnet.io.labelstore import LabelStore

__all__ = ["FinetuneWidget"]

log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"



def finetune_in_worker(sources: Any, base: Path | None, models_dir: Path, steps: int, lr: float,
                       **kwargs: Any) -> Any:
    """:func:`~napari_sgnet.training.finetune.run.finetune`, imported here, on the worker:
    the training stack (torch) loads off the main thread."""
    from napari_sgnet.training.finetune.run import FinetuneConfig, finetune

    return finetune(sources, base, models_dir, FinetuneConfig(steps=steps, lr=lr), **kwargs)

class _Bridge(QObject):
    """Carries progress reports from the worker thread to the main thread (queued)."""

    report = Signal(object)


class FinetuneWidget(QWidget):
    """Fine-tune the current model on committed corrections.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    models_dir : str or Path, optional
        Where new models are saved and listed (default: the models folder).
    state : AppState, optional
        The app state (default: the viewer's, :func:`~napari_sgnet.app.state.state_for`).
    """

    offered = Signal(object)  # Path of a new model, offered to the user
    accepted = Signal(object)  # Path of the model the user chose to use

    def __init__(self, napari_viewer: Any, *, models_dir: str | Path | None = None,
                 state: AppState | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state if state is not None else state_for(napari_viewer)
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.result: Any = None
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._bridge = _Bridge()
        self._bridge.report.connect(self._on_progress)
        self.activity = ActivityProgress("SGNet: fine-tuning")  # napari's activity panel
        content = QWidget()
        self.scroll = scrolled(content, self)  # two docks fit a 1080-pixel screen
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self._sources_box())
        layout.addWidget(self._settings_box())
        layout.addWidget(self._run_box())
        layout.addStretch(1)
        self.refresh_models()
        self.add_review_store()

    # ------------------------------------------------------------------ sections
    def _sources_box(self) -> QGroupBox:
        box = QGroupBox("Corrections")
        lay = QVBoxLayout(box)
        self.source_list = QListWidget()
        self.source_list.setToolTip("Label stores (their committed corrections) and exported "
                                    "patch folders to fine-tune on.")
        lay.addWidget(self.source_list)
        row = QHBoxLayout()
        for text, tip, slot in (
            ("Review store", "Add the label store of the current review session.",
             self.add_review_store),
            ("Add folder...", "Add a label store (.zarr) or an exported patch folder.",
             self._add_folder_dialog),
            ("Remove", "Remove the selected source.", self._remove_selected),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda *_, s=slot: s())
            row.addWidget(button)
        lay.addLayout(row)
        return box

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Fine-tuning")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        # The settings are a magicgui form (its widgets' natives stay reachable as before).
        self.settings = Container(widgets=[
            SpinBox(name="steps", label="Steps", value=300, min=1, max=100_000,
                    tooltip="Optimiser steps on the corrections."),
            FloatSpinBox(name="lr", label="Learning rate", value=5e-5, min=1e-6, max=1e-2,
                         step=1e-5, tooltip="AdamW learning rate."),
        ], labels=True)
        self.settings.native.layout().setContentsMargins(0, 0, 0, 0)
        self.steps_spin = self.settings.steps.native
        self.lr_spin = self.settings.lr.native
        self.lr_spin.setDecimals(6)
        form.addRow("Start from", self.model_combo)
        form.addRow(self.settings.native)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Fine-tune")
        self.run_btn.setToolTip("Train on the corrections in the background; the held-out "
                                "regions measure the model before and after.")
        self.run_btn.clicked.connect(lambda *_: self.start())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop; nothing is written.")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(lambda *_: self.cancel())
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.use_btn = QPushButton("Use this model")
        self.use_btn.setToolTip("Run the review with the new model from now on.")
        self.use_btn.setEnabled(False)
        self.use_btn.clicked.connect(lambda *_: self.use_new_model())
        for w in (self.progress_bar, self.status_label, self.result_label, self.use_btn):
            lay.addWidget(w)
        return box

    # ------------------------------------------------------------------ sources
    def add_source(self, source: Any, label: str) -> None:
        """Add a correction source (anything ``finetune`` accepts) shown as ``label``."""
        for i in range(self.source_list.count()):
            if self.source_list.item(i).text() == label:
                return
        item = QListWidgetItem(label)
        item.setData(Qt.UserRole, source)
        self.source_list.addItem(item)

    def add_review_store(self) -> bool:
        """Add the current review session's store (with its open slide); False if none."""
        session = self.state.session
        if session is None:
            self.status_label.setText("No review session: add a label store or patch folder.")
            return False
        from napari_sgnet.training.finetune.corrections import StoreCorrections

        self.add_source(StoreCorrections(session.store.path, session.slide),
                        f"{session.store.path} (review session)")
        return True

    def add_folder(self, path: str | Path) -> bool:
        """Add a label store or an exported patch folder; False (with a message) otherwise."""
        path = Path(path)
        if (path / _MANIFEST).is_file():
            from napari_sgnet.training.finetune.corrections import PatchCorrections

            self.add_source(PatchCorrections(path), f"{path} (patches)")
            return True
        if LabelStore.is_store(path):
            from napari_sgnet.training.finetune.corrections import StoreCorrections

            slide = None
            try:
                store = LabelStore.open(path, mode="r")
            except SlideError as exc:
                self.status_label.setText(str(exc))
                return False
            if not store.slide_identity.get("source"):
                slide = dialogs.ask_open_file(self, f"Slide of {path.name}", path.parent, "*")
                if slide is None:
                    return False
            self.add_source(StoreCorrections(path, slide), str(path))
            return True
        self.status_label.setText(f"{path}: neither a label store nor a patch folder")
        return False

    def _add_folder_dialog(self) -> None:
        path = dialogs.ask_directory(self, "Label store or patch folder", Path.home())
        if path is not None:
            self.add_folder(path)

    def _remove_selected(self) -> None:
        for item in self.source_list.selectedItems():
            self.source_list.takeItem(self.source_list.row(item))

    def sources(self) -> list[Any]:
        """The selected correction sources, in list order."""
        return [self.source_list.item(i).data(Qt.UserRole) for i in range(self.source_list.count())]

    # ------------------------------------------------------------------ models
    def refresh_models(self, select: Path | None = None) -> None:
        """Fill the model list; select ``select``, else the review's model, else the first."""
        self.model_combo.clear()
        for entry in list_models(self.models_dir):
            self.model_combo.addItem(entry.label, str(entry.path))
        model = self.state.model
        current = select or (model.path if model is not None else None)
        if current is not None:
            index = self.model_combo.findData(str(current))
            if index < 0:
                self.model_combo.insertItem(0, Path(current).name, str(current))
                index = 0
            self.model_combo.setCurrentIndex(index)

    def base_model(self) -> Path | None:
        """The checkpoint to start from (``None``: the bundled default)."""
        data = self.model_combo.currentData()
        return Path(data) if data else None

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a fine-tuning worker runs."""
        return self._worker is not None

    def start(self) -> bool:
        """Start fine-tuning in a thread worker; False (with a message) when it cannot."""
        if self.running:
            return False
        sources = self.sources()
        if not sources:
            self.status_label.setText("Add a label store or a patch folder first.")
            return False
        steps, lr = int(self.settings.steps.value), float(self.settings.lr.value)
        self._cancel = threading.Event()
        self.result = None
        self.use_btn.setEnabled(False)
        self.result_label.setText("")
        self._worker = create_worker(
            finetune_in_worker, sources, self.base_model(), self.models_dir, steps, lr,
            progress=self._bridge.report.emit, cancel=self._cancel, _start_thread=False,
            _connect={"returned": self._on_returned, "errored": self._on_errored,
                      "finished": self._on_finished},
        )
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status_label.setText("Reading corrections...")
        start_worker(self._worker)  # the app's own pool, never Qt's global one (see workers.py)
        return True

    def cancel(self) -> None:
        """Stop the run at the next step; nothing is written."""
        if self._cancel is not None:
            self._cancel.set()
            self.status_label.setText("Cancelling...")

    def _on_progress(self, ev: Any) -> None:
        names = {"before": "Scoring the current model", "train": "Fine-tuning",
                 "after": "Scoring the new model", "save": "Saving", "prepare": "Preparing"}
        if ev.total:
            self.progress_bar.setRange(0, ev.total)
            self.progress_bar.setValue(ev.step)
            if self._worker is not None:  # not a report arriving after the run ended
                self.activity.description = f"SGNet: {names.get(ev.stage, ev.stage).lower()}"
                self.activity.update(ev.step, ev.total)
        text = f"{names.get(ev.stage, ev.stage)}: {ev.step}/{ev.total}" if ev.total else (
            names.get(ev.stage, ev.stage))
        if ev.loss is not None:
            text += f" · loss {ev.loss:.4f}"
        if ev.eta_s is not None:
            text += f" · ETA {_fmt_eta(ev.eta_s)}"
        self.status_label.setText(text)

    def _on_returned(self, result: Any) -> None:
        self.result = result
        if result.cancelled:
            self.status_label.setText("Cancelled: no model was written.")
            return
        verdict = "improved" if result.improved else "did NOT improve"
        self.result_label.setText(
            f"Held-out mIoU {_fmt(result.miou_before)} → {_fmt(result.miou_after)} ({verdict}; "
            f"{result.split['held_out_regions']} held-out regions). New model: {result.name}"
        )
        self.status_label.setText(f"Done in {result.wall_time_s:.0f} s.")
        self.use_btn.setEnabled(True)
        self.refresh_models(select=self.base_model())
        self.state.offer_model(result.checkpoint)
        self.offered.emit(result.checkpoint)
        show_info(f"Fine-tuned model saved: {result.checkpoint}")

    def _on_errored(self, exc: BaseException) -> None:
        message = report_failure(exc, log, "fine-tuning").message  # bugs: traceback logged
        self.status_label.setText(message)
        show_error(message)

    def _on_finished(self) -> None:
        self._worker = self._cancel = None
        self.activity.close()
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def use_new_model(self) -> bool:
        """Make the offered model the one the app runs (only on the user's request)."""
        if self.result is None or self.result.checkpoint is None:
            return False
        path = Path(self.result.checkpoint)
        if self.state.offered != path:
            self.state.offer_model(path)
        if not self.state.use_offered():  # the review dock observes the state's model
            self.status_label.setText(self.state.model_error)
            return False
        self.refresh_models(select=path)
        self.use_btn.setEnabled(False)
        self.status_label.setText(f"Now using {path.name}.")
        self.accepted.emit(path)
        return True

    def closeEvent(self, event: Any) -> None:
        """Cancel a running job when the dock closes."""
        self.cancel()
        super().closeEvent(event)
