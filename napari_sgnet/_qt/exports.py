"""Export buttons: ask where, then run the export on a worker thread.

The buttons, their tooltips, the default file names and the dialog filters all come from
the export table (:data:`napari_sgnet.app.exports.EXPORTS`), and the export itself is
:func:`napari_sgnet.app.exports.run_export`, which the CLI's ``export`` command calls too.
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
from napari_sgnet._qt.export_options import ExportOptions
from napari_sgnet._qt.review_controls import ActivityProgress
from napari_sgnet._qt.workers import function_worker, start_worker
from napari_sgnet.app.exports import EXPORTS, default_export_path, export_format, run_export

__all__ = ["ExportActions"]

log = logging.getLogger(__name__)


class ExportActions(QObject):
    """Runs the dock's exports for an :class:`AppController`."""

    progress = Signal(int, int)
    exported = Signal(str, object)  # kind, path

    def __init__(self, controller: AppController, parent_widget: QWidget | None = None) -> None:
        super().__init__()
        self.c = controller
        self.parent_widget = parent_widget
        self._workers: list[Any] = []
        self.activity = ActivityProgress("SGNet: export")  # napari's activity panel
        self.options = ExportOptions()  # magicgui forms of the kinds' options
        self.progress.connect(self._show_activity)  # a QObject slot: runs on the main thread

    def _show_activity(self, done: int, total: int) -> None:
        self.activity.update(done, total)

    def _close_activity(self) -> None:
        self.activity.close()

    @staticmethod
    def button_text(kind: str) -> str:
        """The export button's text, e.g. ``"GeoJSON..."``."""
        return f"{EXPORTS[kind].title}..."

    def export_with_dialog(self, kind: str) -> Any:
        """Ask for a destination, then :meth:`export` there."""
        session = self.c.session
        if session is None:
            self.c.say("Nothing to export yet: run the model first.")
            return None
        row = export_format(kind)
        start = default_export_path(kind, session.store.path, self.c.slide)
        if row.folder:
            path = dialogs.ask_directory(self.parent_widget, f"Folder for {row.title.lower()}",
                                         start.parent)
            path = path / start.name if path is not None else None
        else:
            path = dialogs.ask_save_path(self.parent_widget, f"Export {row.title}", start,
                                         row.file_filter)
        return None if path is None else self.export(kind, path)

    def export(self, kind: str, path: str | Path, options: dict[str, Any] | None = None) -> Any:
        """Export the current store as ``kind`` to ``path`` on a worker; returns the worker.

        ``options`` default to the export options form's (:class:`ExportOptions`).
        """
        session = self.c.session
        if session is None:
            self.c.say("Nothing to export yet: run the model first.")
            return None
        if session.has_uncommitted_edits:
            show_info("Your open edit is not committed yet; the export holds committed labels.")

        def report(done: int, total: int) -> None:  # called on the worker thread
            self.progress.emit(int(done), int(total))

        opts = self.options.values(kind) if options is None else dict(options)
        worker = function_worker(run_export, kind, session.store, Path(path), slide=self.c.slide,
                                 progress=report, **opts)
        worker.returned.connect(lambda out: self._done(kind, out))
        worker.errored.connect(self.c.report_error)
        worker.finished.connect(lambda: self._workers.remove(worker))
        worker.finished.connect(self._close_activity)
        self._workers.append(worker)
        self.c.say(f"Exporting {EXPORTS[kind].title} to {path}...")
        start_worker(worker)
        return worker

    def _done(self, kind: str, out: Any) -> None:
        self.c.say(f"Exported {EXPORTS[kind].title}: {out}")
        show_info(f"Exported {EXPORTS[kind].title} to {out}")
        self.exported.emit(kind, out)
