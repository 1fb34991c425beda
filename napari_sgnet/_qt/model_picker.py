"""The model combo box: bundled and fine-tuned models, any checkpoint folder, or a predictor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

from napari_sgnet._qt import dialogs
from napari_sgnet.app.models import list_models

__all__ = ["ModelPicker"]

log = logging.getLogger(__name__)

_CHOOSE = "Choose a checkpoint folder..."


class ModelPicker(QComboBox):
    """Lists :func:`~napari_sgnet.app.models.list_models` plus "choose a folder".

    Emits ``chosen(source)`` when the person picks a model, where ``source`` is a
    checkpoint folder (``Path``) or an in-memory model / predictor.
    """

    chosen = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("The model that Run on view / Run whole slide use.")
        self._previous = 0
        self.populate()
        self.activated.connect(self._on_activated)

    def populate(self) -> None:
        """(Re)list the bundled and fine-tuned models (call :meth:`select` after)."""
        self.blockSignals(True)
        self.clear()
        try:
            entries = list_models()
        except Exception as exc:
            log.warning("cannot list models: %s", exc)
            entries = []
        for entry in entries:
            self.addItem(entry.label, str(entry.path))
        self.addItem(_CHOOSE, None)
        self.blockSignals(False)

    def select(self, source: Any) -> None:
        """Show ``source`` as the current item (adding it when it is not listed)."""
        if source is None:
            index = next((i for i in range(self.count() - 1)
                          if Path(str(self.itemData(i))).name == "sgnet"), 0)
        elif isinstance(source, (str, Path)):
            key = str(Path(source))
            index = self.findData(key)
            if index < 0:
                index = self.count() - 1
                self.insertItem(index, Path(source).name, key)
        else:  # an in-memory model or predictor (listed once)
            index = next((i for i in range(self.count()) if self.itemData(i) is source), -1)
            if index < 0:
                index = self.count() - 1
                self.insertItem(index, getattr(getattr(source, "info", None), "name", None)
                                or type(source).__name__, source)
        self.setCurrentIndex(index)
        self._previous = index

    def _on_activated(self, index: int) -> None:
        data = self.itemData(index)
        if self.itemText(index) == _CHOOSE and data is None:
            path = dialogs.ask_directory(self, "Choose a model checkpoint folder", Path.home())
            if path is None:
                self.setCurrentIndex(self._previous)
                return
            self.select(path)
            self.chosen.emit(path)
            return
        self._previous = index
        self.chosen.emit(Path(data) if isinstance(data, str) else data)
