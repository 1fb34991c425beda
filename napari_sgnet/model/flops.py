"""Model cost: FLOPs per tile (PyTorch's own FLOP counter) and parameter counts."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from napari_sgnet.model.sgnet import SegmentationModel

__all__ = ["count_flops", "count_parameters"]


def count_flops(model: SegmentationModel, patch_size: int | None = None) -> int:
    """Floating-point operations for one tile (one local patch, plus its context if read).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and
    attention as ``2 x MACs``; elementwise ops, norms and resampling are not counted).

    Parameters
    ----------
    model : SegmentationModel
        The model; it is run once in eval mode on zeros, then restored to its previous mode.
    patch_size : int, optional
        Local patch side (multiple of 32); defaults to ``model.config.patch_size``. The context
        side is ``round(patch_size * config.context_factor)``.
    """
    p = int(patch_size or model.config.patch_size)
    if p <= 0 or p % 32:
        raise ValueError(f"patch_size must be a positive multiple of 32, got {p}")
    param = next(model.parameters())
    kw = {"device": param.device, "dtype": param.dtype}
    local = torch.zeros(1, 3, p, p, **kw)
    context = None
    if model.config.needs_context:
        a = round(p * model.config.context_factor)
        context = torch.zeros(1, 3, a, a, **kw)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(local, context)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
