"""Stain robustness: augmentation ranges, determinism, Reinhard normalisation (one
implementation for training and inference) and the missing-target refusal."""

from __future__ import annotations

import colorsys
import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from napari_sgnet.cli.main import EXIT_BAD_INPUT, main
from napari_sgnet.config import ConfigError, ModelConfig, StainNormalisation
from napari_sgnet.inference.testing_torch import tiny_sgnet_config
from napari_sgnet.io.working import working_level
from napari_sgnet.model import build_model, load_checkpoint, save_checkpoint
from napari_sgnet.model.runtime import normalise
from napari_sgnet.model.stain import ReinhardNormaliser, fit_reinhard, lab_statistics
from napari_sgnet.training.augment import HED_FROM_RGB, AugmentConfig, Sample, augment
from napari_sgnet.training.dataset import tissue_pixels
from napari_sgnet.training.sources import synthetic_source

TINY = tiny_sgnet_config(sci_window=ModelConfig().sci_window)


@pytest.fixture(scope="module")
def tiles():
    """The 4 µm/px working level of a small synthetic slide at several stain shifts."""

    def level(shift: float) -> np.ndarray:
        # generator v1: a 1 mm v2 slide has no needle core (all glass, no tissue colour)
        src = synthetic_source(300, 2048, stain_shift=shift, min_level_size=256, version=1)
        return np.asarray(working_level(src.image, 4.0).array)

    return {s: level(s) for s in (-1.0, 0.0, 1.0)}


def _crop(tiles: dict[float, np.ndarray], shift: float, size: int, index: int = 0) -> np.ndarray:
    """The ``index``-th most tissue-covered ``size`` px crop (on a ``size / 2`` grid) of the
    tile at ``shift``; positions are ranked on the reference-stain tile."""
    ref = tissue_pixels(tiles[0.0])
    step = size // 2
    spots = [
        (ref[y : y + size, x : x + size].mean(), y, x)
        for y in range(0, ref.shape[0] - size + 1, step)
        for x in range(0, ref.shape[1] - size + 1, step)
    ]
    _, y, x = sorted(spots, reverse=True)[index]
    return np.ascontiguousarray(tiles[shift][y : y + size, x : x + size])


def _sample(context: np.ndarray) -> Sample:
    c = context.shape[0]
    p = c // 2
    o = (c - p) // 2
    return Sample(
        np.ascontiguousarray(context[o : o + p, o : o + p]),
        np.ascontiguousarray(context),
        np.ones((p, p), np.uint8),
        np.ones((c, c), np.uint8),
        (o, o),
    )


def _hed(rgb: np.ndarray) -> np.ndarray:
    od = -np.log(np.maximum(rgb.astype(np.float64) / 255, 1e-6)) / -np.log(1e-6)
    return od @ HED_FROM_RGB


# --- augmentation -------------------------------------------------------------------------


def test_hed_scale_spread_matches_documented_range(tiles):
    """Over many draws the haematoxylin density is scaled by U(1 - s, 1 + s): the ratios stay in
    the range and their spread is that of the uniform distribution (std s / sqrt(3))."""
    cfg = replace(AugmentConfig.none(), hed_scale=AugmentConfig().hed_scale)
    s = cfg.hed_scale
    assert s >= 0.3  # covers the synthetic stain shift -1 (haematoxylin x0.65)
    context = _crop(tiles, 0.0, 96)
    sample = _sample(context)
    tissue = tissue_pixels(context)
    h0 = _hed(context)[tissue, 0].mean()
    ratios = []
    for seed in range(400):
        out = augment(sample, np.random.default_rng(seed), cfg)
        ratios.append(_hed(out.context)[tissue, 0].mean() / h0)
    ratios = np.array(ratios)
    # 8-bit rounding and clipping blur the ratio by a little
    assert ratios.min() > 1 - s - 0.03 and ratios.max() < 1 + s + 0.03
    assert abs(ratios.std() - s / np.sqrt(3)) < 0.02
    assert abs(ratios.mean() - 1) < 0.03


