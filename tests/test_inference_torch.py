"""The torch predictor: device/precision choice, on-device post-processing, real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sgnet.errors import DeviceError, UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.inference import RequestError, describe_model, make_plan, predict_slide
from napari_sgnet.inference.models import load_predictor
from napari_sgnet.inference.predictor import TorchPredictor
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.inference.testing import differing_arrays, pattern_slide
from napari_sgnet.inference.testing_torch import tiny_model
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.model.checkpoint import state_digest as module_digest
from napari_sgnet.model.runtime import autocast_dtype, resolve_device


@pytest.fixture(scope="module")
def slide():
    return pattern_slide(300, 200, seed=2, mpp=0.5)


def test_device_and_precision_resolution():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="expected 'auto'"):
        resolve_device("tpu")
    assert issubclass(DeviceError, UserInputError)
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(UserInputError, match="precision"):
        autocast_dtype(torch.device("cpu"), "fp16")


def test_predictor_outputs_uint8_labels_and_confidence():
    model = tiny_model(32)
    pred = TorchPredictor(model, device="cpu")
    rng = np.random.default_rng(0)
    local = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    context = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    labels, conf = pred.predict(local, context, crop=4)
    assert labels.shape == conf.shape == (3, 24, 24)
    assert labels.dtype == conf.dtype == np.uint8
    assert labels.min() >= 1 and labels.max() <= 5 and conf.min() >= 255 // 5
    # Same as doing it by hand in float64 on the host.
    cfg = model.config
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)

    def norm(a):
        return (torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255 - mean) / std

    with torch.no_grad():
        logits = model.double()(norm(local), context=norm(context))["logits"][..., 4:-4, 4:-4]
    probs = torch.softmax(logits, 1)
    np.testing.assert_array_equal(labels, probs.argmax(1).numpy() + 1)
    assert np.abs(conf.astype(int) - np.round(probs.max(1).values.numpy() * 255)).max() <= 1


def test_bf16_autocast_runs():
    pred = TorchPredictor(tiny_model(32), device="cpu", precision="bf16")
    labels, _conf = pred.predict(
        np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8)
    )
    assert labels.shape == (1, 32, 32) and labels.dtype == np.uint8


def test_model_identity_follows_weights():
    a, b = tiny_model(32, seed=0), tiny_model(32, seed=1)
    assert module_digest(a) == module_digest(tiny_model(32, seed=0)) != module_digest(b)
    assert describe_model(a).info.model_id != describe_model(b).info.model_id
    assert describe_model(a).info.context_factor == 2.0
    assert describe_model(tiny_model(32, use_context=False)).info.context_factor is None
    bn = torch.nn.BatchNorm2d(3)  # has a 0-d buffer (num_batches_tracked)
    assert len(module_digest(bn)) == 64


def test_stitched_output_equals_per_tile_prediction(tmp_path, slide):
    model = tiny_model(32)
    predict_slide(
        slide, tmp_path / "s.zarr", model, overlap=4, batch_size=5, skip_glass=False, device="cpu"
    )
    store = LabelStore.open(tmp_path / "s.zarr")
    plan = make_plan(slide, describe_model(model).info, overlap=4)
    pred = TorchPredictor(model, device="cpu")
    for idx in [plan.tiles[0], plan.tiles[len(plan.tiles) // 2], plan.tiles[-1]]:
        local, context = read_batch(slide, plan, [idx])
        labels, _ = pred.predict(local, context, crop=4)
        box = plan.tile_box(idx)
        np.testing.assert_array_equal(store.read_labels(box), labels[0, : box.h, : box.w])


def test_batch_size_does_not_change_the_result(tmp_path, slide):
    model = tiny_model(32, use_context=False)
    for bs in (1, 7):
        predict_slide(
            slide, tmp_path / f"b{bs}.zarr", model, batch_size=bs, skip_glass=False, device="cpu"
        )
    assert differing_arrays(tmp_path / "b1.zarr", tmp_path / "b7.zarr") == []


def test_checkpoint_folder_with_the_real_sgnet(tmp_path, slide):
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(
        general_branch="fcn_lite", patch_size=64, mpp=1.0, sci_width=32, sci_heads=2, sci_blocks=1
    )
    save_checkpoint(build_model(cfg), tmp_path / "ckpt")
    spec = describe_model(tmp_path / "ckpt")  # reads config + hashes weights; no torch model
    assert spec.path is not None and spec.info.patch_size == 64 and spec.info.mpp == 1.0
    assert isinstance(load_predictor(spec, "cpu"), TorchPredictor)
    final = predict_slide(
        slide, tmp_path / "s.zarr", tmp_path / "ckpt", skip_glass=False, device="cpu", batch_size=4
    )
    assert final.level == 1 and final.tiles_done == 6
    labels = LabelStore.open(tmp_path / "s.zarr").read_labels(Box(0, 0, 150, 100))
    assert labels.min() >= 1 and labels.max() <= 5


def test_model_errors_are_request_errors(tmp_path, slide):
    with pytest.raises(RequestError, match="checkpoint folder not found"):
        describe_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RequestError, match="no model.safetensors"):
        describe_model(tmp_path / "empty")
    with pytest.raises(RequestError, match="must be a checkpoint folder"):
        describe_model(42)
