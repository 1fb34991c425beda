"""The shipped cache of the synthetic sample's coarse levels: current, exact, and used."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet._napari.samples import (
    SYNTHETIC_SAMPLE_SEED,
    SYNTHETIC_SAMPLE_SIZE,
    synthetic_cache_path,
    synthetic_sample,
)
from napari_sgnet.geometry import Box
from napari_sgnet.synthetic import SynthConfig, generate_slide, sample_slide
from napari_sgnet.synthetic import cache as synth_cache
from napari_sgnet.synthetic._render import Renderer
from napari_sgnet.synthetic.v2 import RendererV2

SAMPLE = sample_slide(size=SYNTHETIC_SAMPLE_SIZE, seed=SYNTHETIC_SAMPLE_SEED)
PATH = synthetic_cache_path(SYNTHETIC_SAMPLE_SIZE, SYNTHETIC_SAMPLE_SEED)


def test_the_shipped_cache_is_current():
    """Fails after any change to the generator: run scripts/make_synthetic_sample_cache.py."""
    cache = synth_cache.open_coarse_cache(PATH, SAMPLE.config)
    assert cache is not None, f"{PATH} stale/missing: run scripts/make_synthetic_sample_cache.py"
    coarse = SAMPLE.downsamples[-2:]
    assert sorted(cache) == sorted((k, d) for k in ("image", "labels") for d in coarse)
    assert PATH.stat().st_size < 6_000_000


@pytest.mark.parametrize("kind", ["image", "labels"])
@pytest.mark.parametrize("level", [-1, -2])
def test_a_crop_of_the_cache_equals_the_generator(kind, level):
    """Byte for byte, on a window crossing tissue, glass and a chunk border."""
    cache = synth_cache.open_coarse_cache(PATH, SAMPLE.config)
    assert cache is not None
    d = SAMPLE.downsamples[level]
    h, w = SAMPLE.config.level_shape(d)
    labels = np.asarray(cache[("labels", d)][:, :])
    # The 160 x 128 window straddling a 512-px chunk border with the most classes in it.
    boxes = [Box(x - 80, y, 160, 128) for x in range(512, w, 512) for y in range(0, h - 128, 64)]
    box = max(boxes, key=lambda b: len(np.unique(labels[b.y : b.y + b.h, b.x : b.x + b.w])))
    render = getattr(SAMPLE.renderer, kind)(d, box)
    cached = cache[(kind, d)][box.y : box.y + box.h, box.x : box.x + box.w]
    assert cached.dtype == render.dtype == np.uint8
    assert len(np.unique(render)) > 2  # not a blank crop
    np.testing.assert_array_equal(cached, render)


def test_the_sample_reads_its_coarse_levels_without_rendering(monkeypatch):
    def refuse(self, downsample, box):
        if downsample >= SAMPLE.downsamples[-2]:
            raise AssertionError(f"rendered a coarse level (downsample {downsample})")
        return original[self.__class__, "image"](self, downsample, box)

    original = {(cls, "image"): cls.image for cls in (Renderer, RendererV2)}
    for cls in (Renderer, RendererV2):
        monkeypatch.setattr(cls, "image", refuse)
        monkeypatch.setattr(cls, "labels", refuse)
    (image, _ki, _k), (labels, _kl, _l) = synthetic_sample()
    for levels in (image, labels):
        for array in levels[-2:]:
            assert np.asarray(array[:64, :64]).dtype == np.uint8
    with pytest.raises(AssertionError, match="rendered a coarse level"):
        np.asarray(SAMPLE.image.levels[-1][:8, :8])  # the uncached slide does render


def test_a_stale_cache_is_ignored(tmp_path, monkeypatch):
    config = SynthConfig(width=1024, seed=5, min_level_size=256, chunk_size=128)
    slide = generate_slide(config)
    path = synth_cache.write_coarse_cache(slide, tmp_path / "c.tif")
    fresh = synth_cache.with_coarse_cache(slide, path)
    for pyramid, original in ((fresh.image, slide.image), (fresh.labels, slide.labels)):
        assert pyramid.levels[-1].name.startswith("synthetic-cache-")
        assert not pyramid.levels[0].name.startswith("synthetic-cache-")
        np.testing.assert_array_equal(np.asarray(pyramid.levels[-1]),
                                      np.asarray(original.levels[-1]))
    assert synth_cache.open_coarse_cache(path, config.replace(seed=6)) is None
    assert synth_cache.open_coarse_cache(tmp_path / "missing.tif", config) is None
    monkeypatch.setattr(synth_cache, "generator_digest", lambda: "0" * 64)
    assert synth_cache.open_coarse_cache(path, config) is None
    assert synth_cache.with_coarse_cache(slide, path) is slide