def test_default_augmentation_reaches_stain_shifted_hues(tiles):
    """The hue of the mean tissue colour of slides at stain shift -1 and +1 lies inside the
    central 90 % of the hues the default augmentation gives the reference-stain tile (over the
    same tissue pixels); the first weights' mild jitter reaches neither."""
    ref = _crop(tiles, 0.0, 128)
    tissue = tissue_pixels(ref)
    sample = _sample(ref)

    def hue(image: np.ndarray) -> float:
        r, g, b = image[tissue].mean(axis=0) / 255
        return (colorsys.rgb_to_hsv(r, g, b)[0] - 0.5) % 1.0  # pink/purple away from the wrap

    def hues(cfg: AugmentConfig, draws: int) -> np.ndarray:
        return np.array(
            [hue(augment(sample, np.random.default_rng(i), cfg).context) for i in range(draws)]
        )

    lo, hi = np.quantile(hues(replace(AugmentConfig(), noise=0.0, blur=0.0), 200), [0.05, 0.95])
    mild_lo, mild_hi = hues(AugmentConfig.mild(), 100).min(), hues(AugmentConfig.mild(), 100).max()
    for shift in (-1.0, 1.0):
        target = hue(_crop(tiles, shift, 128))
        assert lo < target < hi, (shift, target, lo, hi)
        assert not mild_lo < target < mild_hi, (shift, target, mild_lo, mild_hi)


def test_noise_and_blur_ranges():
    """Pixel noise: with probability noise_p, a standard deviation U(0, noise) grey levels
    (covers the synthetic noise 15); blur with probability blur_p."""
    flat = np.full((64, 64, 3), 128, np.uint8)
    sample = _sample(flat)
    cfg = replace(AugmentConfig.none(), noise=20.0, noise_p=0.5)
    sds = []
    for seed in range(300):
        out = augment(sample, np.random.default_rng(seed), cfg)
        sds.append(out.context.astype(np.float64).std())
    sds = np.array(sds)
    noisy = sds > 0.5
    assert 0.4 < noisy.mean() < 0.6
    assert sds.max() < 20.5 and np.quantile(sds[noisy], 0.9) > 15
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 32:] = 255
    blurred = augment(
        _sample(edge), np.random.default_rng(0), replace(cfg, noise=0.0, blur=1.0, blur_p=1.0)
    )
    row = blurred.context[10, :, 0].astype(int)
    assert 0 < row[31] < 255 or 0 < row[32] < 255  # the edge is softened
    assert row[0] == 0 and row[-1] == 255


def test_augmentation_is_deterministic_and_keeps_the_crop(tiles):
    sample = _sample(_crop(tiles, 0.0, 128))
    cfg = replace(AugmentConfig(), noise_p=1.0, blur_p=1.0)
    a = augment(sample, np.random.default_rng(7), cfg)
    b = augment(sample, np.random.default_rng(7), cfg)
    c = augment(sample, np.random.default_rng(8), cfg)
    np.testing.assert_array_equal(a.context, b.context)
    np.testing.assert_array_equal(a.local, b.local)
    assert a.offset == b.offset
    assert not np.array_equal(a.context, c.context)
    x, y, w, h = a.local_box
    np.testing.assert_array_equal(a.context[y : y + h, x : x + w], a.local)


def test_augment_config_refuses_bad_ranges():
    with pytest.raises(ValueError, match="hed_scale"):
        AugmentConfig(hed_scale=1.2)
    with pytest.raises(ValueError, match="noise_p"):
        AugmentConfig(noise_p=2.0)


# --- stain normalisation ------------------------------------------------------------------


