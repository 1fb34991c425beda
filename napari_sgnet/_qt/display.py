"""How the controller shows a label store: prediction / confidence layers, palette, opacity.

A mixin of :class:`~napari_sgnet._qt.controller.AppController`; it only touches layers,
so it is only ever called on the main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_warning

from napari_sgnet._napari.session import (
    META_KEY,
    PLACEHOLDER_KEY,
    PREDICTION_NAME,
    confidence_layer_data,
    layer_role,
    prediction_layer_data,
    slide_transform,
)
from napari_sgnet._qt.review_controls import class_features
from napari_sgnet.palette import Palette, PaletteError, load_palette

__all__ = ["LayerDisplay"]


class LayerDisplay:
    """Layer management for the controller (expects ``viewer``, ``state``, ``session``,
    ``slide_layer``, ``palette``, ``opacity``, ``show_confidence``, ``model`` and the Qt
    signals)."""

    viewer: Any
    state: Any
    session: Any
    slide_layer: Any
    model: Any
    palette: Palette
    opacity: float
    show_confidence: bool
    _last_shown: Any

    # ------------------------------------------------------------------ layers
    def layer(self, role: str, store: str | Path | None = None, *,
              placeholder: bool = False) -> Any:
        """The layer with a napari-sgnet ``role`` showing ``store`` (default: the current
        slide's store), or ``None``. Each slide of the viewer has its own layers.

        ``placeholder``: the empty prediction layer made ahead of a slide's first run
        (see :meth:`ensure_placeholder`) instead of a layer showing a store."""
        if store is None:
            store = self.session.store.path if self.session is not None else None
        if store is None:
            return None
        key = str(Path(store))
        for layer in self.viewer.layers:
            meta = layer.metadata.get(META_KEY) if layer_role(layer) == role else None
            if (meta is not None and meta.get("store") == key
                    and bool(meta.get(PLACEHOLDER_KEY)) == placeholder):
                return layer
        return None

    def ensure_placeholder(self, store: str | Path) -> None:
        """Make the prediction layer of a slide with no store yet, empty.

        napari takes 0.1-0.5 s of the main thread to create a Labels layer (its visual and
        controls). Made when the slide is attached, that cost is not paid between "Run on
        view" and the first tiles: the run's store replaces the layer's data (~0.04 s).
        """
        if self.slide_layer is None or self.layer("prediction", store) is not None:
            return
        if self.layer("prediction", store, placeholder=True) is not None:
            return
        scale, translate = slide_transform(self.slide_layer)
        active = self.viewer.layers.selection.active
        blank = [np.zeros((2, 2), np.uint8), np.zeros((1, 1), np.uint8)]
        layer = self.viewer.add_labels(
            blank, multiscale=True, name=PREDICTION_NAME, scale=scale, translate=translate,
            opacity=self.opacity, colormap=DirectLabelColormap(color_dict=self.palette
                                                               .napari_colors()),
            metadata={META_KEY: {"role": "prediction", "store": str(Path(store)),
                                 PLACEHOLDER_KEY: True}},
            **({"units": tuple(self.slide_layer.units)[-2:]}
               if self.slide_layer.units is not None else {}),
        )
        layer.features = class_features(self.palette)
        if active is not None:  # adding a layer selects it: keep the user's selection
            self.viewer.layers.selection.active = active

    def _fill_placeholder(self, layer: Any) -> None:
        """Show the session's store in the empty layer made by :meth:`ensure_placeholder`."""
        scale, translate = slide_transform(self.slide_layer)
        data, kw, _ = prediction_layer_data(
            self.session.store, slide_scale=scale, slide_translate=translate,
            palette=self.palette, opacity=self.opacity, units=self.slide_layer.units,
        )
        layer.metadata = {**layer.metadata, META_KEY: kw["metadata"][META_KEY]}
        layer.data = data
        layer.scale, layer.translate = kw["scale"], kw["translate"]
        layer.colormap = DirectLabelColormap(color_dict=self.palette.napari_colors())
        layer.opacity = self.opacity

    def ensure_layers(self) -> None:
        """Add the prediction layer (and the confidence layer when on) if missing."""
        if self.session is None:
            return
        scale, translate = slide_transform(self.slide_layer)
        if self.layer("prediction") is None:
            layer = self.layer("prediction", placeholder=True)
            if layer is not None:
                self._fill_placeholder(layer)
            else:
                data, kw, _ = prediction_layer_data(
                    self.session.store, slide_scale=scale, slide_translate=translate,
                    palette=self.palette, opacity=self.opacity, units=self.slide_layer.units,
                )
                layer = self.viewer.add_labels(data, **kw)
                layer.features = class_features(self.palette)  # class names in the status bar
            self._keep_on_top("edit")
            if self._last_shown is not None:  # tiles that landed while the store opened
                self.shown.emit(self._last_shown)
                self._last_shown = None
        if self.show_confidence and self.layer("confidence") is None:
            data, kw, _ = confidence_layer_data(
                self.session.store, slide_scale=scale, slide_translate=translate,
                units=self.slide_layer.units,
            )
            self.viewer.add_image(data, **kw)
            self._keep_on_top("edit")

    def _keep_on_top(self, role: str) -> None:
        layer = self.layer(role)
        if layer is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    def refresh_layers(self) -> None:
        """Show the tiles written since the last refresh (``shown`` says which run's)."""
        for role in ("prediction", "confidence"):
            layer = self.layer(role)
            if layer is not None:
                layer.refresh()
        if self._last_shown is not None and self.layer("prediction") is not None:
            self.shown.emit(self._last_shown)
            self._last_shown = None

    def set_confidence_visible(self, on: bool) -> None:
        """Show or hide the confidence overlay."""
        self.show_confidence = bool(on)
        layer = self.layer("confidence")
        if on:
            self.ensure_layers()
        elif layer is not None:
            self.viewer.layers.remove(layer)

    def set_opacity(self, value: float) -> None:
        """Opacity of the prediction and edit layers (0-1)."""
        self.opacity = float(value)
        for role in ("prediction", "edit"):
            layer = self.layer(role)
            if layer is not None:
                layer.opacity = self.opacity

    def apply_palette(self, palette: Palette) -> None:
        """Colour the label layers with ``palette`` (the state's ``palette`` event)."""
        colormap = DirectLabelColormap(color_dict=palette.napari_colors())
        for role in ("prediction", "edit"):
            layer = self.layer(role)
            if layer is not None:
                layer.colormap = colormap
                layer.features = class_features(palette)

    def load_palette(self, path: str | Path) -> bool:
        """Load a palette JSON and make it the state's; False (with a message) when invalid."""
        try:
            palette = load_palette(path)
        except PaletteError as exc:
            self.report_error(exc)
            return False
        if self.model is not None and palette.num_classes != self.model.info.palette.num_classes:
            show_warning(
                f"{Path(path).name} has {palette.num_classes} classes but the model predicts "
                f"{self.model.info.palette.num_classes}; colours are applied by label id."
            )
        self.state.set_palette(palette)
        return True
