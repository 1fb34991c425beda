"""The same-field-of-view baseline: the general branch on the downsampled surrounding patch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

import napari_sgnet
from napari_sgnet.cli import train_cmd
from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.errors import OptionError
from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.inference.testing_torch import tiny_sgnet_config
from napari_sgnet.model import build_model, count_flops, load_checkpoint, save_checkpoint
from napari_sgnet.model.bundled import load_bundled
from napari_sgnet.model.crop import crop_to_box
from napari_sgnet.model.fuse import prepare_for_inference
from napari_sgnet.registry.cards import read_card
from napari_sgnet.training.augment import AugmentConfig
from napari_sgnet.training.config import TrainConfig
from napari_sgnet.training.dataset import SlideSampler
from napari_sgnet.training.evaluate import eval_plan, predict_level
from napari_sgnet.training.sources import synthetic_source
from napari_sgnet.training.trainer import train

P = 32
CFG = tiny_sgnet_config(
    patch_size=P, use_context=False, baseline_input="context", name="tiny-fov", sci_heads=4
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _model(seed: int = 0, config: ModelConfig = CFG) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config).eval()


def _inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, P, P, generator=g), torch.randn(
        batch, 3, 2 * P, 2 * P, generator=g
    )


# --------------------------------------------------------------------------- config


def test_config_field_validation_kind_and_needs_context():
    assert ModelConfig().baseline_input == "local" and ModelConfig().needs_context
    local = CFG.replace(baseline_input="local")
    assert not local.needs_context and local.kind == "baseline (local patch)"
    assert CFG.needs_context and CFG.kind == "baseline (same field of view)"
    assert tiny_sgnet_config().kind == "SGNet"
    assert CFG.architecture_hash() != local.architecture_hash()
    with pytest.raises(ConfigError, match="baseline_input must be one of"):
        CFG.replace(baseline_input="both")
    with pytest.raises(ConfigError, match="needs use_context=False"):
        tiny_sgnet_config(baseline_input="context")
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG


@pytest.mark.parametrize("name", ["sgnet", "baseline"])
def test_old_configs_load_as_local_with_unchanged_hashes(name, tmp_path):
    """A config.json written before the key existed (the bundled one with the key removed, as
    the previous release's files were) loads as "local", its hash is the one its weights were
    saved with, and the checkpoints still load and verify."""
    folder = Path(napari_sgnet.__file__).parent / "weights" / name
    raw = json.loads((folder / "config.json").read_text())
    assert raw.get("baseline_input", "local") == "local"
    raw.pop("baseline_input", None)
    cfg = ModelConfig.from_dict(raw)
    assert cfg.baseline_input == "local"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        saved_hash = f.metadata()["architecture_hash"]
    assert cfg.architecture_hash() == saved_hash
    # writing the key explicitly as "local" does not change the hash either
    assert (
        ModelConfig.from_dict({**raw, "baseline_input": "local"}).architecture_hash() == saved_hash
    )
    model = load_bundled(name)
    assert model.config.baseline_input == "local"
    assert model.config.needs_context == (name == "sgnet")


# --------------------------------------------------------------------------- forward


def test_forward_shape_and_no_aux_head():
    model = _model()
    assert model.context_branch is None and model.aux_head is None
    local, context = _inputs()
    with torch.no_grad():
        out = model(local, context)
    assert set(out) == {"logits"} and out["logits"].shape == (2, CFG.num_classes, P, P)
    with pytest.raises(ValueError, match="same-field-of-view baseline needs the surrounding"):
        model(local)


def test_forward_is_the_general_branch_on_the_downsampled_context_cropped_to_the_box():
    model = _model()
    local, context = _inputs()
    with torch.no_grad():
        out = model(local, context)["logits"]
        small = F.interpolate(context, size=(P, P), mode="bilinear", antialias=True)
        full = model.general.classifier(model.general(small))
        want = crop_to_box(full, (P / 2, P / 2, P, P), (P, P), (2 * P, 2 * P))
        # the local patch's own pixels are not read
        assert torch.equal(model(torch.zeros_like(local), context)["logits"], out)
        # a box at the top-left corner crops another place of the same logits
        corner = model(local, context, torch.zeros(2, 2))["logits"]
    torch.testing.assert_close(out, want)
    assert not torch.allclose(corner, out)
    torch.testing.assert_close(corner, crop_to_box(full, (0.0, 0.0, P, P), (P, P), (2 * P, 2 * P)))


def test_output_depends_on_context_outside_the_local_box():
    model = _model()
    local, context = _inputs()
    outside = context.clone()
    outside[..., : P // 2, :] = 3.0  # top rows: outside the centred box [P/2, 3P/2)
    outside[..., :, : P // 4] = -3.0
    with torch.no_grad():
        a = model(local, context)["logits"]
        b = model(local, outside)["logits"]
        # the local baseline (same weights) never sees those pixels
        base = build_model(CFG.replace(baseline_input="local")).eval()
        base.load_state_dict(model.state_dict())
        assert torch.equal(base(local, context)["logits"], base(local, outside)["logits"])
    assert (a - b).abs().amax() > 1e-3


def test_fused_copy_agrees_and_flops_count_the_context_input():
    model = _model()
    local, context = _inputs()
    fused = prepare_for_inference(model)
    with torch.no_grad():
        a, b = model(local, context)["logits"], fused(local, context)["logits"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    local_flops = count_flops(_model(config=CFG.replace(baseline_input="local")))
    assert count_flops(model) == local_flops  # same branch, same input size


# --------------------------------------------------------------------------- training, checkpoint


def test_one_training_step_and_checkpoint_round_trip(tmp_path):
    # generator v1: a 1 mm v2 slide has no needle core, so no labelled tissue to sample
    src = synthetic_source(3, 2048, min_level_size=128, version=1)
    tc = TrainConfig(
        steps=2,
        batch_size=2,
        lr=1e-3,
        warmup_steps=1,
        val_every=0,
        checkpoint_every=0,
        device="cpu",
        num_threads=1,
        seed=0,
        augment=AugmentConfig.none(),
    )
    losses: list[float] = []
    train(
        CFG,
        [SlideSampler(src, CFG)],
        tmp_path / "run",
        tc,
        progress=lambda p: losses.append(p.loss),
    )
    assert len(losses) == 2 and all(np.isfinite(losses))
    model = load_checkpoint(tmp_path / "run" / "last")
    assert model.config.baseline_input == "context" and not model.config.use_context
    assert model.config.architecture_hash() == CFG.architecture_hash()
    card = read_card(tmp_path / "run" / "last")
    assert card.architecture == "baseline-fov/fcn_lite"
    assert card.model_kind == "baseline (same field of view)" and card.context_factor == 2.0
    save_checkpoint(model, tmp_path / "copy")
    again = load_checkpoint(tmp_path / "copy")
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with safe_open(str(tmp_path / "copy" / "model.safetensors"), "pt") as f:
        assert f.metadata()["baseline_input"] == "context"


# --------------------------------------------------------------------------- inference


SEEN: list[tuple[int, ...] | None] = []  # module-level: the predictor runs a deep copy


class _Spy(nn.Module):
    """Records the shape of the context each forward receives in :data:`SEEN`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner, self.config = model, model.config

    def forward(self, local, context=None, *args):
        SEEN.append(None if context is None else tuple(context.shape))
        return self.inner(local, context, *args)


def test_predict_level_passes_the_surrounding_patch():
    src = synthetic_source(104, 1024, min_level_size=64, version=1)
    model = _Spy(_model(config=CFG.replace(mpp=4.0)))
    assert ModelInfo.from_config(CFG, "0" * 64).context_factor == 2.0
    assert eval_plan(CFG, 128, 128, 0, P).context_factor == 2.0
    SEEN.clear()
    labels = predict_level(model, model.config, src.image, batch_size=4)
    assert labels.dtype == np.uint8 and labels.min() >= 1
    assert SEEN and all(c is not None and c[-2:] == (2 * P, 2 * P) for c in SEEN)


# --------------------------------------------------------------------------- CLI


def _cli_config(*extra: str) -> ModelConfig:
    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--out", "x", "--synthetic-train-seeds", "1", *extra])
    return train_cmd._configs(args)[0]


def test_cli_baseline_input_flags():
    fov = _cli_config("--baseline", "--baseline-input", "context")
    assert fov.baseline_input == "context" and not fov.use_context and fov.name == "baseline-fov"
    assert _cli_config("--baseline").baseline_input == "local"
    sg = _cli_config("--sci-width", "96", "--sci-blocks", "1")
    assert (sg.sci_width, sg.sci_blocks, sg.use_context) == (96, 1, True)
    with pytest.raises(OptionError, match="needs --baseline"):
        _cli_config("--baseline-input", "context")
