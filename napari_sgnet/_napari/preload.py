"""Import, in the background, the modules the SGNet dock needs, once a slide is opened.

napari imports a dock widget's module on the main thread when the user opens the dock;
the label store (zarr, numcodecs) and the review code behind it take ~0.3 s to import
here, ~1 s while the model loads. Opening a slide or a sample through this plugin starts
those imports on a daemon thread, so that the dock usually finds them done. Python's
import locks make a concurrent import of the same module by the main thread wait for
this one instead of importing it twice. No Qt module is imported here.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

__all__ = ["DOCK_MODULES", "preload_dock_modules"]

log = logging.getLogger(__name__)

DOCK_MODULES = (
    "napari_sgnet._napari.session",  # the label store (zarr) and the review code
    "napari_sgnet.app.models",  # the model registry (not torch: the model loads on a worker)
    "napari_sgnet.app.runs",
)

PRELOAD_DELAY_S = 1.0  # after napari has drawn the opened slide (~0.8 s here)
_started = threading.Event()


def preload_dock_modules() -> threading.Thread | None:
    """Start importing :data:`DOCK_MODULES` on a daemon thread (first call only).

    Returns
    -------
    threading.Thread or None
        The thread started, or ``None`` when an earlier call started it.
    """
    if _started.is_set():
        return None
    _started.set()
    thread = threading.Thread(target=_import_all, name="napari-sgnet-preload", daemon=True)
    thread.start()
    return thread


def _import_all() -> None:
    # napari slices and draws the new layers first; importing meanwhile would hold the
    # GIL against the threads reading their chunks (measured: open 0.9 -> 1.2 s)
    time.sleep(PRELOAD_DELAY_S)
    for name in DOCK_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the dock imports it again and reports the error there
            log.debug("preloading %s failed", name, exc_info=True)