def _batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_reinhard_maps_a_shifted_tile_to_the_target_and_leaves_the_target_alone(tiles):
    ref = _crop(tiles, 0.0, 128)
    spec = fit_reinhard(ref)
    norm = ReinhardNormaliser(spec)
    shifted = _crop(tiles, -1.0, 128)
    before_mean, _ = lab_statistics(shifted)
    assert np.abs(before_mean - spec.target_mean).max() > 5  # the shift is visible in LAB
    out = _as_uint8(norm(_batch(shifted, ref)))
    mean, std = lab_statistics(out[0])
    np.testing.assert_allclose(mean, spec.target_mean, atol=1.5)
    np.testing.assert_allclose(std, spec.target_std, rtol=0.12, atol=0.5)
    # identity-like on the target itself: only the LAB round trip and 8-bit rounding remain
    diff = np.abs(out[1].astype(int) - ref.astype(int))
    assert diff.mean() < 0.6 and diff.max() <= 3


def test_glass_only_images_pass_through():
    spec = StainNormalisation("reinhard", (60.0, 30.0, -10.0), (12.0, 8.0, 6.0))
    glass = np.full((32, 32, 3), 240, np.uint8)
    out = ReinhardNormaliser(spec)(_batch(glass))
    np.testing.assert_array_equal(_as_uint8(out)[0], glass)


def test_training_and_inference_paths_apply_the_same_normalisation(tiles):
    """The trainer's input transform (model.runtime.normalise) and the predictor's are the one
    implementation: identical tensors, and different from the config without normalisation."""
    from napari_sgnet.inference.predictor import TorchPredictor

    spec = fit_reinhard(_crop(tiles, 0.0, 128))
    config = TINY.replace(stain_normalisation=spec)
    torch.manual_seed(0)
    model = build_model(config)
    predictor = TorchPredictor(model, device="cpu", precision="fp32", channels_last=False)
    batch = np.stack([_crop(tiles, -1.0, 64), _crop(tiles, 1.0, 64, 1), _crop(tiles, 0.0, 64, 2)])
    trained = normalise(torch.from_numpy(batch).permute(0, 3, 1, 2), config)
    inferred = predictor._to_device(batch)
    torch.testing.assert_close(inferred, trained, rtol=0, atol=0)
    plain = normalise(torch.from_numpy(batch).permute(0, 3, 1, 2), TINY)
    assert (plain[0] - trained[0]).abs().mean() > 0.05  # the stain-shifted tile is changed
    # and the predictor's labels are the model's labels on that input
    labels, _ = predictor.predict(
        batch,
        np.stack([np.pad(b, ((32, 32), (32, 32), (0, 0)), constant_values=255) for b in batch]),
    )
    with torch.inference_mode():
        context = normalise(
            torch.from_numpy(
                np.stack(
                    [np.pad(b, ((32, 32), (32, 32), (0, 0)), constant_values=255) for b in batch]
                )
            ).permute(0, 3, 1, 2),
            config,
        )
        out = model.eval()(trained, context=context)
    logits = out["logits"] if isinstance(out, dict) else out
    np.testing.assert_array_equal(labels, (logits.argmax(1) + 1).to(torch.uint8).numpy())


def test_config_round_trip_and_old_configs():
    spec = StainNormalisation("reinhard", (70.0, 25.0, -12.0), (10.0, 7.0, 5.0), min_tissue=0.1)
    config = TINY.replace(stain_normalisation=spec)
    data = json.loads(config.to_json())
    assert data["stain_normalisation"] == {
        "method": "reinhard",
        "target": {"mean": [70.0, 25.0, -12.0], "std": [10.0, 7.0, 5.0]},
        "min_tissue": 0.1,
    }
    assert ModelConfig.from_dict(data) == config
    # configs written before the field: no key -> None, and the same architecture hash
    old = TINY.to_dict()
    del old["stain_normalisation"]
    loaded = ModelConfig.from_dict(old)
    assert loaded.stain_normalisation is None
    assert loaded.architecture_hash() == TINY.architecture_hash()
    assert config.architecture_hash() != TINY.architecture_hash()  # part of the input contract


