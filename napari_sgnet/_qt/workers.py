"""Thread-worker bodies: everything slow runs here, off the main thread.

Nothing in this module imports torch at import time; the engine (and torch with it)
is imported inside the workers. Workers never touch layers: they yield or return
plain values, and the controller applies them on the main thread.

Workers run on the app's own :class:`QThreadPool`, never on Qt's global pool: Qt
uses the global pool internally (e.g. to convert images while flushing the window's
backing store) and waits for it *while holding the GIL*; with the global pool full
of Python workers waiting for that GIL (2 threads on a 2-core machine), the
window would deadlock.

Errors: a worker's exception is reported by the handler its caller connects to
``errored`` (the controller's ``report_error``: one napari notification, the traceback
logged), never re-raised on the main thread as well (napari's default, which showed every
error twice, and aborted the process where napari's exception hook is not installed).
Every worker also logs its exception with the traceback at DEBUG level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, WorkerBase, create_worker
from qtpy.QtCore import Qt, QThreadPool

from napari_sgnet.errors import SGNetError

__all__ = [
    "GeneratorCrashError",
    "app_pool",
    "function_worker",
    "generator_worker",
    "original_error",
    "preload",
    "start_worker",
]

log = logging.getLogger(__name__)

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


def _log_error(name: str) -> Callable[[BaseException], None]:
    def log_error(exc: BaseException) -> None:
        log.debug("worker %s failed", name, exc_info=exc)

    return log_error


class GeneratorCrashError(SGNetError):
    """A ``RuntimeError`` raised in a generator worker, with it as ``__cause__``.

    superqt takes a ``RuntimeError`` out of a generator for a deleted worker and only warns
    about it; torch raises ``RuntimeError`` for real failures, so it travels as this.
    Use :func:`original_error` to get it back.
    """


def original_error(exc: BaseException) -> BaseException:
    """The exception a worker raised (unwrapping :class:`GeneratorCrashError`)."""
    cause = exc.__cause__
    return cause if isinstance(exc, GeneratorCrashError) and cause is not None else exc


def _crash_safe(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            return (yield from fn(*args, **kwargs))
        except RuntimeError as exc:
            raise GeneratorCrashError(str(exc)) from exc

    gen.__qualname__ = getattr(fn, "__qualname__", "generator")
    return gen


def _worker(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    # _ignore_errors: the caller's ``errored`` handler reports it (once); napari's default
    # re-raises it on the main thread too
    worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.errored.connect(_log_error(getattr(fn, "__qualname__", repr(fn))))
    return worker


def generator_worker(
    fn: Callable[..., Iterator[Any]], *args: Any, **kwargs: Any
) -> GeneratorWorker:
    """A not-yet-started worker iterating ``fn(*args, **kwargs)`` (e.g. a run's events).

    Connect ``errored`` to report a failure: it is not re-raised on the main thread.
    """
    worker: GeneratorWorker = _worker(_crash_safe(fn), args, kwargs)
    return worker


def function_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FunctionWorker:
    """A not-yet-started worker calling ``fn(*args, **kwargs)`` once.

    Connect ``errored`` to report a failure: it is not re-raised on the main thread.
    """
    worker: FunctionWorker = _worker(fn, args, kwargs)
    return worker
