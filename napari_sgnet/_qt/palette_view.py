"""The class palette as a list: a colour swatch and a name per class; clicking picks the brush."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget

from napari_sgnet.palette import Palette

__all__ = ["PaletteView"]


def _swatch(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class PaletteView(QListWidget):
    """Shows a :class:`Palette`; emits ``label_selected(label_id)`` when a class is clicked."""

    label_selected = Signal(int)

    def __init__(self, palette: Palette, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("Click a class to paint it with the brush when editing.")
        self.setSelectionMode(QListWidget.SingleSelection)
        self.currentRowChanged.connect(self._on_row)
        self.set_palette(palette)

    def set_palette(self, palette: Palette) -> None:
        """Show ``palette``, keeping the selected label when it still exists."""
        row = max(self.currentRow(), 0)
        self.blockSignals(True)
        self.clear()
        for i, cls in enumerate(palette.classes):
            item = QListWidgetItem(_swatch(cls.color), f"{i + 1}  {cls.name}")
            item.setData(Qt.UserRole, i + 1)
            item.setToolTip(f"label {i + 1}: {cls.name} ({cls.hex()})")
            self.addItem(item)
        self.setCurrentRow(min(row, self.count() - 1))
        self.blockSignals(False)
        row_h = self.sizeHintForRow(0)
        if row_h <= 0:
            row_h = self.fontMetrics().height() + 4
        self.setFixedHeight(row_h * max(self.count(), 1) + 2 * self.frameWidth() + 2)

    def select_label(self, label: int) -> None:
        """Show ``label`` (1..n) as the selected class (0, the eraser, leaves it as is)."""
        if 1 <= label <= self.count() and self.currentRow() != label - 1:
            self.setCurrentRow(label - 1)

    def _on_row(self, row: int) -> None:
        if row >= 0:
            self.label_selected.emit(int(self.item(row).data(Qt.UserRole)))
