"""Inference-time fusion: batch norm folded into the convolutions before it, and no unused work.

A model loaded for inference (:class:`~napari_sgnet.inference.predictor.TorchPredictor`) runs
a *copy* prepared by :func:`prepare_for_inference`; the trained module, its weights digest
and its training behaviour are untouched. Preparing:

1. folds every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in an
   ``nn.Sequential`` (every ``ConvBNAct`` of this package) into that convolution
   (:func:`fuse_conv_bn`), and removes the batch norm;
2. drops SGNet's auxiliary head (``aux_head``): its output, the surrounding patch's
   segmentation, is a training signal that inference never reads;
3. optionally converts the weights to channels-last memory (oneDNN's fast layout on CPUs) and
   hands every convolution its input channels-last (a concatenation with an NCHW tensor
   would otherwise reach a depthwise convolution as NCHW).

Folding is exact in real arithmetic; in float32 the logits differ from the unfolded model's by
rounding only (about 1e-6 relative, see ``tests/test_fuse.py`` and docs/model.md).
"""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["FusionReport", "fold_batchnorm", "fuse_conv_bn", "prepare_for_inference"]

log = logging.getLogger(__name__)


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    With ``s = gamma / sqrt(running_var + eps)`` per output channel:
    ``w' = w * s`` and ``b' = (b - running_mean) * s + beta`` (``b = 0`` when ``conv`` has no
    bias). The arithmetic runs in float64 and is stored in the convolution's dtype.

    Parameters
    ----------
    conv : nn.Conv2d
        The convolution (any groups, stride, dilation, padding).
    bn : nn.BatchNorm2d
        The batch norm applied to its output, with running statistics.

    Returns
    -------
    nn.Conv2d
        A new convolution with a bias, on the same device and dtype as ``conv``; the
        arguments are not modified.

    Raises
    ------
    ValueError
        If ``bn`` has no running statistics or its width is not ``conv``'s output width.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a batch norm without running statistics")
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"batch norm width {bn.num_features} != convolution output {conv.out_channels}"
        )
    weight = conv.weight.detach()
    f64 = torch.float64
    scale = bn.running_var.detach().to(f64).add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().to(f64)
    bias = (
        conv.bias.detach().to(f64)
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=f64, device=weight.device)
    )
    bias = (bias - bn.running_mean.detach().to(f64)) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.detach().to(f64)
    fused = copy.deepcopy(conv)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    with torch.no_grad():
        fused.weight = nn.Parameter(
            (weight.to(f64) * scale.view(shape)).to(weight.dtype), requires_grad=False
        )
        fused.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
    return fused


def fold_batchnorm(module: nn.Module, *, inplace: bool = False) -> tuple[nn.Module, int, int]:
    """Fold each ``Conv2d -> BatchNorm2d`` pair of every ``nn.Sequential`` into the convolution.

    The batch norm is removed from its ``nn.Sequential`` (the remaining entries keep their
    names and order). Only batch norms that use running statistics in eval mode are folded, so
    the result must be used in eval mode.

    Parameters
    ----------
    module : nn.Module
        The model; it is put in eval mode.
    inplace : bool
        Modify ``module`` itself instead of a deep copy.

    Returns
    -------
    folded : nn.Module
        The model with the batch norms folded (``module`` itself when ``inplace``).
    n_folded : int
        Batch norms folded.
    n_left : int
        Batch norms that could not be folded (not directly after a ``Conv2d`` in an
        ``nn.Sequential``, or without running statistics); they still run as batch norms.
    """
    out = module if inplace else copy.deepcopy(module)
    out.eval()
    folded = 0
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, name in itertools.pairwise(names):
            if prev not in seq._modules:  # a batch norm folded at the previous step
                continue
            conv, bn = seq._modules[prev], seq._modules[name]
            if (
                isinstance(conv, nn.Conv2d)
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                seq._modules[prev] = fuse_conv_bn(conv, bn)
                del seq._modules[name]
                folded += 1
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in out.modules())
    return out, folded, left


@dataclass(frozen=True)
class FusionReport:
    """What :func:`prepare_for_inference` did to a model (kept as ``module.fusion_report``).

    Attributes
    ----------
    batchnorm_folded, batchnorm_left : int
        Batch norms folded into convolutions, and those left running.
    aux_head_dropped : bool
        Whether SGNet's auxiliary head was removed.
    channels_last : bool
        Whether the 4-d weights were converted to channels-last memory.
    """

    batchnorm_folded: int
    batchnorm_left: int
    aux_head_dropped: bool
    channels_last: bool


def _to_channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _channels_last_input(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Forward pre-hook: hand a convolution its input in channels-last memory.

    A concatenation of a channels-last map with an NCHW one (SGNet's head input: decoder
    features and the resampled context features; ASPP's branches and its broadcast image
    pooling) comes out NCHW, and oneDNN runs a depthwise convolution on NCHW input about 10x
    slower than on NHWC. A no-op (no copy) when the input is channels-last already.
    """
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu":
        if not x.is_contiguous(memory_format=torch.channels_last):
            return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def prepare_for_inference(
    module: nn.Module, *, channels_last: bool = True, inplace: bool = False
) -> nn.Module:
    """The model as inference runs it: batch norm folded, auxiliary head dropped, eval mode.

    The forward signature is unchanged (``module(local, context=...)`` returns
    ``{"logits": ...}``; SGNet no longer returns ``"aux"``), and so are the sub-module names
    (``module.general`` still gives the decoder features, for forward hooks).

    Parameters
    ----------
    module : nn.Module
        A trained model (a :class:`~napari_sgnet.model.sgnet.SegmentationModel` or any module
        built from ``nn.Sequential`` conv-BN blocks). Its weights digest is *not* that of the
        result: describe the model before preparing it.
    channels_last : bool
        Convert 4-d weights to channels-last memory and give every CPU convolution a
        channels-last input (a forward pre-hook; it copies only inputs that are not).
    inplace : bool
        Prepare ``module`` itself instead of a deep copy (for a module nothing else uses).

    Returns
    -------
    nn.Module
        The prepared model, in eval mode, with ``fusion_report`` (a :class:`FusionReport`).
    """
    out, folded, left = fold_batchnorm(module, inplace=inplace)
    dropped = getattr(out, "aux_head", None) is not None
    if dropped:
        out.add_module("aux_head", None)  # SegmentationModel.forward then returns no "aux"
    with torch.no_grad():
        for p in out.parameters():
            p.requires_grad_(False)
            if channels_last:
                p.data = _to_channels_last(p.data)
    if channels_last:
        for m in out.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_pre_hook(_channels_last_input)
    report = FusionReport(folded, left, dropped, channels_last)
    object.__setattr__(out, "fusion_report", report)
    log.debug("prepared %s for inference: %r", type(module).__name__, report)
    return out