def test_missing_target_is_refused_naming_the_config(tmp_path):
    folder = tmp_path / "model"
    save_checkpoint(build_model(TINY), folder)
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())
    data["stain_normalisation"] = {"method": "reinhard"}
    config_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="needs a target") as info:
        ModelConfig.load(config_path)
    assert str(config_path) in str(info.value)
    with pytest.raises(ConfigError, match="method must be one of"):
        StainNormalisation.from_dict(
            {"method": "macenko-ish", "target": {"mean": [1, 2, 3], "std": [1, 1, 1]}}
        )


def test_predict_refuses_the_missing_target_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    save_checkpoint(build_model(TINY), folder)
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())
    data["stain_normalisation"] = {"method": "reinhard", "target": None}
    config_path.write_text(json.dumps(data))
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, np.full((256, 256, 3), 200, np.uint8), photometric="rgb")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(slide),
            "--model",
            str(folder),
            "--out",
            str(out),
            "--mpp",
            "4",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "config.json" in err and "needs a target" in err
    assert not out.exists() or not any(out.iterdir())


def _train_args(out, *extra: str) -> list[str]:
    return [
        "train", "--out", str(out), "--synthetic-train-seeds", "3", "--size", "2048",
        "--synthetic-version", "1",  # a 1 mm v2 slide has no needle core: nothing to train on
        "--arch", "fcn_lite", "--patch-size", "64", "--mpp", "4", "--steps", "2",
        "--batch-size", "2", "--val-every", "0", "--checkpoint-every", "0", "--device", "cpu",
        "--threads", "1", *extra,
    ]  # fmt: skip


def test_train_cli_fits_and_saves_a_reinhard_target(tmp_path):
    out = tmp_path / "run"
    assert main(_train_args(out, "--stain-normalisation", "reinhard")) == 0
    config = ModelConfig.load(out / "best" / "config.json")
    spec = config.stain_normalisation
    assert spec is not None and spec.method == "reinhard"
    assert 30 < spec.target_mean[0] < 95 and min(spec.target_std) > 0
    assert load_checkpoint(out / "best").config.stain_normalisation == spec


def test_train_cli_refuses_a_target_file_without_target_before_writing(tmp_path, capsys):
    bad = tmp_path / "target.json"
    bad.write_text(json.dumps({"mean": [70, 20, -10]}))
    out = tmp_path / "run"
    args = _train_args(out, "--stain-normalisation", "reinhard", "--stain-target", str(bad))
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(bad) in err and "needs a target" in err
    assert not out.exists()


def test_mild_preset_reproduces_the_first_weights_jitter(tiles):
    """``AugmentConfig.mild()`` draws and applies exactly what the old jitter did (HED scale and
    bias, then brightness/contrast, on both images), so the shipped weights stay reproducible."""
    from napari_sgnet.training.augment import color_jitter, flip_rotate, hed_jitter

    sample = _sample(_crop(tiles, 0.0, 128))
    cfg = AugmentConfig.mild()
    out = augment(sample, np.random.default_rng(5), cfg)
    rng = np.random.default_rng(5)
    flip, k = rng.random() < 0.5, int(rng.integers(4))
    scale, bias = rng.uniform(0.95, 1.05, 3), rng.uniform(-0.004, 0.004, 3)
    bright, contr = rng.uniform(-0.08, 0.08), rng.uniform(0.9, 1.1)
    for image, got in ((sample.context, out.context), (sample.local, out.local)):
        x = flip_rotate(image, flip, k).astype(np.float32) / 255
        x = color_jitter(hed_jitter([x], scale, bias), bright, contr)[0]
        np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), got)


def test_saved_augment_configs_without_the_new_keys_load_with_them_off():
    from napari_sgnet.training.config import TrainConfig

    old = {"flips": True, "rotations": True, "hed_scale": 0.05, "hed_bias": 0.004,
           "brightness": 0.08, "contrast": 0.1}  # fmt: skip
    assert AugmentConfig.from_dict(old) == AugmentConfig.mild()
    assert TrainConfig.from_dict({"augment": old}).augment == AugmentConfig.mild()
    assert AugmentConfig.preset("stain") == AugmentConfig()
    with pytest.raises(ValueError, match="preset"):
        AugmentConfig.preset("strong")
