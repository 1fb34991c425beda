"""Synthetic Gleason-like slides: determinism, laziness, level consistency, the context property."""

from __future__ import annotations

import argparse
import json
from unittest import mock

import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.io.working import working_level
from napari_sgnet.palette import GLEASON
from napari_sgnet.synthetic import (
    SynthConfig,
    SynthConfigError,
    SyntheticLevel,
    generate_slide,
    sample_slide,
)
from napari_sgnet.synthetic._noise import Octave, SmoothField, noise_grid, noise_points
from napari_sgnet.synthetic._render import Renderer

MODERATE = SynthConfig(width=16384, seed=0, version=1)  # the v1 generator's tests


@pytest.fixture(scope="module")
def moderate():
    return generate_slide(MODERATE)


@pytest.fixture(scope="module")
def small():
    return generate_slide(
        SynthConfig(
            width=6144,
            height=5000,
            seed=7,
            chunk_size=256,
            region_size_um=900.0,
            min_level_size=300,
            version=1,
        )
    )


def test_pyramid_structure(moderate):
    img, lab = moderate.image, moderate.labels
    assert img.downsamples == lab.downsamples == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert img.levels[0].shape == (16384, 16384, 3) and img.dtype == np.uint8 and img.is_rgb
    assert lab.levels[0].shape == (16384, 16384) and lab.dtype == np.uint8
    assert img.levels[-1].shape[:2] == (1024, 1024)
    assert img.mpp == lab.mpp == 0.5
    assert (working_level(img, 2.0).level, working_level(img, 2.0).exact) == (2, True)
    assert moderate.palette is GLEASON
    assert img.levels[0].chunksize == (512, 512, 3)


def test_same_seed_same_pixels_different_seed_different():
    a = generate_slide(SynthConfig(width=8192, seed=3, version=1))
    b = generate_slide(SynthConfig(width=8192, seed=3, version=1))
    c = generate_slide(SynthConfig(width=8192, seed=4, version=1))
    box = Box(700, 900, 300, 200)
    for level in (0, 2):
        assert np.array_equal(a.image.read(box, level), b.image.read(box, level))
        assert np.array_equal(a.labels.read(box, level), b.labels.read(box, level))
    whole_a, whole_c = a.labels.levels[-1].compute(), c.labels.levels[-1].compute()
    assert not np.array_equal(whole_a, whole_c)
    assert not np.array_equal(a.image.levels[-1].compute(), c.image.levels[-1].compute())


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_chunk_alone_equals_region_of_larger_read(small, level):
    # Blur and nuclei use halos; odd offsets and sizes must still agree exactly.
    slide = generate_slide(small.config.replace(blur=1.3))
    ds = slide.downsamples[level]
    big = Box(301, 157, 700, 600)
    part = Box(big.x + 123, big.y + 77, 301, 211)
    for kind, read in (
        ("image", slide.renderer.image),
        ("labels", slide.renderer.labels),
        ("glands", slide.renderer.gland_mask),
    ):
        whole, alone = read(ds, big), read(ds, part)
        rel = part.relative_to(big)
        assert np.array_equal(whole[rel.slices()], alone), (kind, level)
    # The dask chunk grid gives the same pixels as direct rendering.
    arr = slide.image.levels[level]
    c = slide.config.chunk_size
    assert np.array_equal(
        arr[c : 2 * c, c : 2 * c].compute(), slide.renderer.image(ds, Box(c, c, c, c))
    )


def test_fresh_renderer_agrees_with_warm_cache(small):
    box = Box(2048, 1024, 256, 256)
    warm = small.renderer
    warm.image(1, Box(1800, 900, 700, 700))  # fills the gland cache around the box
    cold = Renderer(small.config)
    assert np.array_equal(warm.image(1, box), cold.image(1, box))


def test_every_class_appears_and_no_pixel_is_unlabelled(moderate):
    labels = moderate.labels.levels[-1].compute()
    counts = np.bincount(labels.ravel(), minlength=6)
    assert counts[0] == 0
    assert (counts[1:] > 0.02 * labels.size).all(), counts


