"""A tiny torch model following the SGNet model contract, for tests and benchmarks.

It is not SGNet: a few convolutions on the local patch plus the centre of a
convolved context patch, enough to exercise devices, precision, channels-last,
context plumbing and byte-identical tiling with real float arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.palette import GLEASON

__all__ = ["TinySegNet", "tiny_model", "tiny_sgnet_config"]


class TinySegNet(nn.Module):
    """Conv net with ``forward(local, context=None) -> {"logits": (B, K, P, P)}``."""

    def __init__(self, config: ModelConfig, width: int = 8) -> None:
        super().__init__()
        self.config = config
        k = config.num_classes
        self.local = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, k, 3, padding=1)
        )
        self.context = nn.Conv2d(3, k, 5, padding=2) if config.needs_context else None

    def forward(self, local: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        logits = self.local(local)
        if self.context is not None:
            if context is None:
                raise ValueError("this model needs a context patch")
            ctx = self.context(context)
            p, c = local.shape[-1], context.shape[-1]
            o = (c - p) // 2
            logits = logits + ctx[..., o : o + p, o : o + p]
        return {"logits": logits, "aux": None}


def tiny_model(
    patch_size: int = 32, *, use_context: bool = True, mpp: float | None = None, seed: int = 0
) -> TinySegNet:
    """A randomly initialised (seeded) :class:`TinySegNet` in eval mode."""
    torch.manual_seed(seed)
    config = ModelConfig(
        general_branch="tiny",
        use_context=use_context,
        palette=GLEASON,
        patch_size=patch_size,
        mpp=mpp,
        name="tiny",
    )
    return TinySegNet(config).eval()


def tiny_sgnet_config(**overrides: object) -> ModelConfig:
    """The smallest real SGNet configuration the tests train: ``fcn_lite``, 64 px at 4 µm/px.

    One SCI block of width 32 with 2 heads and window 4; ``overrides`` replace any field.
    """
    fields: dict[str, object] = {
        "general_branch": "fcn_lite",
        "patch_size": 64,
        "mpp": 4.0,
        "sci_width": 32,
        "sci_heads": 2,
        "sci_window": 4,
        "sci_blocks": 1,
        "name": "tiny",
    }
    fields.update(overrides)
    return ModelConfig(**fields)  # type: ignore[arg-type]
