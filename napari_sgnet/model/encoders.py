"""Encoders for the general branch, in plain PyTorch (no torchvision, no pretrained weights).

Every encoder maps ``(B, 3, H, W)`` to a dict ``{4: f4, 8: f8, 16: f16}`` of feature maps at
strides 4, 8 and 16 (output stride 16: the last stage is dilated instead of strided, as in
DeepLabV3+), and exposes their channel counts as ``channels``.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_sgnet.model.layers import ConvBNAct, make_divisible

__all__ = ["MobileNetV2Encoder", "ResNetEncoder", "TinyEncoder"]

Features = dict[int, torch.Tensor]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 -> depthwise 3x3 -> project 1x1, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden),
            ConvBNAct(hidden, out_ch, 1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2-like encoder at output stride 16 (the stride-32 stage is dilated).

    Parameters
    ----------
    width : float
        Channel multiplier (MobileNetV2's alpha); 0.5 is fast on a CPU.
    """

    # (expansion, channels, repeats, stride) as in MobileNetV2 Table 2, without the 1280 conv.
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, width: float = 0.5) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width)
        self.stem = ConvBNAct(3, in_ch, 3, stride=2)
        stride, dilation = 2, 1
        stages: list[nn.Module] = []
        self._taps: dict[int, int] = {}
        channels: dict[int, int] = {}
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            out_ch = make_divisible(c * width)
            first_dilation = dilation
            if s == 2 and stride == 16:  # keep output stride 16: dilate instead of striding
                dilation *= 2
                s = 1
            stride *= s
            blocks = [InvertedResidual(in_ch, out_ch, s, t, first_dilation)]
            blocks += [InvertedResidual(out_ch, out_ch, 1, t, dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
            self._taps[stride] = i  # the last stage at each stride is that stride's feature
            channels[stride] = out_ch
        self.stages = nn.ModuleList(stages)
        self.channels = {k: channels[k] for k in (4, 8, 16)}

    def forward(self, x: torch.Tensor) -> Features:
        x = self.stem(x)
        want = {idx: s for s, idx in self._taps.items() if s in (4, 8, 16)}
        out: Features = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in want:
                out[want[i]] = x
        return out


class Bottleneck(nn.Module):
    """ResNet bottleneck (v1.5: the stride sits on the 3x3 conv)."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = ConvBNAct(in_ch, mid_ch, 1)
        self.conv2 = ConvBNAct(mid_ch, mid_ch, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvBNAct(mid_ch, out_ch, 1, act=False)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = ConvBNAct(in_ch, out_ch, 1, stride=stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))


class ResNetEncoder(nn.Module):
    """ResNet-50-style bottleneck encoder at output stride 16 (layer4 dilated by 2).

    Parameters
    ----------
    layers : tuple of int
        Bottleneck blocks per stage; ``(3, 4, 6, 3)`` is ResNet-50.
    base : int
        Width of the first stage's bottleneck (64 in ResNet-50).
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), base: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNAct(3, base, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1)
        )
        in_ch = base
        specs = ((base, 1, 1), (base * 2, 2, 1), (base * 4, 2, 1), (base * 8, 1, 2))
        stages = []
        for n, (mid, stride, dilation) in zip(layers, specs, strict=True):
            blocks = [Bottleneck(in_ch, mid, stride, max(1, dilation // 2))]
            in_ch = mid * Bottleneck.expansion
            blocks += [Bottleneck(in_ch, mid, 1, dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = {4: base * 4, 8: base * 8, 16: base * 32}
        for m in self.modules():  # zero-init the last BN of each residual branch
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.conv3[1].weight)

    def forward(self, x: torch.Tensor) -> Features:
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        f16 = self.layer4(self.layer3(f8))
        return {4: f4, 8: f8, 16: f16}


class TinyEncoder(nn.Module):
    """A plain VGG-like encoder of dense 3x3 conv-BN-ReLU (a strided stem, then three stages).

    Parameters
    ----------
    widths : tuple of int
        Channels of the stem (stride 2) and of the stride-4, -8 and -16 stages.
    depths : tuple of int
        3x3 convolutions in the stride-4, -8 and -16 stages (the first one strided); the
        default two per stage is the lightest branch's (``fcn_lite``).
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (16, 24, 48, 96),
        depths: tuple[int, int, int] = (2, 2, 2),
    ) -> None:
        super().__init__()
        if min(depths) < 1:
            raise ValueError(f"every stage needs at least one convolution, got {depths}")
        w1, w4, w8, w16 = widths
        self.stem = ConvBNAct(3, w1, 3, stride=2)
        self.s4 = _vgg_stage(w1, w4, depths[0])
        self.s8 = _vgg_stage(w4, w8, depths[1])
        self.s16 = _vgg_stage(w8, w16, depths[2])
        self.channels = {4: w4, 8: w8, 16: w16}

    def forward(self, x: torch.Tensor) -> Features:
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        return {4: f4, 8: f8, 16: self.s16(f8)}


def _vgg_stage(in_ch: int, out_ch: int, depth: int) -> nn.Sequential:
    """A strided 3x3 conv-BN-ReLU then ``depth - 1`` more at the new resolution."""
    return nn.Sequential(
        ConvBNAct(in_ch, out_ch, 3, stride=2),
        *(ConvBNAct(out_ch, out_ch, 3) for _ in range(depth - 1)),
    )
