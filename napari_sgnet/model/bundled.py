"""Load the weights shipped inside the package.

Where they are (``napari_sgnet/weights/<name>/``) and which exist is the registry's business
(:func:`napari_sgnet.registry.bundled_model_dir`, :func:`napari_sgnet.registry.list_bundled`,
re-exported here); this module only adds the torch loading.
"""

from __future__ import annotations

import torch

from napari_sgnet.model.checkpoint import load_checkpoint
from napari_sgnet.model.sgnet import SegmentationModel
from napari_sgnet.registry import DEFAULT_BUNDLED, bundled_model_dir, list_bundled

__all__ = ["bundled_model_dir", "list_bundled", "load_bundled"]


def load_bundled(
    name: str = DEFAULT_BUNDLED, device: str | torch.device = "cpu"
) -> SegmentationModel:
    """Load a bundled checkpoint onto ``device`` (eval mode).

    Parameters
    ----------
    name : str
        The bundled checkpoint's folder name (``"sgnet"``, ``"baseline"``, ...).
    device : str or torch.device
        Where to put the model.

    Raises
    ------
    ModelNotFoundError
        If that checkpoint is not installed (the message lists those that are).
    CheckpointError
        If it is installed but invalid.
    """
    return load_checkpoint(bundled_model_dir(name), device=device)
