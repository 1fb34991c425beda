"""Synthetic generator version 2: needle cores, outlined regions, glass 0, determinism; v1 kept."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
from skimage.measure import label as connected
from skimage.measure import regionprops

from napari_sgnet.geometry import Box
from napari_sgnet.synthetic import SynthConfig, SynthConfigError, generate_slide
from napari_sgnet.synthetic.v2 import RendererV2
from napari_sgnet.synthetic.v2._cores import CELL_UM, HALF_WIDTH_UM
from napari_sgnet.synthetic.v2._regions import MIN_REGION_MM2

#: 4 x 4 mm at 0.5 µm/px: two cores; seed 4 has a benign/tumour interface in a core.
V2 = SynthConfig(width=8192, seed=4, version=2, chunk_size=256, min_level_size=256)
COARSE = 3  # downsample 8: 4 µm/px, the models' working resolution


@pytest.fixture(scope="module")
def slide():
    return generate_slide(V2)


@pytest.fixture(scope="module")
def coarse(slide):
    ds = slide.downsamples[COARSE]
    h, w = slide.config.level_shape(ds)
    box = Box(0, 0, w, h)
    return (
        slide.read(box, COARSE, kind="labels"),
        slide.read(box, COARSE, kind="tissue"),
        slide.read(box, COARSE, kind="glands"),
    )


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _tissue_box(tissue: np.ndarray, ds: int, size: int) -> Box:
    """A level-0 box of ``size`` px centred on a tissue pixel of a coarse tissue map."""
    ys, xs = np.nonzero(tissue)
    i = len(ys) // 2
    return Box(int(xs[i]) * ds - size // 2, int(ys[i]) * ds - size // 2, size, size)


def test_version_field_round_trip_and_validation():
    assert SynthConfig().version == 2  # the default
    v1 = SynthConfig(width=4096, version=1)
    data = v1.to_dict()
    assert data["version"] == 1
    del data["version"]
    assert SynthConfig.from_dict(data).version == 1
    assert SynthConfig.from_dict(V2.to_dict()) == V2
    assert V2.token() != V2.replace(version=1).token()
    assert V2.layout_token() != V2.replace(version=1).layout_token()
    with pytest.raises(SynthConfigError, match="version"):
        SynthConfig(version=3)
    assert generate_slide(V2).labels.metadata["synthetic"]["version"] == 2


def test_version1_pixels_unchanged():
    # Reference values computed with the generator before version 2 existed.
    s = generate_slide(SynthConfig(width=8192, seed=0, min_level_size=512, version=1))
    want = {
        (0, "image"): "0819c247f87cb1cfeab8f067559c88474072a425283c3deb436d948f197d3b24",
        (0, "labels"): "3af3f1d870212fe8fcfe6eb321fd14d009bccc953fce3f59f698f0c446a1a39a",
        (3, "image"): "c397417d98b894bb08d46a66f6e67f47dca297692690db8a036c86396383ab99",
        (3, "labels"): "90b20d66d3ff9352d300cdf82f0d583d13c432789635a6a86a8a33f55534486d",
    }
    for (level, kind), digest in want.items():
        box = Box(3000, 2900, 256, 256) if level == 0 else Box(300, 350, 256, 256)
        assert _sha(s.read(box, level=level, kind=kind)) == digest, (level, kind)


def test_version2_pixels_frozen(slide):
    # Training runs use v2 as first committed: a seed's pixels and labels must not drift.
    want = {
        (
            0,
            5640,
            5152,
            "image",
        ): "b6d1b1292e26309ffe76698af36d2529703c08876191e6f90e31f1d615e5899b",
        (
            0,
            5640,
            5152,
            "labels",
        ): "da1acff5c9defdd68bfa1435c4b43e8d43ed10fcc7cbcb77a85c4482d5f5bda3",
        (
            0,
            5640,
            5152,
            "glands",
        ): "99ccb8d940be0aa5a73a5a98a45b1023f131ff07e5bee19285b1943fc33ee326",
        (
            0,
            2920,
            5488,
            "image",
        ): "fc78294cf00036299c5a7ff2de67ec7aceaf89c2d2bdecd9e02212d914ca29fa",
        (
            0,
            2920,
            5488,
            "glands",
        ): "4ada5e56b9941b32ee2d6d1e6583fe43139a319023cbd084357d89778db616de",
        (3, 300, 350, "image"): "d304e5b3da2cdd952b78b76a229b5f25728c5d3bcc32507557287d396f4d449a",
        (3, 300, 350, "labels"): "8cd78567327dba57623f5cf355257a161346fdf6b75a1ab1cef92016710cf022",
        (3, 300, 350, "glands"): "9ff3a06b5d0ce3d4fdc40a932e670103d249b24df68b4233dc1a6ca1695ee53f",
        (3, 300, 350, "tissue"): "790b1fa075f144a2d9c611eb09356c9be4b2d72900cf034df2851d92c0741260",
    }
    for (level, x, y, kind), digest in want.items():
        assert _sha(slide.read(Box(x, y, 256, 256), level, kind)) == digest, (level, x, kind)


def test_version1_tissue_kind_tells_glass_from_stroma():
    s = generate_slide(SynthConfig(width=4096, seed=1, min_level_size=256, version=1))
    ds = s.downsamples[-1]
    h, w = s.config.level_shape(ds)
    tissue = s.read(Box(0, 0, w, h), len(s.downsamples) - 1, kind="tissue")
    labels = s.read(Box(0, 0, w, h), len(s.downsamples) - 1, kind="labels")
    assert tissue.dtype == bool and 0 < tissue.mean() < 1
    assert np.all(labels[~tissue] == 1)
    assert s.tissue.levels[0].dtype == bool and s.tissue.levels[0].shape == (4096, 4096)


@pytest.mark.parametrize("level", [0, COARSE])
def test_chunk_alone_equals_region_of_larger_read(slide, coarse, level):
    cfg = slide.config.replace(blur=1.3)
    ds = slide.downsamples[level]
    renderer = RendererV2(cfg)
    centre = _tissue_box(coarse[1], slide.downsamples[COARSE], 0)
    big = Box(centre.x // ds - 300, centre.y // ds - 250, 600, 500)
    part = Box(big.x + 123, big.y + 77, 301, 211)
    cold = RendererV2(cfg)
    for kind in ("image", "labels", "glands", "tissue"):
        whole = getattr(renderer, kind if kind != "glands" else "gland_mask")(ds, big)
        alone = getattr(cold, kind if kind != "glands" else "gland_mask")(ds, part)
        sub = whole[part.y - big.y : part.y1 - big.y, part.x - big.x : part.x1 - big.x]
        assert np.array_equal(sub, alone), kind
    labels = renderer.labels(ds, big)
    assert len(np.unique(labels)) >= 2 or level == 0


def test_glass_chunk_alone_equals_larger_read_with_tissue(slide, coarse):
    # An all-glass chunk takes the glass colour through the same formula as tissue pixels.
    tissue, ds = coarse[1], slide.downsamples[COARSE]
    col = tissue.shape[1] // 2
    top = int(np.argmax(tissue[:, col]))  # first tissue row of this column
    y = top * ds
    big = Box(col * ds - 200, y - 300, 400, 400)
    part = Box(big.x + 37, big.y + 11, 150, 120)  # glass only
    assert not slide.renderer.tissue(1, part).any() and slide.renderer.tissue(1, big).any()
    whole = RendererV2(slide.config).image(1, big)
    alone = RendererV2(slide.config).image(1, part)
    sub = whole[part.y - big.y : part.y1 - big.y, part.x - big.x : part.x1 - big.x]
    assert np.array_equal(sub, alone)


def test_same_config_same_pixels_and_levels_subsample_level0(slide, coarse):
    again = generate_slide(V2)
    box = _tissue_box(coarse[1], slide.downsamples[COARSE], 400)
    for level in (0, COARSE):
        b = box if level == 0 else Box(box.x // 8, box.y // 8, 200, 150)
        assert np.array_equal(slide.read(b, level), again.read(b, level))
        assert np.array_equal(slide.read(b, level, "labels"), again.read(b, level, "labels"))
    other = generate_slide(V2.replace(seed=5))
    assert not np.array_equal(coarse[0], other.read(Box(0, 0, 1024, 1024), COARSE, "labels"))
    # Labels of a coarse level are level 0 sampled at the pixel centres.
    b0 = Box(box.x - box.x % 8, box.y - box.y % 8, 400, 400)
    fine = slide.read(b0, 0, "labels")
    lab = slide.read(Box(b0.x // 8, b0.y // 8, 50, 50), COARSE, "labels")
    assert np.array_equal(lab, fine[4::8, 4::8])


def test_glass_is_zero_tissue_labelled_and_glands_in_regions(coarse):
    labels, tissue, glands = coarse
    assert np.all(labels[~tissue] == 0)
    assert np.all(labels[tissue] >= 1)
    assert 0.2 < tissue.mean() < 0.8
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    assert glands.any() and np.all(labels[glands] >= 2)


def test_regions_are_not_tiny_and_meet_inside_a_core(slide, coarse):
    labels, tissue, _ = coarse
    px_um = slide.config.mpp * slide.downsamples[COARSE]
    border = int((CELL_UM * 2 + 150) / px_um)  # regions cut by the slide's side edge
    for value in (2, 3, 4, 5):
        for c in regionprops(connected(labels == value, connectivity=1)):
            x0, x1 = c.bbox[1], c.bbox[3]
            if x0 < border or x1 > labels.shape[1] - border:
                continue
            assert c.area * px_um**2 / 1e6 >= MIN_REGION_MM2, (value, c.bbox, c.area)
    benign, tumour = labels == 2, labels >= 3
    touch = (benign[:, :-1] & tumour[:, 1:]) | (tumour[:, :-1] & benign[:, 1:])
    assert touch.any()  # seed 4: a benign region meets a tumour region inside one core
    cores = connected(tissue, connectivity=1)
    ys, xs = np.nonzero(touch)
    assert cores[ys[0], xs[0]] > 0 and cores[ys[0], xs[0] + 1] == cores[ys[0], xs[0]]


def test_cores_are_elongated_and_about_1mm_wide(coarse, slide):
    tissue = coarse[1]
    px_mm = slide.config.mpp * slide.downsamples[COARSE] / 1000.0
    comps = [c for c in regionprops(connected(tissue, connectivity=1)) if c.area * px_mm**2 > 0.3]
    assert len(comps) >= 2
    lo, hi = 2 * HALF_WIDTH_UM[0] / 1000.0, 2 * HALF_WIDTH_UM[1] / 1000.0
    for c in comps:
        # A band of width w has a second-moment minor axis of w * 4 / sqrt(12).
        width = c.axis_minor_length * np.sqrt(12.0) / 4.0 * px_mm
        assert 0.9 * lo <= width <= 1.1 * hi, width
        assert c.axis_major_length / c.axis_minor_length > 1.4
    # Glass between cores: no tissue on the slide's top and bottom rows.
    assert not tissue[0].any() and not tissue[-1].any()


def test_stain_shift_noise_blur_change_image_not_labels(slide, coarse):
    box = _tissue_box(coarse[1], slide.downsamples[COARSE], 256)
    shifted = generate_slide(V2.replace(stain_shift=1.0, noise=0.0, blur=1.0))
    assert np.array_equal(slide.read(box, 0, "labels"), shifted.read(box, 0, "labels"))
    assert np.array_equal(slide.read(box, 0, "glands"), shifted.read(box, 0, "glands"))
    assert not np.array_equal(slide.read(box, 0), shifted.read(box, 0))
    assert V2.layout_token() == V2.replace(stain_shift=1.0, noise=0.0, blur=1.0).layout_token()


def test_cli_flags_accept_the_version():
    from napari_sgnet.cli import synth_cmd, train_cmd

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    synth_cmd.register(sub)
    train_cmd.register(sub)
    args = parser.parse_args(["synth", "out", "--version", "2", "--zarr-version", "0.4"])
    assert args.version == 2 and args.zarr_version == "0.4"
    assert parser.parse_args(["synth", "out"]).version == 2
    assert parser.parse_args(["synth", "out", "--version", "1"]).version == 1
    train = ["train", "--out", "o", "--synthetic-train-seeds", "0", "--size", "2048"]
    args = parser.parse_args([*train, "--synthetic-version", "2"])
    assert args.synthetic_version == 2
    sources, _, description = train_cmd.build_sources(args)
    assert description["synthetic"]["version"] == 2
    assert sources[0].image.metadata["synthetic"]["version"] == 2
    assert parser.parse_args(train).synthetic_version == 2
    args = parser.parse_args([*train, "--synthetic-version", "1"])
    assert args.synthetic_version == 1
    sources, _, description = train_cmd.build_sources(args)
    assert description["synthetic"]["version"] == 1
    assert sources[0].image.metadata["synthetic"]["version"] == 1


def test_training_source_passes_the_version():
    from napari_sgnet.training.sources import synthetic_source

    src = synthetic_source(3, 4096, version=2)
    assert src.name == "synthetic-3"
    assert src.image.metadata["synthetic"]["version"] == 2
    assert synthetic_source(3, 4096).image.metadata["synthetic"]["version"] == 2
    assert synthetic_source(3, 4096, version=1).image.metadata["synthetic"]["version"] == 1
