"""General-branch registry: encoder-decoder segmentation networks for the local patch.

A general branch maps the local patch ``(B, 3, P, P)`` to decoder features
``(B, out_channels, P/4, P/4)``. Built with ``num_classes``, it also owns a ``classifier``
(decoder features -> logits at stride 4) used by the baseline; SGNet builds it with
``num_classes=None`` and classifies the fused features with its own head instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from napari_sgnet.model.encoders import MobileNetV2Encoder, ResNetEncoder, TinyEncoder
from napari_sgnet.model.layers import ConvBNAct, SeparableConv, init_weights, resize

__all__ = [
    "ASPP",
    "GENERAL_BRANCHES",
    "DeepLabV3Plus",
    "FCNLite",
    "GeneralBranch",
    "register_general_branch",
]


class GeneralBranch(nn.Module):
    """Base class: ``forward(x) -> (B, out_channels, H/4, W/4)`` plus an optional classifier."""

    out_channels: int
    classifier: nn.Module | None

    def _finish(self, out_channels: int, num_classes: int | None) -> None:
        self.out_channels = out_channels
        self.classifier = nn.Conv2d(out_channels, num_classes, 1) if num_classes else None
        init_weights(self)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, and image pooling, fused by 1x1.

    The image-pooling branch has no BatchNorm, so training with batch size 1 works.
    """

    def __init__(
        self, in_ch: int, out_ch: int, rates: tuple[int, ...], separable: bool = False
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_ch, out_ch, 1)]
        for r in rates:
            branches.append(
                SeparableConv(in_ch, out_ch, dilation=r)
                if separable
                else ConvBNAct(in_ch, out_ch, 3, dilation=r)
            )
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True)
        )
        self.project = ConvBNAct(out_ch * (len(rates) + 2), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return cast(torch.Tensor, self.project(torch.cat(outs, dim=1)))


class DeepLabV3Plus(GeneralBranch):
    """DeepLabV3+: encoder at output stride 16 -> ASPP -> decoder with a stride-4 skip.

    Parameters
    ----------
    encoder : nn.Module
        Returns ``{4: f4, 8: f8, 16: f16}`` and has ``channels``.
    aspp_ch, low_ch, decoder_ch : int
        ASPP width, projected low-level (stride-4) width, decoder width (= ``out_channels``).
    rates : tuple of int
        ASPP dilation rates at stride 16.
    separable : bool
        Depthwise-separable convolutions in ASPP and decoder (the Xception/MobileNet variant).
    num_classes : int or None
        Number of classes for the branch's own classifier; ``None`` for no classifier.
    """

    def __init__(
        self,
        encoder: nn.Module,
        aspp_ch: int,
        low_ch: int,
        decoder_ch: int,
        rates: tuple[int, ...],
        separable: bool,
        num_classes: int | None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        ch = cast("dict[int, int]", encoder.channels)
        self.aspp = ASPP(ch[16], aspp_ch, rates, separable)
        self.low = ConvBNAct(ch[4], low_ch, 1)
        conv: Callable[[int, int], nn.Module] = (
            SeparableConv if separable else (lambda i, o: ConvBNAct(i, o, 3))
        )
        self.decoder = nn.Sequential(
            conv(aspp_ch + low_ch, decoder_ch), conv(decoder_ch, decoder_ch)
        )
        self._finish(decoder_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        low = self.low(feats[4])
        high = resize(self.aspp(feats[16]), low.shape[-2:])
        return cast(torch.Tensor, self.decoder(torch.cat([high, low], dim=1)))


class FCNLite(GeneralBranch):
    """A U-Net/FPN-like network of dense convolutions: VGG-like encoder, top-down decoder.

    The decoder projects the stride-16, -8 and -4 features to ``width`` channels (1x1), adds
    each upsampled coarser level to the next finer one and smooths it with a 3x3 conv: every
    layer is a conv-BN(-ReLU) that inference folds (``model/fuse.py``), and none is depthwise
    (dense 3x3 convolutions run at 2-3x the FLOP rate of depthwise ones on a CPU).

    Parameters
    ----------
    width : int
        Decoder width (= ``out_channels``).
    num_classes : int or None
        Number of classes for the branch's own classifier; ``None`` for no classifier.
    widths, depths : tuple of int
        The encoder's stage widths and depths (:class:`~napari_sgnet.model.encoders.TinyEncoder`).
    """

    def __init__(
        self,
        width: int = 32,
        num_classes: int | None = None,
        widths: tuple[int, int, int, int] = (16, 24, 48, 96),
        depths: tuple[int, int, int] = (2, 2, 2),
    ) -> None:
        super().__init__()
        self.encoder = TinyEncoder(widths, depths)
        ch = self.encoder.channels
        self.lateral = nn.ModuleDict({str(s): ConvBNAct(ch[s], width, 1) for s in (4, 8, 16)})
        self.smooth8 = ConvBNAct(width, width, 3)
        self.smooth4 = ConvBNAct(width, width, 3)
        self._finish(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        p = self.lateral["16"](f[16])
        p = self.smooth8(self.lateral["8"](f[8]) + resize(p, f[8].shape[-2:]))
        return cast(
            torch.Tensor, self.smooth4(self.lateral["4"](f[4]) + resize(p, f[4].shape[-2:]))
        )


BranchBuilder = Callable[[int | None], GeneralBranch]
GENERAL_BRANCHES: dict[str, BranchBuilder] = {}


def register_general_branch(name: str) -> Callable[[BranchBuilder], BranchBuilder]:
    """Decorator adding ``builder(num_classes) -> GeneralBranch`` to :data:`GENERAL_BRANCHES`."""

    def deco(builder: BranchBuilder) -> BranchBuilder:
        if name in GENERAL_BRANCHES:
            raise ValueError(f"general branch {name!r} is already registered")
        GENERAL_BRANCHES[name] = builder
        return builder

    return deco


@register_general_branch("deeplabv3plus_small")
def deeplabv3plus_small(num_classes: int | None = None) -> GeneralBranch:
    """DeepLabV3+ on a MobileNetV2-0.5 encoder with separable ASPP/decoder (CPU-friendly).

    ASPP rates 3/6/9 suit the 16 x 16 stride-16 map of a 256-px patch.
    """
    return DeepLabV3Plus(
        MobileNetV2Encoder(width=0.5),
        aspp_ch=128,
        low_ch=32,
        decoder_ch=96,
        rates=(3, 6, 9),
        separable=True,
        num_classes=num_classes,
    )


@register_general_branch("deeplabv3plus_r50")
def deeplabv3plus_r50(num_classes: int | None = None) -> GeneralBranch:
    """DeepLabV3+ on a ResNet-50 bottleneck encoder (for GPUs), standard widths and rates."""
    return DeepLabV3Plus(
        ResNetEncoder((3, 4, 6, 3)),
        aspp_ch=256,
        low_ch=48,
        decoder_ch=256,
        rates=(6, 12, 18),
        separable=False,
        num_classes=num_classes,
    )


@register_general_branch("fcn_lite")
def fcn_lite(num_classes: int | None = None) -> GeneralBranch:
    """The lightest branch: tiny conv encoder + FPN-like decoder, 32 channels at stride 4."""
    return FCNLite(width=32, num_classes=num_classes)


@register_general_branch("vgg_fpn")
def vgg_fpn(num_classes: int | None = None) -> GeneralBranch:
    """Dense VGG-like encoder 32/48/96/192 (two 3x3 per stage) + FPN-like decoder, 64 channels.

    Built for the CPU: no depthwise convolution; with SGNet's SCB at ``sci_width`` 64 and one
    SCI block it runs the forward pass in about half the bundled model's time
    (docs/benchmarks.md, "Architecture for the retrained weights").
    """
    return FCNLite(width=64, num_classes=num_classes, widths=(32, 48, 96, 192))


@register_general_branch("vgg_fpn_deep")
def vgg_fpn_deep(num_classes: int | None = None) -> GeneralBranch:
    """:func:`vgg_fpn` with three 3x3 convolutions in the stride-8 and -16 stages.

    The larger receptive field and capacity (+0.42 M parameters) cost little time: the extra
    layers run on 16 x 16 and 8 x 8 maps of a 128-px patch.
    """
    return FCNLite(width=64, num_classes=num_classes, widths=(32, 48, 96, 192), depths=(2, 3, 3))