def test_huge_slide_is_lazy():
    with mock.patch.object(Renderer, "image", autospec=True, side_effect=Renderer.image) as image:
        slide = generate_slide(SynthConfig(width=200_000, seed=1, version=1))
        assert slide.image.levels[0].numblocks[:2] == (391, 391)
        assert slide.image.downsamples[-1] == 256
        assert image.call_count == 0
        tile = slide.image.read(Box(100_352, 100_352, 512, 512), level=0)
        assert tile.shape == (512, 512, 3)
        assert image.call_count == 1


def test_labels_of_every_level_subsample_level0_exactly(small):
    size = 2048  # a window of level 0 crossing several regions and the tissue edge
    level0 = small.labels.levels[0][:size, :size].compute()
    assert len(np.unique(level0)) >= 3
    for k, ds in enumerate(small.downsamples):
        lk = small.labels.levels[k][: size // ds, : size // ds].compute()
        nearest = level0[ds // 2 :: ds, ds // 2 :: ds]
        agreement = np.mean(lk == nearest)
        assert agreement > 0.97, (k, agreement)


def test_image_levels_look_like_downsampled_level0(small):
    level0 = small.image.levels[0][:2048, :2048].compute().astype(np.float32)
    for k in (1, 2, 3):
        ds = small.downsamples[k]
        lk = small.image.levels[k][: 2048 // ds, : 2048 // ds].compute().astype(np.float32)
        pooled = level0.reshape(2048 // ds, ds, 2048 // ds, ds, 3).mean(axis=(1, 3))
        assert np.abs(pooled - lk).mean() < 12.0, k


def test_glands_only_inside_graded_regions(small):
    level = 2
    glands = small.gland_level(level).compute()
    labels = small.labels.levels[level].compute()
    assert glands.any()
    assert np.all(labels[glands] >= 2)


def test_local_stroma_patch_needs_context(moderate):
    """At 2 µm/px, many 256 px local patches inside a graded region hold no gland while
    their 512 px context does: the local view is ambiguous, the context decides."""
    level = working_level(moderate.image, 2.0).level
    labels = moderate.labels.levels[level].compute()
    glands = moderate.gland_level(level).compute()
    n = ambiguous = 0
    h, w = labels.shape
    for y in range(128, h - 384, 128):
        for x in range(128, w - 384, 128):
            patch = labels[y : y + 256, x : x + 256]
            if patch[0, 0] < 2 or (patch != patch[0, 0]).any():
                continue
            n += 1
            local = glands[y : y + 256, x : x + 256].any()
            context = glands[y - 128 : y + 384, x - 128 : x + 384].any()
            ambiguous += (not local) and context
    assert n > 50
    assert ambiguous / n > 0.2, (ambiguous, n)


def test_stain_shift_noise_blur_change_image_not_labels(small):
    box = Box(1500, 1200, 512, 512)
    base = small.image.read(box, 1)
    for change in ({"stain_shift": 1.0}, {"noise": 0.0}, {"blur": 2.0}):
        other = generate_slide(small.config.replace(**change))
        assert not np.array_equal(other.image.read(box, 1), base), change
        assert np.array_equal(other.labels.read(box, 1), small.labels.read(box, 1)), change
    shifted = generate_slide(small.config.replace(stain_shift=1.0)).image.read(box, 1)
    assert np.abs(shifted.astype(int) - base).mean() > 5


def test_tissue_fraction_knob():
    for fraction in (0.3, 0.7):
        slide = generate_slide(
            SynthConfig(width=16384, seed=2, tissue_fraction=fraction, version=1)
        )
        layout = slide.renderer.layout
        xs = (np.arange(256) + 0.5) * (layout.width_um / 256)
        tissue = layout.tissue_grid(xs, xs) > layout.tissue_threshold
        assert abs(tissue.mean() - fraction) < 0.05


def test_level_array_indexing(small):
    lazy = SyntheticLevel(small.renderer, 4, "labels")
    assert lazy.shape == small.labels.levels[2].shape and lazy.dtype == np.uint8
    full = small.labels.levels[2][:40, :50].compute()
    assert np.array_equal(lazy[:40, :50], full)
    assert np.array_equal(lazy[:40:3, 5:50:2], full[::3, 5::2])
    assert np.array_equal(lazy[7], small.labels.levels[2][7].compute())
    img = SyntheticLevel(small.renderer, 4, "image")
    assert img[3:9, 4:6, 1].shape == (6, 2)
    with pytest.raises(IndexError):
        lazy[..., 0]


def test_direct_read_matches_pyramid_read_and_pickles(small):
    import pickle

    for box in (Box(333, 101, 300, 200), Box(-40, -30, 100, 80)):
        for kind, pyramid in (("image", small.image), ("labels", small.labels)):
            assert np.array_equal(small.read(box, 1, kind), pyramid.read(box, 1)), kind
    chunk = small.image.levels[1][256:512, 0:256]
    assert np.array_equal(pickle.loads(pickle.dumps(chunk)).compute(), chunk.compute())


def test_exact_noise_evaluators_agree():
    octaves = (Octave.iso(400.0, 0), Octave(90.0, 30.0, 1), Octave.iso(20.0, 3))
    xs = np.linspace(-5000.0, 3000.0, 37)
    ys = np.linspace(1e5, 1.02e5, 23)
    grid = noise_grid(11, xs, ys, octaves)
    gx, gy = np.meshgrid(xs, ys)
    assert np.array_equal(grid.ravel(), noise_points(11, gx.ravel(), gy.ravel(), octaves))
    # Sub-grids (another "block") give bit-identical values.
    assert np.array_equal(noise_grid(11, xs[5:9], ys[3:20], octaves), grid[3:20, 5:9])
    field = SmoothField(5, octaves, 15.0)
    assert np.array_equal(field.grid(xs, ys).ravel(), field.points(gx.ravel(), gy.ravel()))
    assert np.abs(grid).max() < sum(o.amplitude for o in octaves)


def test_config_validation_and_round_trip():
    cfg = SynthConfig(width=1000, seed=5, stain_shift=0.5, version=1)
    assert cfg.height == 1000
    assert SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.layout_token() == cfg.replace(noise=0.0, stain_shift=0.0).layout_token()
    assert cfg.token() != cfg.replace(noise=0.0).token()
    for bad in (
        {"width": 0},
        {"mpp": -1.0},
        {"tissue_fraction": 0.0},
        {"noise": -1.0},
        {"class_weights": (1.0, 1.0)},
        {"width": 1.5},
        {"region_size_um": 100.0},
        {"class_weights": (0, 0, 0, 0, 0)},
    ):
        with pytest.raises(SynthConfigError):
            SynthConfig(**bad)
    with pytest.raises(SynthConfigError, match="unknown"):
        SynthConfig.from_dict({"width": 10, "colour": 1})


def test_class_weights_drop_a_class():
    slide = generate_slide(
        SynthConfig(width=16384, seed=0, class_weights=(1, 1, 1, 0, 1), version=1)
    )
    counts = np.bincount(slide.labels.levels[-1].compute().ravel(), minlength=6)
    assert counts[4] == 0 and counts[5] > 0


def test_sample_slide():
    slide = sample_slide(size=4096, seed=9, version=1)
    assert slide.image.shape == (4096, 4096, 3)
    assert slide.config.seed == 9 and slide.image.name == "synthetic-9"
    assert slide.image.metadata["synthetic"]["seed"] == 9


def test_cli_synth_writes_tiff_and_labels(tmp_path, capsys):
    import tifffile

    from napari_sgnet.cli import synth_cmd
    from napari_sgnet.errors import StoreError

    parser = argparse.ArgumentParser()
    synth_cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "synth",
            str(tmp_path / "out"),
            "--size",
            "1536",
            "--height",
            "1200",
            "--seed",
            "4",
            "--stain-shift",
            "0.5",
            "--name",
            "s",
            "--version",
            "1",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    tif = tmp_path / "out" / "s.ome.tif"
    assert str(tif) in out and "napari" in out
    with tifffile.TiffFile(tif) as t:
        assert t.is_ome and len(t.series[0].levels) == 2
        assert t.series[0].levels[0].shape == (1200, 1536, 3)
    cfg = SynthConfig.from_dict(json.loads((tmp_path / "out" / "s.synth.json").read_text()))
    assert cfg.seed == 4 and cfg.stain_shift == 0.5
    import zarr

    label0 = zarr.open_group(str(tmp_path / "out" / "s.labels.ome.zarr"), mode="r")[
        "labels/gleason/0"
    ]
    expected = generate_slide(cfg).labels.levels[0].compute()
    assert np.array_equal(label0[...], expected)
    with pytest.raises(StoreError, match="already exists"):
        args.func(args)
