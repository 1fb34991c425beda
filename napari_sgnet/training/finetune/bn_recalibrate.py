"""Batch-norm statistics recalibration after a short fine-tuning run.

During a short run the weights move faster than batch norm's running averages follow
(momentum 0.1 averages over roughly the last ten batches, computed with older weights), so the
model in eval mode can disagree with the model that was trained. Recalibration resets the
running statistics and re-estimates them as an exact average over a few batches of training
data with the final weights (as ``torch.optim.swa_utils.update_bn`` does), without any
gradient step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.model.runtime import autocast, normalise
from napari_sgnet.training.augment import AugmentConfig
from napari_sgnet.training.dataset import SampleSource, make_batch

__all__ = ["recalibrate_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    config: ModelConfig,
    sources: Sequence[SampleSource],
    batches: int,
    batch_size: int,
    seed: int,
    first_step: int,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> int:
    """Re-estimate every batch-norm layer's running mean/variance on training batches.

    Parameters
    ----------
    model : nn.Module
        Modified in place; left in eval mode.
    config : ModelConfig
        Normalisation and context use.
    sources : sequence of SampleSource
        Where the batches come from (no augmentation).
    batches, batch_size : int
        How many batches of how many samples.
    seed, first_step : int
        Batch ``i`` is ``make_batch(..., seed, first_step + i)``; pass the number of training
        steps so that these batches are not the training steps' batches.
    device : torch.device
        Where the model is.
    amp : torch.dtype, optional
        Autocast dtype.

    Returns
    -------
    int
        Number of batch-norm layers recalibrated (0: nothing to do).
    """
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers or batches <= 0:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    try:
        for i in range(batches):
            batch = make_batch(sources, batch_size, seed, first_step + i, AugmentConfig.none())
            local = normalise(batch["local"].to(device), config)
            context = (
                normalise(batch["context"].to(device), config) if config.needs_context else None
            )
            with autocast(device, amp):
                model(local, context, batch["local_box"].to(device))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(layers)
