"""The model's µm/px on any pyramid: area-averaged working levels, refusals, the store record.

The same synthetic slide (0.5 µm/px level 0) is built as pyramids with levels 1/2/4/8 (a level
at the model's 2 and 4 µm/px: the reference), 1/4/16, 1/3 and a single level. Every level is
the exact block mean of level 0 (``skimage.transform.downscale_local_mean``, rounded), as a
scanner's pyramid is (up to its JPEG).

Tolerance: at least 99% of the working pixels get the reference's label. Where the engine
reads level 0 (single level) the working level *is* the reference's level (the same 8 x 8 block
mean, rounded the same way), so the labels are identical. Elsewhere the source level was
itself rounded to uint8 (1/4/16 at 4 µm/px: +-1 grey level; measured here 99.95% identical
with the threshold rule, 99.79% with the conv net) or already averaged across the working
pixels' borders (1/3: a 1.5 µm pixel straddles two 4 µm pixels and is taken as uniform;
measured 99.64-99.86%). A per-pixel threshold rule (the most sensitive predictor there is:
one grey level can flip a label) and a random conv net both stay above 99%.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import dask.array as da
import numpy as np
import pytest
import tifffile
from skimage.transform import downscale_local_mean

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box, source_level_for_mpp
from napari_sgnet.inference.engine import predict_slide
from napari_sgnet.inference.plan import make_plan
from napari_sgnet.inference.predictor import TorchPredictor
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.inference.testing import PixelRulePredictor
from napari_sgnet.inference.testing_torch import tiny_model
from napari_sgnet.io import resample
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.resample import ResampledLevel, area_weights
from napari_sgnet.io.windows import read_local_and_context
from napari_sgnet.io.working import ScaleError, WorkingLevel, working_level
from napari_sgnet.synthetic import generate_slide
from napari_sgnet.training.dataset import SlideSampler, SlideSource, working_views
from napari_sgnet.training.evaluate import predict_level

SIZE = 1152  # divisible by 16 and by 3 x 8: every level and working level is whole
LAYOUTS = {"1/2/4/8": (1, 2, 4, 8), "1/4/16": (1, 4, 16), "1/3": (1, 3), "single": (1,)}
MIN_AGREEMENT = 0.99


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Independent reference: skimage's block mean, rounded half up."""
    factors = (k, k, 1) if a.ndim == 3 else (k, k)
    return np.floor(downscale_local_mean(a.astype(np.float64), factors) + 0.5).astype(a.dtype)


def build(base: np.ndarray, downsamples: tuple[int, ...], name: str, mpp=0.5) -> Pyramid:
    levels = [base if d == 1 else block_mean(base, d) for d in downsamples]
    chunks = (128, 128, 3)[: base.ndim]
    return Pyramid(
        tuple(da.from_array(lv, chunks=chunks) for lv in levels),
        tuple(float(d) for d in downsamples),
        mpp=mpp,
        name=name,
    )


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    # generator v1: a 0.6 mm v2 slide has no needle core, all glass and no tissue to sample
    slide = generate_slide(width=SIZE, height=SIZE, seed=7, mpp=0.5, name="scale", version=1)
    return np.asarray(slide.image.levels[0])


@pytest.fixture(scope="module")
def pyramids(base) -> dict[str, Pyramid]:
    return {k: build(base, ds, k.replace("/", "-")) for k, ds in LAYOUTS.items()}


def labels_of(path) -> np.ndarray:
    store = LabelStore.open(path, mode="r")
    return store.read_labels(Box(0, 0, store.width, store.height))


# -- the engine's labels on every pyramid -------------------------------------------------------


@pytest.mark.parametrize(
    ("mpp", "kind"), [(4.0, "rule"), (2.0, "rule"), (4.0, "tiny")],
    ids=["4-rule", "2-rule", "4-tiny"],
)
def test_every_pyramid_gives_the_reference_labels(tmp_path, pyramids, mpp, kind):
    model = (
        PixelRulePredictor(32, mpp=mpp)
        if kind == "rule"
        else TorchPredictor(tiny_model(32, mpp=mpp), device="cpu")
    )
    out = {}
    for name, pyramid in pyramids.items():
        ev = predict_slide(pyramid, tmp_path / f"{pyramid.name}.zarr", model, skip_glass=False)
        assert ev.downsample == pytest.approx(mpp / 0.5)
        out[name] = labels_of(tmp_path / f"{pyramid.name}.zarr")
    ref = out["1/2/4/8"]
    assert ref.shape == (SIZE * 0.5 / mpp,) * 2
    agreement = {k: float((v == ref).mean()) for k, v in out.items()}
    assert agreement["single"] == 1.0  # level 0 block-averaged = the reference's level
    assert min(agreement.values()) >= MIN_AGREEMENT, agreement


