"""Thread-worker bodies: everything slow runs here, off the main thread.

Nothing in this module imports torch at import time; the engine (and torch with it)
is imported inside the workers. Workers never touch layers: they yield or return
plain values, and the controller applies them on the main thread.

Workers run on the app's own :class:`QThreadPool`, never on Qt's global pool: Qt
uses the global pool internally (e.g. to convert images while flushing the window's
backing store) and waits for it *while holding the GIL*; with the global pool full
of Python workers waiting for that GIL (2 threads on a 2-core machine), the
window would deadlock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, WorkerBase, create_worker
from qtpy.QtCore import Qt, QThreadPool

__all__ = [
    "app_pool",
    "function_worker",
    "generator_worker",
    "preload",
    "start_worker",
]

_POOL: QThreadPool | None = None


def app_pool() -> QThreadPool:
    """The thread pool of napari-sgnet's workers (separate from Qt's global pool)."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(4)
        _POOL.setExpiryTimeout(30_000)
    return _POOL


def start_worker(worker: WorkerBase) -> WorkerBase:
    """Start a worker on :func:`app_pool` (napari's ``worker.start()`` uses the global pool).

    The worker is registered like ``worker.start()`` registers it, so napari's
    ``WorkerBase.await_workers()`` on exit also stops it.
    """
    registry = getattr(WorkerBase, "_worker_set", None)
    if registry is not None:
        registry.add(worker)
        # direct: forget it as soon as it ends, even if no event loop runs after that
        worker.finished.connect(lambda: registry.discard(worker), Qt.DirectConnection)
    app_pool().start(worker)
    return worker


def preload() -> None:
    """Import what napari needs to create the first Labels layer (pandas, colormap helpers).

    Run on a worker when the dock opens, so the first predictions do not freeze the
    window for the second these imports take.
    """
    import pandas  # noqa: F401 - napari's layer features table
    from napari.utils.colormaps import label_colormap

    label_colormap(8)


def generator_worker(
    fn: Callable[..., Iterator[Any]], *args: Any, **kwargs: Any
) -> GeneratorWorker:
    """A not-yet-started worker iterating ``fn(*args, **kwargs)`` (e.g. a run's events)."""
    return create_worker(fn, *args, _start_thread=False, **kwargs)


def function_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FunctionWorker:
    """A not-yet-started worker calling ``fn(*args, **kwargs)`` once."""
    return create_worker(fn, *args, _start_thread=False, **kwargs)
