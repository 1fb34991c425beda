"""Weights shipped inside the package: ``napari_sgnet/weights/<kind>/``.

Each kind (``"sgnet"``, ``"baseline"``, ...) is a checkpoint directory as written by
:func:`~napari_sgnet.model.checkpoint.save_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_sgnet.model.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_checkpoint,
)
from napari_sgnet.model.sgnet import SegmentationModel

__all__ = ["WEIGHTS_DIR", "bundled_model_dir", "list_bundled", "load_bundled"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def list_bundled() -> list[str]:
    """Names of the bundled checkpoints that are present (sorted)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        d.name
        for d in WEIGHTS_DIR.iterdir()
        if d.is_dir() and (d / WEIGHTS_NAME).is_file() and (d / CONFIG_NAME).is_file()
    )


def bundled_model_dir(kind: str = "sgnet") -> Path:
    """Directory of the bundled checkpoint ``kind``.

    Raises
    ------
    CheckpointError
        If that checkpoint is not installed (the message lists those that are).
    ValueError
        If ``kind`` is not a plain name.
    """
    if not kind or kind != Path(kind).name or kind.startswith("."):
        raise ValueError(f"bundled model kind must be a plain name, got {kind!r}")
    directory = WEIGHTS_DIR / kind
    if not ((directory / WEIGHTS_NAME).is_file() and (directory / CONFIG_NAME).is_file()):
        available = ", ".join(list_bundled()) or "none"
        raise CheckpointError(
            directory,
            f"no bundled {kind!r} weights in this installation (available: {available}); "
            "train a model or pass a checkpoint directory",
        )
    return directory


def load_bundled(kind: str = "sgnet", device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a bundled checkpoint (see :func:`bundled_model_dir`)."""
    return load_checkpoint(bundled_model_dir(kind), device=device)
