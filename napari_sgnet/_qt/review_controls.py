"""Reading and control aids of the dock: palette-only brush, legend, notice, shortcuts, progress.

- :func:`watch_edit_layer` keeps the edit layer's label a palette class (napari's
  "new label" (``M``) would pick one past the palette: it is mapped to the next class),
  reports the selected class and the brush size in µm, and gives the layer the class
  names napari shows in the status bar under the cursor (:func:`class_features`);
- :class:`ConfidenceLegend` explains the confidence overlay's colours;
- :func:`provenance_text` says which model made the labels on screen, with the
  research-use notice, for the dock (the labels layer's name carries the model's name:
  :func:`labels_model_name`; napari's canvas text overlay is not used: drawing its font
  the first time stalls the window for seconds on a small CPU);
- :data:`SHORTCUTS` and :func:`install_shortcuts`: window shortcuts that click the
  dock's own buttons;
- :func:`scrolled` puts a dock's content in a scroll area (two docks fit 1920 x 1080);
- :class:`ActivityProgress` mirrors long work in napari's activity panel
  (``napari.utils.progress``).

Everything here runs on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QKeySequence, QLinearGradient, QPainter, QPixmap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QShortcut, QVBoxLayout, QWidget

from napari_sgnet.palette import Palette

__all__ = [
    "RESEARCH_NOTICE",
    "SHORTCUTS",
    "ActivityProgress",
    "ConfidenceLegend",
    "brush_text",
    "class_features",
    "install_shortcuts",
    "labels_model_name",
    "palette_label",
    "provenance_text",
    "scrolled",
    "watch_edit_layer",
]

#: Shown with the model's name wherever labels are shown.
RESEARCH_NOTICE = "Research use only: not for clinical use."

#: Dock action -> window shortcut (also listed in the buttons' tooltips and docs/app.md).
SHORTCUTS = {
    "run_view": "Shift+R",
    "next": "Shift+N",
    "edit": "Shift+E",
    "commit": "Shift+C",
    "discard": "Shift+D",
}


def class_features(palette: Palette) -> dict[str, list[Any]]:
    """Labels-layer features naming each label id's class (napari shows them under the cursor)."""
    return {"index": list(range(palette.num_classes + 1)),
            "class": ["no label", *palette.names]}


def palette_label(label: int, previous: int, palette: Palette) -> int:
    """The palette label to use for a requested brush label.

    0 (the eraser's "no label") and ``1..num_classes`` are kept; anything else (napari's
    "new label" picks the next unused id) becomes the class after ``previous``.
    """
    n = palette.num_classes
    if 0 <= label <= n:
        return int(label)
    return int(previous) % n + 1 if 1 <= previous <= n else 1


def brush_text(size: float, um_per_px: float | None) -> str:
    """The brush size in label pixels and µm."""
    text = f"Brush: {size:g} label px"
    return text + (f" = {size * um_per_px:,.0f} µm" if um_per_px else "")


def labels_model_name(store: Any) -> str:
    """The name of the model the labels of ``store`` come from ("no model yet")."""
    model = (store.model or {}) if store is not None else {}
    return str(model.get("name") or "no model yet")


def provenance_text(store: Any) -> str:
    """Which model made the labels of ``store``, and the research-use notice."""
    name = labels_model_name(store)
    commits = [c for c in (store.commits if store is not None else []) if not c.get("undone")]
    edited = f", {len(commits)} correction(s)" if commits else ""
    return f"SGNet labels by model: {name}{edited}. {RESEARCH_NOTICE}"


def watch_edit_layer(layer: Any, palette: Palette, um_per_px: float | None,
                     on_label: Callable[[int], None], on_brush: Callable[[str], None]) -> None:
    """Keep an edit layer's label in the palette; report its label and brush size.

    Parameters
    ----------
    layer : napari.layers.Labels
        The edit layer.
    palette : Palette
        The store's palette.
    um_per_px : float or None
        µm per label pixel (for the brush size).
    on_label : callable
        Called with the (palette) label the brush now paints.
    on_brush : callable
        Called with the brush size text.
    """
    layer.features = class_features(palette)
    state = {"previous": int(layer.selected_label)}

    def _label(_event: Any = None) -> None:
        wanted = int(layer.selected_label)
        label = palette_label(wanted, state["previous"], palette)
        if label != wanted:
            layer.selected_label = label  # fires this handler again with a palette label
            return
        if label:
            state["previous"] = label
        on_label(label)

    def _brush(_event: Any = None) -> None:
        on_brush(brush_text(float(layer.brush_size), um_per_px))

    layer.events.selected_label.connect(_label)
    layer.events.brush_size.connect(_brush)
    _label()
    _brush()


