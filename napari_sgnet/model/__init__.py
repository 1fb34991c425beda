"""SGNet in plain PyTorch: general-branch registry, surrounding-context branch, loss, checkpoints.

Public API::

    build_model(config) -> SegmentationModel      # SGNet (config.use_context) or baseline
    model(local, context=None, local_box_in_context=None) -> {"logits", ["aux"]}
    sgnet_loss(outputs, local_labels, context_labels, local_box_in_context=None, weights=...)
    save_checkpoint(model, directory, config=None, overwrite=False)
    load_checkpoint(directory_or_file, device="cpu")
    state_digest(model)                           # the registry's weights digest of a module
    count_flops(model, patch_size)
"""

from napari_sgnet.model.bundled import bundled_model_dir, list_bundled, load_bundled
from napari_sgnet.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_digest,
)
from napari_sgnet.model.crop import crop_to_box
from napari_sgnet.model.flops import count_flops, count_parameters
from napari_sgnet.model.general import GENERAL_BRANCHES, GeneralBranch, register_general_branch
from napari_sgnet.model.losses import sgnet_loss
from napari_sgnet.model.sgnet import SegmentationModel, build_model

__all__ = [
    "GENERAL_BRANCHES",
    "CheckpointError",
    "GeneralBranch",
    "SegmentationModel",
    "build_model",
    "bundled_model_dir",
    "count_flops",
    "count_parameters",
    "crop_to_box",
    "list_bundled",
    "load_bundled",
    "load_checkpoint",
    "register_general_branch",
    "save_checkpoint",
    "sgnet_loss",
    "state_digest",
]
