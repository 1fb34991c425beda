"""Model contract, SCI window arithmetic, crop alignment, FLOPs and a tiny overfitting run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.model import (
    GENERAL_BRANCHES,
    build_model,
    count_flops,
    count_parameters,
    crop_to_box,
    sgnet_loss,
)
from napari_sgnet.model.crop import resolve_box
from napari_sgnet.model.sci import (
    MultiHeadSelfAttention,
    SCIBlock,
    broadcast_tokens,
    pad_to_window,
    window_means,
    window_merge,
    window_partition,
)

TINY = {"patch_size": 64, "sci_width": 32, "sci_heads": 4, "sci_window": 4, "sci_blocks": 1}


def tiny(branch: str = "fcn_lite", use_context: bool = True, **kw) -> ModelConfig:
    return ModelConfig(general_branch=branch, use_context=use_context, **{**TINY, **kw})


def inputs(batch: int = 2, p: int = 64, alpha: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, p, p, generator=g), torch.randn(
        batch, 3, alpha * p, alpha * p, generator=g
    )


# --------------------------------------------------------------------------- contract


def test_registry_names():
    assert {"deeplabv3plus_small", "deeplabv3plus_r50", "fcn_lite"} <= set(GENERAL_BRANCHES)


@pytest.mark.parametrize("branch", ["deeplabv3plus_small", "fcn_lite"])
@pytest.mark.parametrize("use_context", [True, False])
def test_forward_shapes(branch, use_context):
    cfg = tiny(branch, use_context)
    model = build_model(cfg)
    assert model.config is cfg and isinstance(model, nn.Module)
    local, context = inputs()
    k = cfg.num_classes
    for mode in (True, False):  # aux comes back in train and eval modes
        model.train(mode)
        out = model(local, context if use_context else None)
        assert out["logits"].shape == (2, k, 64, 64)
        if use_context:
            assert set(out) == {"logits", "aux"}
            assert out["aux"].shape == (2, k, 128, 128)
        else:
            assert set(out) == {"logits"}
        assert all(torch.isfinite(v).all() for v in out.values())
    # the general branch gives stride-4 decoder features
    feat = model.general(local)
    assert feat.shape == (2, model.general.out_channels, 16, 16)
    assert (model.general.classifier is None) == use_context


def test_r50_single_forward():
    model = build_model(tiny("deeplabv3plus_r50")).eval()
    local, context = inputs(batch=1)
    with torch.no_grad():
        out = model(local, context)
    assert out["logits"].shape == (1, 5, 64, 64) and out["aux"].shape == (1, 5, 128, 128)


def test_other_sizes_and_alpha():
    model = build_model(tiny(context_factor=3.0)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96), torch.randn(1, 3, 288, 288))
        assert out["logits"].shape == (1, 5, 96, 96) and out["aux"].shape == (1, 5, 288, 288)
        # non-centred local patch, both box forms
        local, context = inputs(batch=2)
        a = model(local, context, torch.tensor([[0.0, 0.0], [64.0, 64.0]]))
        b = model(local, context, torch.tensor([[0.0, 0.0, 64, 64], [64.0, 64.0, 64, 64]]))
        torch.testing.assert_close(a["logits"], b["logits"])
        c = model(local, context)  # centred default differs from a corner placement
        assert not torch.allclose(a["logits"], c["logits"])


def test_baseline_ignores_context():
    model = build_model(tiny(use_context=False)).eval()
    local, context = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(local)["logits"], model(local, context)["logits"])


def test_input_validation():
    model = build_model(tiny())
    local, context = inputs()
    with pytest.raises(ValueError, match="context"):
        model(local)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 60, 60), context[:1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 4, 64, 64), context[:1])
    with pytest.raises(ValueError, match="batch"):
        model(local, context[:1])
    with pytest.raises(ValueError, match="floats"):
        model(local.to(torch.uint8), context)
    with pytest.raises(ValueError, match="unknown general branch"):
        build_model(tiny("nope"))


def test_bf16_autocast_forward():
    model = build_model(tiny()).eval()
    local, context = inputs(batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(local, context)
    assert out["logits"].shape == (1, 5, 64, 64)
    assert all(torch.isfinite(v.float()).all() for v in out.values())


def test_count_flops_and_params():
    sg, base = build_model(tiny()), build_model(tiny(use_context=False))
    f_sg, f_base = count_flops(sg, 64), count_flops(base, 64)
    assert isinstance(f_sg, int) and f_sg > f_base > 0
    assert 3.5 < count_flops(base, 128) / f_base < 4.5  # conv cost scales with area
    assert count_parameters(sg) > count_parameters(base) > 0
    assert sg.training  # mode restored
    with pytest.raises(ValueError):
        count_flops(sg, 50)


# --------------------------------------------------------------------------- SCI arithmetic


@pytest.mark.parametrize(("h", "w"), [(8, 8), (10, 13), (3, 5)])
def test_window_partition_merge_inverse(h, w):
    x = torch.randn(2, h, w, 6)
    padded, valid = pad_to_window(x, 4)
    hp, wp = padded.shape[1:3]
    assert hp % 4 == 0 and wp % 4 == 0 and hp - h < 4 and wp - w < 4
    assert (
        torch.equal(padded[:, :h, :w], x) and not padded[:, h:].any() and not padded[:, :, w:].any()
    )
    if (hp, wp) == (h, w):
        assert valid is None
    else:
        assert valid.sum() == h * w and valid[:h, :w].all()
    win = window_partition(padded, 4)
    assert win.shape == (2 * (hp // 4) * (wp // 4), 16, 6)
    assert torch.equal(win[0].view(4, 4, 6), padded[0, :4, :4])  # window 0 is the top-left block
    if wp >= 8:  # windows are row-major: window 1 is right of window 0
        assert torch.equal(win[1].view(4, 4, 6), padded[0, :4, 4:8])
    assert torch.equal(window_merge(win, 4, hp, wp), padded)


def test_window_means_and_broadcast():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6, 1)
    padded, valid = pad_to_window(x, 4)  # 8x8, windows over valid regions 4x4, 4x2, 2x4, 2x2
    means = window_means(padded, 4, valid)
    assert means.shape == (2, 4, 1)
    for b in range(2):
        blocks = [x[b, :4, :4], x[b, :4, 4:], x[b, 4:, :4], x[b, 4:, 4:]]
        torch.testing.assert_close(means[b, :, 0], torch.stack([blk.mean() for blk in blocks]))
    tokens = torch.randn(2, 4, 3)
    full = broadcast_tokens(tokens, 4, 8, 8)
    for n, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        assert torch.equal(
            full[:, r : r + 4, c : c + 4], tokens[:, n, None, None].expand(2, 4, 4, 3)
        )


def test_masked_keys_do_not_matter():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 4, window=4).eval()
    x = torch.randn(3, 16, 16)
    valid = torch.rand(3, 16) > 0.4
    valid[:, 0] = True
    y = x.clone()
    y[~valid] = torch.randn(int((~valid).sum()), 16) * 10
    a, b = attn(x, valid), attn(y, valid)
    torch.testing.assert_close(a[valid], b[valid])


def test_sci_block_odd_sizes():
    block = SCIBlock(16, 4, 4).eval()
    x = torch.randn(2, 10, 13, 16)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------- crop alignment


def coordinate_map(batch: int, context: int, stride: int) -> torch.Tensor:
    """Channel 0: x (column) centre of each cell, channel 1: y (row) centre, in context pixels."""
    n = context // stride
    centres = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
    xs = centres.view(1, n).expand(n, n)
    ys = centres.view(n, 1).expand(n, n)
    return torch.stack([xs, ys]).unsqueeze(0).repeat(batch, 1, 1, 1)


def expected_centres(box, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, w, h = box
    j = torch.arange(out, dtype=torch.float32) + 0.5
    return x + j * w / out, y + j * h / out


def test_crop_exact_relative_coordinates():
    feat = coordinate_map(3, 128, 16)  # 8x8 map over a 128-px context
    boxes = [(40.0, 24.0, 64.0, 64.0), (13.5, 50.25, 64.0, 64.0), (32.0, 32.0, 48.0, 80.0)]
    out = crop_to_box(feat, torch.tensor(boxes), (16, 16), (128, 128))
    assert out.shape == (3, 2, 16, 16)
    for b, box in enumerate(boxes):
        ex, ey = expected_centres(box, 16)
        torch.testing.assert_close(out[b, 0], ex.view(1, 16).expand(16, 16), atol=1e-3, rtol=0)
        torch.testing.assert_close(out[b, 1], ey.view(16, 1).expand(16, 16), atol=1e-3, rtol=0)


def test_crop_fast_path_is_exact_slice():
    feat = torch.randn(2, 3, 128, 128)
    box = resolve_box(None, 2, (64, 64), (128, 128))
    assert box == (32.0, 32.0, 64.0, 64.0)
    assert torch.equal(crop_to_box(feat, box, (64, 64)), feat[:, :, 32:96, 32:96])
    # the general path agrees with slicing on cell-aligned boxes
    general = crop_to_box(feat, torch.tensor([[32.0, 32.0, 64, 64]] * 2), (64, 64))
    torch.testing.assert_close(general, feat[:, :, 32:96, 32:96], atol=1e-5, rtol=0)


def test_model_crops_context_feature_at_local_footprint():
    """Stub the SCB with a coordinate map and read what the fusion head receives."""
    model = build_model(tiny()).eval()
    stride, width = model.context_branch.stride, model.config.sci_width

    class Coordinates(nn.Module):
        stride = 16

        def forward(self, context):
            b, _, h, _ = context.shape
            coords = coordinate_map(b, h, stride)
            return torch.cat([coords, coords.new_zeros(b, width - 2, h // stride, h // stride)], 1)

    model.context_branch = Coordinates()
    seen = {}
    model.head.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    local, context = inputs(batch=2)
    offsets = torch.tensor([[16.0, 40.0], [64.0, 0.0]])
    with torch.no_grad():
        model(local, context, offsets)
    c = model.general.out_channels
    got = seen["x"][:, c : c + 2]  # (B, 2, 16, 16)
    for b in range(2):
        ex, ey = expected_centres((*offsets[b].tolist(), 64.0, 64.0), 16)
        # inside the context's outer half-cell the bilinear field is exact
        inner = (ex >= 8) & (ex <= 120)
        torch.testing.assert_close(got[b, 0, 0, inner], ex[inner], atol=1e-3, rtol=0)
        inner = (ey >= 8) & (ey <= 120)
        torch.testing.assert_close(got[b, 1, inner, 0], ey[inner], atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- overfitting


def two_patches():
    """Two 64-px patches inside 128-px contexts with learnable, distinct label maps."""
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(2, 128, 128, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    labels[0] = torch.where(xx < 64, 1, 2)
    labels[1] = torch.where((yy - 64) ** 2 + (xx - 70) ** 2 < 24**2, 3, 4)
    labels[1, :, 120:] = 5
    colours = torch.rand(6, 3, generator=g) * 2 - 1
    images = colours[labels.long()].permute(0, 3, 1, 2) + 0.3 * torch.randn(
        2, 3, 128, 128, generator=g
    )
    labels[:, :4] = 0  # some unlabelled pixels
    return images[:, :, 32:96, 32:96], images, labels[:, 32:96, 32:96], labels


def miou(pred: torch.Tensor, labels: torch.Tensor) -> float:
    target = labels.long() - 1
    keep = target >= 0
    ious = []
    for k in target[keep].unique():
        p, t = pred[keep] == k, target[keep] == k
        ious.append((p & t).sum().item() / (p | t).sum().item())
    return sum(ious) / len(ious)


def test_tiny_sgnet_overfits_two_patches():
    torch.manual_seed(0)
    model = build_model(tiny())
    local, context, local_labels, context_labels = two_patches()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        losses = sgnet_loss(model(local, context), local_labels, context_labels)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first if first is not None else losses["loss"].item()
    last = losses["loss"].item()
    assert last < first / 5, (first, last)
    model.eval()
    with torch.no_grad():
        out = model(local, context)
    assert miou(out["logits"].argmax(1), local_labels) > 0.9
    assert miou(out["aux"].argmax(1), context_labels) > 0.9