def install_shortcuts(window: QWidget, actions: dict[str, Callable[[], Any]]) -> list[QShortcut]:
    """Window shortcuts (:data:`SHORTCUTS`) that call ``actions`` (the buttons' ``click``)."""
    out = []
    for key, action in actions.items():
        shortcut = QShortcut(QKeySequence(SHORTCUTS[key]), window)
        shortcut.setContext(Qt.WindowShortcut)
        shortcut.activated.connect(action)
        out.append(shortcut)
    return out


def scrolled(content: QWidget, owner: QWidget, min_width: int = 340) -> QScrollArea:
    """Put a dock's ``content`` in a vertical scroll area filling ``owner``.

    The dock then asks napari's window for little height (two docks fit a 1080-pixel
    screen) and keeps a stable width (no horizontal scrolling, a fixed minimum).
    """
    scroll = QScrollArea(owner)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    scroll.setWidget(content)
    content.setMinimumWidth(min_width)
    scroll.setMinimumWidth(min_width + scroll.verticalScrollBar().sizeHint().width())
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return scroll


class ConfidenceLegend(QWidget):
    """The confidence overlay's colour ramp with its meaning."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from napari_sgnet._napari.session import confidence_colormap

        cmap = confidence_colormap()
        pixmap = QPixmap(240, 12)
        pixmap.fill(QColor(128, 128, 128))
        painter = QPainter(pixmap)
        gradient = QLinearGradient(0, 0, 240, 0)
        for t in np.linspace(1.0 / 255.0, 1.0, 24):
            r, g, b, a = (float(v) for v in cmap.map(np.array([t]))[0])
            gradient.setColorAt(float(t), QColor.fromRgbF(r, g, b, a))
        painter.fillRect(0, 0, 240, 12, gradient)
        painter.end()
        ramp = QLabel()
        ramp.setPixmap(pixmap)
        ramp.setObjectName("sgnet_confidence_ramp")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(ramp)
        ticks = QHBoxLayout()
        for text, align in (("0 % sure", Qt.AlignLeft), ("40 %", Qt.AlignHCenter),
                            ("80 %+ : clear", Qt.AlignRight)):
            label = QLabel(text)
            label.setAlignment(align)
            ticks.addWidget(label)
        lay.addLayout(ticks)
        self.caption = QLabel("Confidence (the model's top class probability): magenta = "
                              "least sure, orange = unsure, clear = sure or not predicted.")
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)


class ActivityProgress:
    """A ``napari.utils.progress`` bar in napari's activity panel for one kind of long work.

    Parameters
    ----------
    description : str
        What the work is ("SGNet: whole slide").
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None
        self._closes = 0  # close() calls, to notice one made while a bar is being opened

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (opens the bar on first use)."""
        from napari.utils import progress

        bar = self.bar
        if bar is None:
            closes = self._closes
            # napari processes events while it adds the bar to its panel: the work may
            # end (``close``) before ``progress`` returns; then the new bar goes at once
            bar = progress(total=max(int(total), 1), desc=self.description)
            if self._closes != closes:
                bar.close()
                return
            self.bar = bar
        # ``bar`` stays valid here even if ``close`` runs meanwhile (napari may process
        # events while it draws the bar).
        if bar.desc != self.description:
            bar.set_description(self.description)
        if bar.total != max(int(total), 1):
            bar.total = max(int(total), 1)
        bar.n = min(int(done), bar.total)
        bar.refresh()

    def close(self) -> None:
        """Close the bar (the work ended)."""
        self._closes += 1
        if self.bar is not None:
            self.bar.close()
            self.bar = None
