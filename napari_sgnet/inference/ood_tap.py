"""Pooled decoder features of a torch model, taken while it predicts (for the OOD check).

One forward hook is installed, once, on the model's general branch (``module.general``:
the decoder features ``(B, C, P/4, P/4)`` of the local patch, for SGNet and the baseline
alike); it hands the spatial mean of its output to the collector of the calling thread,
so several threads can share one cached model and each gets only its own batches' features.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["collect", "feature_module", "install"]

_LOCAL = threading.local()
_LOCK = threading.Lock()
_TAPPED: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def feature_module(module: Any) -> torch.nn.Module | None:
    """The sub-module whose output is pooled (``module.general``), or ``None``."""
    general = getattr(module, "general", None)
    return general if isinstance(general, torch.nn.Module) else None


def _hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
    sink = getattr(_LOCAL, "sink", None)
    if sink is None or not isinstance(output, torch.Tensor) or output.ndim != 4:
        return
    sink.append(output.detach().float().mean(dim=(2, 3)).cpu().numpy())


def install(module: Any) -> bool:
    """Install the hook on ``module``'s general branch (idempotent); False when it has none."""
    target = feature_module(module)
    if target is None:
        return False
    with _LOCK:
        if target not in _TAPPED:
            target.register_forward_hook(_hook)
            _TAPPED.add(target)
    return True


@contextmanager
def collect() -> Iterator[list[np.ndarray]]:
    """Collect, in this thread, the ``(B, C)`` pooled features of every forward pass."""
    sink: list[np.ndarray] = []
    previous = getattr(_LOCAL, "sink", None)
    _LOCAL.sink = sink
    try:
        yield sink
    finally:
        _LOCAL.sink = previous
