"""The Surrounding Context-guided Branch (SCB): STDC-like backbone at stride 16, then SCI."""

from __future__ import annotations

import torch
from torch import nn

from napari_sgnet.model.layers import ConvBNAct, init_weights
from napari_sgnet.model.sci import SCI

__all__ = ["ContextBranch", "STDCBackbone", "STDCModule"]


class STDCModule(nn.Module):
    """STDC module (Fan et al., CVPR 2021): a 1x1 conv then three 3x3 convs of shrinking width
    (``C/2, C/4, C/8, C/8``) whose outputs are concatenated to ``C`` channels.

    With ``stride=2`` the first output is downsampled by a depthwise 3x3 before the 3x3 chain
    and by a 3x3 average pool on the skip path.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if out_ch % 8:
            raise ValueError(f"STDC width must be a multiple of 8, got {out_ch}")
        if stride not in (1, 2):
            raise ValueError(f"STDC stride must be 1 or 2, got {stride}")
        half, quarter, eighth = out_ch // 2, out_ch // 4, out_ch // 8
        self.conv0 = ConvBNAct(in_ch, half, 1)
        self.down: nn.Module = nn.Identity()
        self.skip: nn.Module = nn.Identity()
        if stride == 2:
            self.down = ConvBNAct(half, half, 3, stride=2, groups=half, act=False)
            self.skip = nn.AvgPool2d(3, stride=2, padding=1)
        self.conv1 = ConvBNAct(half, quarter, 3)
        self.conv2 = ConvBNAct(quarter, eighth, 3)
        self.conv3 = ConvBNAct(eighth, eighth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out0 = self.conv0(x)
        out1 = self.conv1(self.down(out0))
        out2 = self.conv2(out1)
        out3 = self.conv3(out2)
        return torch.cat([self.skip(out0), out1, out2, out3], dim=1)


class STDCBackbone(nn.Module):
    """Four stages, each halving the resolution (total stride 16): two plain 3x3 convs, then
    two stages of STDC modules (``modules`` per stage, the first strided).
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128), modules: int = 2):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stage1 = ConvBNAct(3, w1, 3, stride=2)
        self.stage2 = ConvBNAct(w1, w2, 3, stride=2)
        self.stage3 = nn.Sequential(
            STDCModule(w2, w3, 2), *(STDCModule(w3, w3) for _ in range(modules - 1))
        )
        self.stage4 = nn.Sequential(
            STDCModule(w3, w4, 2), *(STDCModule(w4, w4) for _ in range(modules - 1))
        )
        self.out_channels = w4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


class ContextBranch(nn.Module):
    """SCB feature extractor: ``(B, 3, aP, aP)`` -> ``(B, width, aP/16, aP/16)``.

    Parameters
    ----------
    width, heads, window, blocks : int
        SCI settings (``ModelConfig.sci_*``).
    """

    stride = 16

    def __init__(self, width: int, heads: int, window: int, blocks: int) -> None:
        super().__init__()
        self.backbone = STDCBackbone()
        init_weights(self.backbone)
        self.sci = SCI(self.backbone.out_channels, width, heads, window, blocks)
        self.out_channels = width

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.sci(self.backbone(context))
