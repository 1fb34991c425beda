"""Pure layer: boxes, level choice, palettes and model configs."""

from __future__ import annotations

import json

import pytest

from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.geometry import (
    Box,
    chunk_aligned_tiles,
    context_box,
    scale_box,
    source_level_for_mpp,
)
from napari_sgnet.palette import GLEASON, Palette, PaletteError, load_palette


def test_box_intersect_clip_and_slices():
    a = Box(10, 20, 30, 40)
    assert a.x1 == 40 and a.y1 == 60 and a.area == 1200
    assert a.intersect(Box(0, 0, 15, 25)) == Box(10, 20, 5, 5)
    assert a.intersect(Box(100, 100, 5, 5)).is_empty
    assert Box(-5, -5, 20, 20).clip(10, 8) == Box(0, 0, 10, 8)
    assert a.slices() == (slice(20, 60), slice(10, 40))
    assert Box(0, 0, 100, 100).contains(a) and not a.contains(Box(0, 0, 100, 100))
    with pytest.raises(ValueError):
        Box(0, 0, -1, 3)


def test_scale_box_covers_and_round_trips_on_aligned_boxes():
    box = Box(8, 16, 32, 24)
    assert scale_box(scale_box(box, 0.25), 4) == box
    # an unaligned box scaled down is covered, never shrunk
    small = scale_box(Box(3, 5, 7, 2), 0.5)
    assert small == Box(1, 2, 4, 2)


def test_context_box_is_centred_and_alpha_sized():
    local = Box(100, 200, 64, 64)
    ctx = context_box(local, 2.0)
    assert (ctx.w, ctx.h) == (128, 128)
    assert ctx.center == local.center
    assert ctx.contains(local)
    off = context_box(local, 2.0, center=(110.0, 210.0))
    assert off.center == (110.0, 210.0) and off.contains(Box(110, 210, 1, 1))


def test_source_level_for_mpp_reads_a_level_at_the_mpp_or_the_nearest_finer():
    ds = (1.0, 4.0, 16.0)
    assert source_level_for_mpp(ds, 0.5, 2.0) == (1, 1.0)  # a level at the µm/px
    assert source_level_for_mpp(ds, 0.5, 2.01) == (1, 1.0)  # within 1%: read as it is
    assert source_level_for_mpp(ds, 0.5, 4.0) == (1, 2.0)  # nearest finer, reduced 2x
    assert source_level_for_mpp(ds, 0.5, 100.0) == (2, pytest.approx(12.5))
    assert source_level_for_mpp(ds, 0.5, 0.4) == (0, pytest.approx(0.8))  # coarser: < 1
    assert source_level_for_mpp(ds, None, 2.0) == (0, 1.0)


def test_chunk_aligned_tiles_cover_region_exactly_once():
    tiles = chunk_aligned_tiles(100, 70, 32, Box(10, 10, 60, 30))
    covered = set()
    for t in tiles:
        assert t.x % 32 == 0 and t.y % 32 == 0
        for y in range(t.y, t.y1):
            for x in range(t.x, t.x1):
                assert (x, y) not in covered
                covered.add((x, y))
    assert all((x, y) in covered for x in range(10, 70) for y in range(10, 40))
    assert max(t.x1 for t in chunk_aligned_tiles(100, 70, 32)) == 100


def test_palette_labels_colours_and_round_trip(tmp_path):
    assert GLEASON.num_classes == 5
    assert GLEASON.label_of("Gleason 4") == 4
    assert GLEASON.class_of_label(0) is None
    colors = GLEASON.napari_colors()
    assert colors[0][3] == 0 and colors[1][3] == 1
    path = tmp_path / "p.json"
    path.write_text(json.dumps(GLEASON.to_dict()))
    assert load_palette(path) == GLEASON


def test_palette_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PaletteError, match="bad.json"):
        load_palette(bad)
    bad.write_text(json.dumps({"classes": [{"name": "a", "color": [0, 0, 300]}]}))
    with pytest.raises(PaletteError, match="bad.json"):
        load_palette(bad)
    with pytest.raises(PaletteError):
        Palette("dup", ())


def test_model_config_round_trip_and_validation(tmp_path):
    cfg = ModelConfig(patch_size=64, training={"seed": 1}, metrics={"miou": 0.5})
    cfg.save(tmp_path / "config.json")
    back = ModelConfig.load(tmp_path / "config.json")
    assert back == cfg and back.training == {"seed": 1} and back.palette == GLEASON
    assert back.context_size == 128
    assert cfg.architecture_hash() == cfg.replace(name="other").architecture_hash()
    assert cfg.architecture_hash() != cfg.replace(use_context=False).architecture_hash()
    with pytest.raises(ConfigError):
        ModelConfig(patch_size=100)
    (tmp_path / "bad.json").write_text(json.dumps({"patch_size": 64, "evil": 1}))
    with pytest.raises(ConfigError, match="bad.json"):
        ModelConfig.load(tmp_path / "bad.json")
