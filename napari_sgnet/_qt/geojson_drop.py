"""Dropping or opening a QuPath ``.geojson`` on an open slide: corrections to review.

The npe2 reader turns the file into an outline layer marked as an import
(:mod:`napari_sgnet._napari.geojson_layer`). When such a layer is added while the dock
shows a slide with its label store, :class:`GeoJSONDrop` opens the annotations as the
review session's pending edit (:func:`napari_sgnet.app.imports.open_import_edit`): the
edit layer appears over the annotated area, the person reviews it (and may paint), then
clicks Commit like after a brush edit (the commit records the file, its SHA-256 and its
feature count). The outline layer stays as a reference. Problems (unknown class, no store
yet, an edit already open, an area beyond the review crop) are shown as messages.
"""

from __future__ import annotations

import logging
from typing import Any

from napari.utils.notifications import show_warning

from napari_sgnet._napari.geojson_layer import IMPORT_ROLE
from napari_sgnet._napari.session import META_KEY, layer_role

__all__ = ["GeoJSONDrop"]

log = logging.getLogger(__name__)


class GeoJSONDrop:
    """Adopt imported GeoJSON layers as pending edits.

    Parameters
    ----------
    review : ReviewActions
        The dock's review actions (its controller, session and edit layer).
    """

    def __init__(self, review: Any) -> None:
        self.review = review
        self.c = review.c
        self.c.viewer.layers.events.inserted.connect(self._on_inserted)

    def shutdown(self) -> None:
        """Stop listening to the viewer's layers."""
        self.c.viewer.layers.events.inserted.disconnect(self._on_inserted)

    def _on_inserted(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and layer_role(layer) == IMPORT_ROLE:
            self.adopt(layer)

    def _refuse(self, message: str) -> bool:
        self.c.say(message)
        show_warning(message)
        return False

    def adopt(self, layer: Any) -> bool:
        """Open the layer's file as the pending edit; False (with a message) if it cannot."""
        path = layer.metadata[META_KEY]["path"]
        if self.c.slide_layer is not None:  # sit exactly on the slide the dock uses
            layer.scale = self.c.slide_layer.scale[-2:]
            layer.translate = self.c.slide_layer.translate[-2:]
        session = self.c.session
        if session is None:
            return self._refuse(
                f"{path}: importing annotations needs the slide's label store; run the model "
                "(Run on view) first, then open the file again."
            )
        if session.edit is not None:
            return self._refuse(f"{path}: commit or discard the open edit before importing.")
        from napari_sgnet.app.imports import open_import_edit

        try:
            edit = open_import_edit(session, path)
        except Exception as exc:  # user errors as a message; bugs logged with a traceback
            self.c.report_error(exc)
            return False
        self.review._show_edit(edit)
        n = int(edit.imported.sum()) if edit.imported is not None else 0
        features = layer.metadata[META_KEY].get("features", "?")
        self.c.say(
            f"Imported {features} annotation(s) from {layer.name.removeprefix('QuPath: ')} as an "
            f"edit of {n:,} label pixels: review (and paint), then Commit."
        )
        return True
