"""Training SGNet and its baseline: samples, augmentation, trainer, held-out evaluation.

Public API (imported lazily, so ``napari_sgnet.training.patches`` stays torch-free)::

    train(model_config, train_sources, out_dir, train_config=None, val_sources=(), ...)
    TrainConfig, TrainProgress, TrainResult, TrainError
    SlideSource, SlideSampler, PatchFolderSampler, make_batch, AugmentConfig
    synthetic_source(seed, size), file_source(image, labels)
    evaluate_model(model, config, sources, tile=None, ...), predict_level(...), EvalResult
    PatchItem, write_patch_folder(folder, items, palette, ...), read_patch_folder(folder)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "augment",
    "DataError": "dataset",
    "EvalResult": "evaluate",
    "PatchFolder": "patches",
    "PatchFolderError": "patches",
    "PatchFolderSampler": "dataset",
    "PatchItem": "patches",
    "SlideSampler": "dataset",
    "SlideSource": "dataset",
    "TrainConfig": "config",
    "TrainError": "trainer",
    "TrainProgress": "trainer",
    "TrainResult": "trainer",
    "evaluate_model": "evaluate",
    "file_source": "sources",
    "make_batch": "dataset",
    "predict_level": "evaluate",
    "read_patch_folder": "patches",
    "synthetic_source": "sources",
    "train": "trainer",
    "write_patch_folder": "patches",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"napari_sgnet.training.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'napari_sgnet.training' has no attribute {name!r}")
