"""Inference-time fusion (model/fuse.py): batch norm folded, aux head dropped, labels kept.

The tolerance rule (docs/model.md, "Inference-time fusion"): the prepared model's logits match
the unprepared model's within ``REL`` of the largest logit magnitude, and every pixel whose
top-2 logit gap (in the unprepared model) exceeds ``GAP`` gets the same label; only near-ties
may flip. Each test also checks that near-ties are rare, so the label check is not vacuous.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.geometry import Box
from napari_sgnet.inference import describe_model, predict_slide
from napari_sgnet.inference.models import load_predictor
from napari_sgnet.inference.predictor import TorchPredictor, model_info_from_module
from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.inference.testing import pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.model import build_model, load_bundled, save_checkpoint, sgnet_loss, state_digest
from napari_sgnet.model.fuse import fold_batchnorm, fuse_conv_bn, prepare_for_inference
from napari_sgnet.registry import weights_digest

REL = 1e-4  # logits: max |fused - unfused| <= REL * max |unfused|
GAP = 1e-3  # labels: identical wherever the unfused top-2 logit gap exceeds GAP


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _tiny_sgnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        general_branch="fcn_lite", patch_size=64, mpp=1.0, sci_width=32, sci_heads=2, sci_blocks=1
    )
    return _randomise_batchnorm(build_model(cfg), seed)


def _inputs(model: nn.Module, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = model.config.patch_size
    a = model.config.context_size
    return torch.randn(batch, 3, p, p, generator=g), torch.randn(batch, 3, a, a, generator=g)


def _assert_same_within_rule(ref: torch.Tensor, got: torch.Tensor) -> None:
    """The tolerance rule of this module on ``(B, K, H, W)`` logits."""
    ref, got = ref.float(), got.float()
    scale = ref.abs().max().item()
    assert scale > 0
    assert (got - ref).abs().max().item() <= REL * scale
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > GAP
    assert clear.float().mean().item() > 0.99  # near-ties are rare: the check below bites
    assert torch.equal(ref.argmax(1)[clear], got.argmax(1)[clear])


def test_fuse_conv_bn_is_the_batch_norm_formula():
    torch.manual_seed(0)
    for conv in (
        nn.Conv2d(6, 8, 3, padding=1, bias=False),
        nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2, bias=True),
        nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False),  # depthwise
    ):
        bn = _randomise_batchnorm(nn.Sequential(nn.BatchNorm2d(conv.out_channels)))[0]
        conv.eval()
        fused = fuse_conv_bn(conv, bn)
        x = torch.randn(2, 6, 9, 11)
        with torch.no_grad():
            ref = bn(conv(x))
            # w' = w * gamma / sqrt(var + eps); b' = (b - mean) * gamma / sqrt(var + eps) + beta
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
            torch.testing.assert_close(fused.weight, conv.weight * s.view(-1, 1, 1, 1))
            torch.testing.assert_close(fused.bias, (b - bn.running_mean) * s + bn.bias)
            torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
        assert conv.bias is None or fused.bias is not conv.bias  # the argument is not modified


def test_fuse_conv_bn_refuses_mismatched_or_statless_batch_norm():
    with pytest.raises(ValueError, match="width"):
        fuse_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="running statistics"):
        fuse_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))


def test_fold_batchnorm_counts_what_it_cannot_fold():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
    )
    folded, n_folded, n_left = fold_batchnorm(model)
    assert (n_folded, n_left) == (1, 1)  # the second batch norm follows a ReLU
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2  # copy by default
    _randomise_batchnorm(model)
    folded, _, _ = fold_batchnorm(model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_tiny_sgnet_with_real_batchnorm_statistics_keeps_its_labels():
    model = _tiny_sgnet()
    digest = state_digest(model)
    prepared = prepare_for_inference(model)
    report = prepared.fusion_report
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 10 and report.batchnorm_folded == n_bn and report.batchnorm_left == 0
    assert report.aux_head_dropped and prepared.aux_head is None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    local, context = _inputs(model, 3)
    with torch.no_grad():
        ref = model(local, context)
        cl = torch.channels_last
        got = prepared(local.to(memory_format=cl), context.to(memory_format=cl))
    assert set(ref) == {"logits", "aux"} and set(got) == {"logits"}
    _assert_same_within_rule(ref["logits"], got["logits"])
    assert state_digest(model) == digest  # the original is untouched
    assert model.aux_head is not None


@pytest.mark.parametrize("branch", ["vgg_fpn", "vgg_fpn_deep"])
def test_dense_cpu_branches_keep_their_labels(branch):
    """The general branches for the retrained weights (docs/benchmarks.md) fold completely."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        general_branch=branch, patch_size=64, mpp=1.0, sci_width=64, sci_heads=4, sci_blocks=1
    )
    model = _randomise_batchnorm(build_model(cfg))
    prepared = prepare_for_inference(model)
    report = prepared.fusion_report
    assert report.batchnorm_left == 0
    assert report.batchnorm_folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    local, context = _inputs(model, 2)
    with torch.no_grad():
        ref = model(local, context)["logits"]
        got = prepared(local, context)["logits"]
    _assert_same_within_rule(ref, got)


