"""Coalesce frequent updates of a widget into at most one per interval (latest value wins).

A run reports progress after every batch (every 30-50 ms on this CPU). Each update of the
dock's progress bar or of napari's activity panel repaints part of the window, and with a
software-rendered (llvmpipe) canvas every repaint recomposes the GL canvas: measured in
``bench/bench_main_thread.py``, per-batch updates made a 40-tile view take 6.2 s instead of
2.3 s. :class:`Throttle` applies the first update at once, then at most one per interval,
and always the last one (so the bar never stays behind the work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

__all__ = ["Throttle"]


class Throttle:
    """Call ``fn`` at most once per ``interval_ms`` with the latest arguments (main thread).

    Parameters
    ----------
    fn : callable
        What to call.
    interval_ms : int
        Shortest time between two calls.
    parent : QObject, optional
        Owner of the timer (stops it when the parent is destroyed).
    """

    def __init__(self, fn: Callable[..., Any], interval_ms: int,
                 parent: QObject | None = None) -> None:
        self._fn = fn
        self._pending: tuple[Any, ...] | None = None
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self._apply_pending)

    def __call__(self, *args: Any) -> None:
        """Update now if the interval has passed since the last call, else later."""
        if self._timer.isActive():
            self._pending = args
            return
        self._fn(*args)
        self._timer.start()

    def flush(self) -> None:
        """Apply a pending update now (when the work ends)."""
        self._timer.stop()
        self._apply_pending(restart=False)

    def cancel(self) -> None:
        """Drop a pending update."""
        self._timer.stop()
        self._pending = None

    def _apply_pending(self, restart: bool = True) -> None:
        args, self._pending = self._pending, None
        if args is not None:
            self._fn(*args)
            if restart:
                self._timer.start()
