"""Export buttons: ask where, then run the core exporter on a worker thread.

The exporters themselves (``napari_sgnet.io.exporters``, ``napari_sgnet.training``)
are what the CLI calls too; :func:`napari_sgnet.app.exports.run_export` picks
the right one for a kind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QWidget

from napari_sgnet._qt import dialogs
from napari_sgnet._qt.controller import AppController
from napari_sgnet._qt.workers import function_worker, start_worker
from napari_sgnet.app.exports import EXPORT_KINDS, default_export_path, run_export

__all__ = ["EXPORTS", "ExportActions"]

log = logging.getLogger(__name__)

#: kind -> (button text, tooltip)
EXPORTS: dict[str, tuple[str, str]] = {
    "omezarr": ("OME-Zarr...", "Label pyramid with class names and colours (any OME-Zarr "
                "viewer, napari, QuPath via OME-Zarr)."),
    "geojson": ("GeoJSON...", "One polygon per class region, with class names (QuPath: "
                "File > Import objects)."),
    "tiff": ("TIFF...", "Pyramidal label TIFF at the label resolution."),
    "patches": ("Training patches...", "Image + label patches of the corrected regions, "
                "for fine-tuning."),
}
_FILTERS = {
    "omezarr": "OME-Zarr (*.zarr)",
    "geojson": "GeoJSON (*.geojson *.json)",
    "tiff": "TIFF (*.tif *.tiff)",
}


class ExportActions(QObject):
    """Runs exports for an :class:`AppController`."""

    progress = Signal(int, int)
    exported = Signal(str, object)  # kind, path

    def __init__(self, controller: AppController, parent_widget: QWidget | None = None) -> None:
        super().__init__()
        self.c = controller
        self.parent_widget = parent_widget
        self._workers: list[Any] = []
        assert set(EXPORTS) == set(EXPORT_KINDS)

    def export_with_dialog(self, kind: str) -> Any:
        """Ask for a destination, then :meth:`export` there."""
        session = self.c.session
        if session is None:
            self.c.status.emit("Nothing to export yet: run the model first.")
            return None
        start = default_export_path(kind, session.store.path, self.c.slide)
        if kind == "patches":
            path = dialogs.ask_directory(self.parent_widget, "Folder for training patches",
                                         start.parent)
            path = path / start.name if path is not None else None
        else:
            path = dialogs.ask_save_path(self.parent_widget, f"Export {EXPORTS[kind][0]}",
                                         start, _FILTERS[kind])
        return None if path is None else self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> Any:
        """Export the current store as ``kind`` to ``path`` on a worker; returns the worker."""
        session = self.c.session
        if session is None:
            self.c.status.emit("Nothing to export yet: run the model first.")
            return None
        if session.has_uncommitted_edits:
            show_info("Your open edit is not committed yet; the export holds committed labels.")

        def report(done: int, total: int) -> None:  # called on the worker thread
            self.progress.emit(int(done), int(total))

        worker = function_worker(run_export, kind, session.store, self.c.slide, Path(path),
                                 progress=report)
        worker.returned.connect(lambda out: self._done(kind, out))
        worker.errored.connect(self.c.report_error)
        worker.finished.connect(lambda: self._workers.remove(worker))
        self._workers.append(worker)
        self.c.status.emit(f"Exporting {kind} to {path}...")
        start_worker(worker)
        return worker

    def _done(self, kind: str, out: Any) -> None:
        self.c.status.emit(f"Exported {kind}: {out}")
        show_info(f"Exported {EXPORTS[kind][0].rstrip('.')} to {out}")
        self.exported.emit(kind, out)