def test_a_level_at_the_model_mpp_is_read_as_it_is(pyramids):
    for name, mpp, level in [("1/2/4/8", 4.0, 3), ("1/4/16", 2.0, 1), ("1/2/4/8", 2.02, 2)]:
        work = working_level(pyramids[name], mpp)
        assert (work.level, work.factor, work.exact, work.method) == (level, 1.0, True, "none")
        assert work.array is pyramids[name].levels[level]
    assert source_level_for_mpp((1.0, 4.0, 16.0), 0.5, 4.0) == (1, 2.0)
    assert source_level_for_mpp((1.0, 3.0), 0.5, 4.0) == (1, pytest.approx(8 / 3))
    assert source_level_for_mpp((1.0,), 0.5, 0.25) == (0, 0.5)  # coarser: factor < 1


# -- the area averaging against independent computations --------------------------------------


@pytest.mark.parametrize("k", [2, 4, 8])
def test_integer_factors_are_the_block_mean(k):
    rng = np.random.default_rng(k)
    a = rng.integers(0, 256, (8 * 24, 8 * 20, 3), dtype=np.uint8)
    level = ResampledLevel(da.from_array(a, chunks=(50, 50, 3)), k)
    expected = block_mean(a, k)
    np.testing.assert_array_equal(np.asarray(level), expected)
    np.testing.assert_array_equal(level[3:11, 5:13], expected[3:11, 5:13])  # any window
    np.testing.assert_array_equal(resample.block_mean(a, k), expected)  # a whole window
    edge = a[:-3, :-5].astype(np.float32)  # partial edge blocks average what they have
    rows, cols = (edge.shape[0] - 1) % k + 1, (edge.shape[1] - 1) % k + 1
    np.testing.assert_allclose(resample.block_mean(edge, k)[-1, -1],
                               edge[-rows:, -cols:].mean(axis=(0, 1)), rtol=1e-6)