def test_training_path_is_unaffected():
    model = _tiny_sgnet(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_inference(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    local, context = _inputs(model, 2)
    out = model(local, context)
    assert "aux" in out  # training still gets the auxiliary output
    k = model.config.num_classes
    terms = sgnet_loss(
        out,
        torch.randint(1, k + 1, local.shape[:1] + local.shape[2:]),
        torch.randint(1, k + 1, context.shape[:1] + context.shape[2:]),
    )
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_bundled_model_keeps_its_labels():
    torch.manual_seed(0)
    model = load_bundled()
    prepared = prepare_for_inference(model)
    assert prepared.fusion_report.batchnorm_left == 0
    # every batch norm of the model (the auxiliary head's too, before it is dropped) is folded
    n_batchnorm = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert prepared.fusion_report.batchnorm_folded == n_batchnorm > 20
    local, context = _inputs(model, 2)
    with torch.no_grad():
        ref = model(local, context)["logits"]
        got = prepared(local, context)["logits"]
    _assert_same_within_rule(ref, got)


def test_predictor_runs_the_prepared_copy_under_the_original_identity(tmp_path):
    model = _tiny_sgnet(seed=2)
    save_checkpoint(model, tmp_path / "ckpt")
    spec = describe_model(tmp_path / "ckpt")
    pred = load_predictor(spec, "cpu")
    assert isinstance(pred, TorchPredictor)
    assert pred.info == spec.info
    from_file = ModelInfo.from_config(model.config, weights_digest(tmp_path / "ckpt"))
    assert pred.info.model_id == from_file.model_id == model_info_from_module(model).model_id
    assert pred.module.fusion_report.batchnorm_folded > 0
    assert state_digest(pred.module) != state_digest(model)  # the id is not the fused copy's
    direct = TorchPredictor(model, device="cpu")
    assert direct.module is not model and direct.info.model_id == spec.info.model_id
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    unfused = TorchPredictor(model, device="cpu", fuse=False)
    assert unfused.module is model


class _ClearPixels(TorchPredictor):
    """Label 2 where the unfused model's top-2 logit gap exceeds ``GAP``, else 1.

    Run through the engine, it maps the rule's "clear" pixels onto slide coordinates.
    """

    @torch.inference_mode()
    def predict(self, local, context, crop=0):
        x = self._to_device(local)
        c = self._to_device(context) if context is not None else None
        logits = self.module(x, context=c)["logits"]
        if crop > 0:
            logits = logits[..., crop:-crop, crop:-crop]
        top2 = logits.topk(2, dim=1).values
        labels = ((top2[:, 0] - top2[:, 1]) > GAP).to(torch.uint8) + 1
        return labels.numpy(), np.full(labels.shape, 255, np.uint8)


def test_engine_labels_with_fusion_equal_those_without(tmp_path):
    model = _tiny_sgnet(seed=3)
    slide = pattern_slide(300, 200, seed=4, mpp=0.5)
    kw = {"overlap": 8, "batch_size": 3, "skip_glass": False, "device": "cpu"}
    runs = {
        "fused": model,  # the engine's own load path: a prepared copy
        "unfused": TorchPredictor(model, device="cpu", fuse=False),
        "clear": _ClearPixels(model, device="cpu", fuse=False),
    }
    labels = {}
    for name, m in runs.items():
        final = predict_slide(slide, tmp_path / f"{name}.zarr", m, **kw)
        assert final.tiles_done > 1
        # the model works at 1 µm/px: the 300 x 200 slide at 0.5 µm/px is 150 x 100 there
        labels[name] = LabelStore.open(tmp_path / f"{name}.zarr").read_labels(Box(0, 0, 150, 100))
        assert labels[name].min() >= 1
    clear = labels["clear"] == 2
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels["fused"][clear], labels["unfused"][clear])
