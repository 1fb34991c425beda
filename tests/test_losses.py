"""Each term of the SGNet loss, label handling and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from napari_sgnet.model import sgnet_loss
from napari_sgnet.model.losses import labels_to_targets, masked_cross_entropy

K = 5


def rand_labels(shape, seed=0, zero_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, K + 1, shape, generator=g, dtype=torch.uint8)
    labels[torch.rand(shape, generator=g) < zero_frac] = 0
    return labels


def rand_logits(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), requires_grad=True)


def test_labels_to_targets():
    labels = torch.tensor([[[0, 1], [5, 3]]], dtype=torch.uint8)
    assert labels_to_targets(labels, K).tolist() == [[[-1, 0], [4, 2]]]
    assert labels_to_targets(labels[:, None], K).shape == (1, 2, 2)  # (B, 1, H, W) accepted
    with pytest.raises(ValueError, match="0..5"):
        labels_to_targets(labels + 1, K)
    with pytest.raises(ValueError, match="integer"):
        labels_to_targets(labels.float(), K)


def test_local_ce_ignores_unlabelled():
    logits, labels = rand_logits((2, K, 16, 16)), rand_labels((2, 16, 16))
    ce = masked_cross_entropy(logits, labels)
    keep = labels > 0
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], labels[keep].long() - 1)
    torch.testing.assert_close(ce, manual)
    # logits at unlabelled pixels do not matter
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 1)[~keep] = 100.0
    torch.testing.assert_close(masked_cross_entropy(changed, labels), ce.detach())
    # no labelled pixel: zero loss, finite gradient
    empty = masked_cross_entropy(logits, torch.zeros(2, 16, 16, dtype=torch.long))
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_label_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        masked_cross_entropy(rand_logits((1, K, 16, 16)), rand_labels((1, 8, 8)))


def test_baseline_loss_is_local_ce():
    logits, labels = rand_logits((2, K, 16, 16)), rand_labels((2, 16, 16))
    out = sgnet_loss({"logits": logits}, labels)
    torch.testing.assert_close(out["loss"], masked_cross_entropy(logits, labels))
    assert out["ce_aux"].item() == 0 and out["consistency"].item() == 0
    out["loss"].backward()
    assert logits.grad is not None


def sgnet_outputs(p=16, alpha=2, seed=0):
    return {
        "logits": rand_logits((2, K, p, p), seed),
        "aux": rand_logits((2, K, alpha * p, alpha * p), seed + 1),
    }


def test_aux_ce_uses_surrounding_labels():
    out = sgnet_outputs()
    local_labels, context_labels = rand_labels((2, 16, 16)), rand_labels((2, 32, 32), seed=1)
    terms = sgnet_loss(out, local_labels, context_labels)
    torch.testing.assert_close(terms["ce_aux"], masked_cross_entropy(out["aux"], context_labels))
    torch.testing.assert_close(terms["ce_local"], masked_cross_entropy(out["logits"], local_labels))
    with pytest.raises(ValueError, match="context_labels"):
        sgnet_loss(out, local_labels)


def test_consistency_zero_when_crop_matches():
    aux = rand_logits((2, K, 32, 32))
    # centred crop (exact slicing path)
    local = aux.detach()[:, :, 8:24, 8:24].clone()
    terms = sgnet_loss(
        {"logits": local, "aux": aux}, rand_labels((2, 16, 16)), rand_labels((2, 32, 32))
    )
    assert terms["consistency"].item() == 0.0
    # non-centred offsets given per sample (grid_sample path)
    offsets = torch.tensor([[0.0, 4.0], [16.0, 10.0]])
    local = torch.stack([aux.detach()[0, :, 4:20, 0:16], aux.detach()[1, :, 10:26, 16:32]])
    terms = sgnet_loss(
        {"logits": local, "aux": aux}, rand_labels((2, 16, 16)), rand_labels((2, 32, 32)), offsets
    )
    assert terms["consistency"].item() < 1e-5


def test_consistency_is_mean_l1_of_probabilities():
    out = sgnet_outputs()
    terms = sgnet_loss(out, rand_labels((2, 16, 16)), rand_labels((2, 32, 32)))
    aux_crop = out["aux"].softmax(1)[:, :, 8:24, 8:24]
    manual = (aux_crop - out["logits"].softmax(1)).abs().mean()
    torch.testing.assert_close(terms["consistency"], manual)
    assert 0 < terms["consistency"].item() <= 2 / K  # sum over K of |p - q| <= 2 per pixel


def test_weights_and_gradients():
    out = sgnet_outputs()
    ll, cl = rand_labels((2, 16, 16)), rand_labels((2, 32, 32), seed=1)
    terms = sgnet_loss(out, ll, cl)
    expected = terms["ce_local"] + 0.4 * terms["ce_aux"] + 0.1 * terms["consistency"]
    torch.testing.assert_close(terms["loss"], expected)
    custom = sgnet_loss(out, ll, cl, weights=(2.0, 0.0, 1.0))
    torch.testing.assert_close(custom["loss"], 2 * terms["ce_local"] + terms["consistency"])
    # consistency alone pushes gradients into both heads
    only = sgnet_loss(out, ll, cl, weights=(0.0, 0.0, 1.0))["loss"]
    only.backward()
    assert out["logits"].grad.abs().sum() > 0 and out["aux"].grad.abs().sum() > 0
    # only the crop footprint of aux receives consistency gradient
    g = out["aux"].grad
    assert g[:, :, :8].abs().sum() == 0 and g[:, :, 8:24, 8:24].abs().sum() > 0
    with pytest.raises(ValueError, match="3 numbers"):
        sgnet_loss(out, ll, cl, weights=(1.0, 0.4))


def test_bf16_outputs_give_float32_loss():
    out = {k: v.detach().to(torch.bfloat16) for k, v in sgnet_outputs().items()}
    terms = sgnet_loss(out, rand_labels((2, 16, 16)), rand_labels((2, 32, 32)))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