def brute_force_area_mean(a: np.ndarray, f: Fraction) -> np.ndarray:
    """Each output pixel: the exact (rational) overlap-weighted mean, rounded half up."""
    h, w = a.shape[:2]
    nh, nw = -(-h * f.denominator // f.numerator), -(-w * f.denominator // f.numerator)

    def weights(j: int, n: int) -> dict[int, Fraction]:
        lo, hi = j * f, min((j + 1) * f, Fraction(n))
        out = {}
        for i in range(int(lo), min(n, int(np.ceil(float(hi))) + 1)):
            ov = min(hi, Fraction(i + 1)) - max(lo, Fraction(i))
            if ov > 0:
                out[i] = ov
        return out

    out = np.zeros((nh, nw, a.shape[2]), dtype=np.uint8)
    for y in range(nh):
        wy = weights(y, h)
        for x in range(nw):
            wx = weights(x, w)
            total = sum(wy.values()) * sum(wx.values())
            for c in range(a.shape[2]):
                s = sum(wy[i] * wx[j] * int(a[i, j, c]) for i in wy for j in wx)
                out[y, x, c] = int(s / total + Fraction(1, 2))  # floor(mean + 1/2)
    return out


def test_non_integer_factor_is_the_exact_fractional_area_mean():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (29, 34, 3), dtype=np.uint8)  # partial edge pixels too
    f = Fraction(8, 3)
    level = ResampledLevel(da.from_array(a, chunks=(10, 10, 3)), 8 / 3)
    expected = brute_force_area_mean(a, f)
    np.testing.assert_array_equal(np.asarray(level), expected)
    # windows and dask chunks of the level are the same pixels as the whole level
    np.testing.assert_array_equal(level[2:9, 4:12], expected[2:9, 4:12])
    lazy = da.from_array(level, chunks=(3, 4, 3), asarray=False).compute()
    np.testing.assert_array_equal(lazy, expected)
    s0, w = area_weights(0, 4, 8 / 3, 34)  # pixel 1 covers [8/3, 16/3): 1/3, 1, 1, 1/3
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[1, 2:6], [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    assert s0 == 0 and not w[1, :2].any() and not w[1, 6:].any()


def test_label_pyramids_are_reduced_by_mode_or_nearest_never_mean():
    rng = np.random.default_rng(5)
    lab = rng.choice(np.array([0, 1, 3], dtype=np.uint8), size=(48, 48), p=[0.2, 0.5, 0.3])
    mode = np.asarray(ResampledLevel(lab, 4, labels=True))
    for y in range(12):
        for x in range(12):
            block = lab[4 * y : 4 * y + 4, 4 * x : 4 * x + 4].ravel()
            counts = np.bincount(block, minlength=4)
            counts[0] = 0 if counts[1:].any() else counts[0]
            assert mode[y, x] == int(np.argmax(counts))  # ties: the smaller id
    nearest = np.asarray(ResampledLevel(lab, 8 / 3, labels=True))
    centres = np.floor((np.arange(18) + 0.5) * 8 / 3).astype(int)
    np.testing.assert_array_equal(nearest, lab[np.ix_(centres, centres)])
    assert set(np.unique(nearest)) <= {0, 1, 3} and set(np.unique(mode)) <= {0, 1, 3}


# -- refusals and the override warning ------------------------------------------------------


def test_a_slide_without_mpp_is_refused_before_anything_is_written(tmp_path, base):
    slide = build(base[:256, :256], (1,), "no-mpp", mpp=None)
    with pytest.raises(ScaleError, match=r"no-mpp: the slide does not say its µm per pixel"):
        predict_slide(slide, tmp_path / "s.zarr", PixelRulePredictor(32, mpp=4.0))
    assert issubclass(ScaleError, UserInputError)
    assert not (tmp_path / "s.zarr").exists()
    # an override makes it usable
    ev = predict_slide(slide, tmp_path / "s.zarr", PixelRulePredictor(32, mpp=4.0), mpp=0.5)
    assert ev.downsample == 8.0


def test_a_slide_coarser_than_the_model_is_refused(tmp_path, base):
    slide = build(block_mean(base[:512, :512], 8), (1,), "coarse", mpp=4.0)
    message = r"coarse: .*finest level is 4 µm/px, coarser than the 2 µm/px the model needs"
    with pytest.raises(ScaleError, match=message):
        predict_slide(slide, tmp_path / "s.zarr", PixelRulePredictor(32, mpp=2.0))
    assert not (tmp_path / "s.zarr").exists()


def test_cli_refuses_a_file_without_mpp_with_exit_2(tmp_path, base, capsys):
    from napari_sgnet.cli.main import main

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, base[:256, :256], tile=(64, 64), photometric="rgb")
    code = main(["predict", "--model", "sgnet", "--out", str(tmp_path / "out"), "--no-progress",
                 str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "plain.tif" in err and "--mpp" in err
    assert not (tmp_path / "out" / "plain.sgnet.zarr").exists()


def test_an_override_far_from_the_file_is_warned_not_refused(tmp_path, base, caplog, capsys):
    from napari_sgnet.cli.main import main
    from napari_sgnet.io.writers import write_ome_tiff

    slide = build(base[:512, :512], (1, 2), "scanned")
    with caplog.at_level(logging.WARNING):
        predict_slide(slide, tmp_path / "near.zarr", PixelRulePredictor(32, mpp=4.0), mpp=0.8,
                      skip_glass=False)
    assert "disagrees" not in caplog.text  # 1.6x: no warning
    with caplog.at_level(logging.WARNING):
        ev = predict_slide(slide, tmp_path / "far.zarr", PixelRulePredictor(32, mpp=4.0),
                           mpp=2.0, skip_glass=False)
    assert "override 2 disagrees with the file's own 0.5 µm/px by 4x" in caplog.text
    assert ev.downsample == 2.0  # the override is used
    single = build(base[:512, :512], (1,), "scanned")
    path = write_ome_tiff(single, tmp_path / "scanned.ome.tif", compression="zlib")
    code = main(["predict", "--model", "sgnet", "--out", str(tmp_path / "out"), "--no-progress",
                 "--mpp", "2.0", str(path)])
    out = capsys.readouterr()
    assert code == 0
    assert "warning: " in out.err and "disagrees with the file's own 0.5 µm/px" in out.err
    assert "working resolution 4 µm/px (slide level " in out.out  # the summary line


# -- the store record ---------------------------------------------------------------------


def test_the_store_records_the_working_resolution(tmp_path, pyramids):
    path = tmp_path / "s.zarr"
    predict_slide(pyramids["1/4/16"], path, PixelRulePredictor(32, mpp=4.0), skip_glass=False)
    store = LabelStore.open(path, mode="r")
    expected = {"mpp": 4.0, "downsample": 8.0, "source_level": 1, "source_mpp": 2.0,
                "source_downsample": 4.0, "factor": 2.0, "resampling": "area"}
    assert store.resolution == expected
    assert store.requests[-1]["resolution"] == expected
    assert store.base_downsample == 8.0 and (store.width, store.height) == (SIZE // 8,) * 2
    exact = tmp_path / "exact.zarr"
    predict_slide(pyramids["1/2/4/8"], exact, PixelRulePredictor(32, mpp=4.0), skip_glass=False)
    rec = LabelStore.open(exact, mode="r").resolution
    assert rec is not None and (rec["source_level"], rec["factor"], rec["resampling"]) == (
        3, 1.0, "none")


def test_exported_patches_are_the_pixels_the_model_saw(tmp_path, base, pyramids):
    """Training patches from a store made on a resampled working level (1/4/16 at 4 µm/px)."""
    from napari_sgnet.training.export_patches import export_patches
    from napari_sgnet.training.patches import read_patch_folder

    slide, path = pyramids["1/4/16"], tmp_path / "s.zarr"
    predict_slide(slide, path, PixelRulePredictor(32, mpp=4.0), skip_glass=False)
    store = LabelStore.open(path)
    edit_box = Box(40, 50, 30, 20)
    store.commit_edit(edit_box, np.full((20, 30), 2, dtype=np.uint8))
    store.commit_edit(Box(0, 0, 6, 5), np.full((5, 6), 3, dtype=np.uint8))  # at the corner
    folder = read_patch_folder(export_patches(store, slide, tmp_path / "p", masks="all"))

    work = working_level(slide, 4.0)
    assert (work.level, work.factor) == (1, 2.0)
    independent = block_mean(block_mean(base, 4), 2)  # level 1, area-averaged 2x
    assert folder.mpp == 4.0 and len(folder) >= 2
    for item in folder:
        box = item.local_box
        assert item.level is None and item.mpp == 4.0  # no slide level is the working level
        assert item.meta["resolution"] == store.resolution
        assert item.meta["slide_box"] == [box.x * 8, box.y * 8, 32 * 8, 32 * 8]
        np.testing.assert_array_equal(item.local, work.read(box, pad_value=255))
        np.testing.assert_array_equal(item.local, independent[box.slices()])
        ox, oy = item.offset
        ctx = Box(box.x - ox, box.y - oy, *item.context.shape[1::-1])
        np.testing.assert_array_equal(item.context, work.read(ctx, pad_value=255))
        np.testing.assert_array_equal(item.local_mask, store.read_labels(box))
        np.testing.assert_array_equal(item.context_mask, store.read_labels(ctx))
    corner = next(i for i in folder if (i.local_box.x, i.local_box.y) == (0, 0))
    assert (corner.context[:16, :16] == 255).all()  # glass past the slide's edge
    assert (corner.local_mask[:5, :6] == 3).all()


def test_info_shows_the_working_level(tmp_path, pyramids, capsys):
    from napari_sgnet.cli.main import main
    from napari_sgnet.io.writers import write_ome_tiff

    path = write_ome_tiff(pyramids["1/4/16"], tmp_path / "a.ome.tif", compression="zlib")
    assert main(["info", str(path), "--model-mpp", "4"]) == 0
    assert "working level for a 4 µm/px model: 4 µm/px (slide level 1 at 2 µm/px, " \
        "area-averaged 2x)" in capsys.readouterr().out


# -- training and evaluation read the same working level --------------------------------------


def test_training_evaluation_and_inference_read_the_same_windows(base, pyramids):
    image = pyramids["1/4/16"]
    lab0 = (base[..., 0] // 64 + 1).astype(np.uint8)
    labels = Pyramid(
        tuple(da.from_array(lab0[::d, ::d], chunks=128) for d in (1, 4, 16)),
        (1.0, 4.0, 16.0), mpp=0.5, name="labels",
    )
    cfg = ModelConfig(general_branch="tiny", patch_size=32, mpp=4.0, name="tiny")
    img_view, lab_view = working_views(image, labels, cfg.mpp)
    assert (img_view.level, img_view.factor, lab_view.level, lab_view.method) == (1, 2.0, 1, "mode")
    independent = block_mean(base, 4)  # the 1/4/16 pyramid's level 1 ...
    independent = block_mean(independent, 2)  # ... area-averaged 2x
    np.testing.assert_array_equal(np.asarray(img_view.array), independent)

    # training: the sampler's working level, and a window of it = the engine's window
    sampler = SlideSampler(SlideSource(image, labels, "s"), cfg)
    np.testing.assert_array_equal(np.asarray(sampler.image.levels[sampler.level]), independent)
    plan = make_plan(image, PixelRulePredictor(32, mpp=4.0).info)
    tile = plan.tiles[len(plan.tiles) // 2]
    local, context = read_batch(image, plan, [tile])
    box = plan.local_box(tile)
    t_local, t_context, _ = read_local_and_context(sampler.image, sampler.level, box, 2.0,
                                                    pad_value=255)
    np.testing.assert_array_equal(t_local, local[0])
    np.testing.assert_array_equal(t_context, context[0])
    assert isinstance(plan.view(image), WorkingLevel) and plan.factor == 2.0

    # evaluation: predict_level reads the same working level as a pyramid that has it
    model = tiny_model(32, mpp=4.0)
    exact = Pyramid((da.from_array(independent, chunks=(64, 64, 3)),), (1.0,), mpp=4.0)
    import torch

    with torch.inference_mode():
        np.testing.assert_array_equal(predict_level(model, model.config, image),
                                      predict_level(model, model.config, exact))
