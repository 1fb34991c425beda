"""Surrounding Context Integration (SCI): window attention plus attention across window tokens.

Per block, on a channels-last map ``(B, H, W, C)`` padded to a multiple of the window:

1. ``x = x + W-MSA(LN(x))``: multi-head self-attention inside each ``window x window`` window
   (learned relative-position bias, padded positions masked out as keys);
2. each window is average-pooled (over its valid positions) to one token;
3. ``LN`` + multi-head self-attention across the window tokens gives each token an update;
4. each token's update is added (broadcast) to every position of its window;
5. ``x = x + FFN(LN(x))``; the padding is removed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_sgnet.model.layers import init_weights

__all__ = [
    "SCI",
    "MultiHeadSelfAttention",
    "SCIBlock",
    "broadcast_tokens",
    "pad_to_window",
    "window_means",
    "window_merge",
    "window_partition",
]

MLP_RATIO = 4


def pad_to_window(x: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero-pad ``(B, H, W, C)`` at the bottom/right to multiples of ``window``.

    Returns
    -------
    padded : Tensor
        ``(B, Hp, Wp, C)``.
    valid : Tensor or None
        ``(Hp, Wp)`` bool mask of the original positions; ``None`` when nothing was padded.
    """
    _, h, w, _ = x.shape
    ph, pw = (-h) % window, (-w) % window
    if not (ph or pw):
        return x, None
    valid = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=x.device)
    valid[:h, :w] = True
    return F.pad(x, (0, 0, 0, pw, 0, ph)), valid


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, window**2, C)``, windows row-major within each image."""
    b, h, w, c = x.shape
    if h % window or w % window:
        raise ValueError(f"map {h}x{w} is not a multiple of the window {window}")
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Exact inverse of :func:`window_partition`: ``(B * nW, window**2, C)`` -> ``(B, h, w, C)``."""
    nh, nw = h // window, w // window
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def window_means(x: torch.Tensor, window: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Average of each window over its valid positions: ``(B, H, W, C)`` -> ``(B, nW, C)``."""
    b = x.shape[0]
    win = window_partition(x, window)
    if valid is None:
        means = win.mean(dim=1)
    else:
        weight = window_partition(valid[None, :, :, None].to(x.dtype), window)  # (nW, L, 1)
        weight = weight.repeat(b, 1, 1)
        means = (win * weight).sum(dim=1) / weight.sum(dim=1)
    return means.view(b, -1, x.shape[-1])


def broadcast_tokens(tokens: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Copy each window's token to all its positions: ``(B, nW, C)`` -> ``(B, h, w, C)``."""
    b, _, c = tokens.shape
    nh, nw = h // window, w // window
    t = tokens.view(b, nh, 1, nw, 1, c).expand(b, nh, window, nw, window, c)
    return t.reshape(b, h, w, c)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on ``(N, L, C)`` tokens (PyTorch's fused SDPA kernel).

    With ``window`` set, a Swin-style learned relative-position bias is added, so ``L`` must be
    ``window ** 2``.
    """

    def __init__(self, dim: int, heads: int, window: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias: nn.Parameter | None = None
        if window is not None:
            self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
            nn.init.trunc_normal_(self.rel_bias, std=0.02)
            coords = torch.stack(
                torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
            ).flatten(1)  # (2, L)
            rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, L, L)
            self.register_buffer("rel_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Attend; ``key_valid`` ``(N, L)`` bool marks keys that may be attended to."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None
        if self.rel_bias is not None:
            bias = self.rel_bias[self.rel_index.reshape(-1)].view(length, length, self.heads)
            mask = bias.permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # (1, heads, L, L)
        if key_valid is not None:
            blocked = torch.zeros(key_valid.shape, dtype=q.dtype, device=x.device)
            blocked = blocked.masked_fill(~key_valid, float("-inf"))[:, None, None, :]
            mask = blocked if mask is None else mask + blocked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


class SCIBlock(nn.Module):
    """One SCI block on a channels-last map ``(B, H, W, C)`` (any ``H``, ``W``)."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.window_attn = MultiHeadSelfAttention(dim, heads, window)
        self.norm_tokens = nn.LayerNorm(dim)
        self.token_attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        ws = self.window
        x, valid = pad_to_window(x, ws)
        hp, wp = x.shape[1:3]
        key_valid = None
        if valid is not None:
            key_valid = window_partition(valid[None, :, :, None], ws)[..., 0].repeat(b, 1)
        attn = self.window_attn(window_partition(self.norm1(x), ws), key_valid)
        x = x + window_merge(attn, ws, hp, wp)
        tokens = self.norm_tokens(window_means(x, ws, valid))
        x = x + broadcast_tokens(self.token_attn(tokens), ws, hp, wp)
        x = x + self.mlp(self.norm2(x))
        return x[:, :h, :w] if valid is not None else x


class SCI(nn.Module):
    """Project to ``width`` channels, run ``blocks`` SCI blocks, final LayerNorm.

    Maps ``(B, in_ch, h, w)`` to ``(B, width, h, w)``.
    """

    def __init__(self, in_ch: int, width: int, heads: int, window: int, blocks: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, width, 1)
        self.blocks = nn.ModuleList(SCIBlock(width, heads, window) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()
