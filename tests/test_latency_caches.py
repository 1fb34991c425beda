"""What the first tile of a viewport run no longer waits for, and that results do not change.

The caches and shortcuts on the path from "Run on view" to the first tile (docs/benchmarks.md,
"App latency"): memoized lazy coarse levels of small single-level slides, the slide's
fingerprint and tissue mask computed once per slide (and ahead, by ``prime_slide``), the
resume check limited to the run's own tiles, and the first batch read alone.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import pytest
import tifffile

from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import PixelRulePredictor, differing_arrays, pattern_slide


# --------------------------------------------------------------------- memoized lazy levels
def _single_level_tiff(path, seed: int):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (1100, 1030, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb")
    return img


def _reference_halvings(img: np.ndarray, n: int) -> np.ndarray:
    """2x2 means written here (edge rows/columns replicated), rounded half to even."""
    out = img
    for _ in range(n):
        h, w = out.shape[:2]
        out = np.pad(out, [(0, h % 2), (0, w % 2), (0, 0)], mode="edge").astype(np.float64)
        out = out.reshape(out.shape[0] // 2, 2, out.shape[1] // 2, 2, 3).mean(axis=(1, 3))
        out = np.rint(out).astype(np.uint8)
    return out


def test_lazy_levels_are_computed_once_with_the_same_pixels(tmp_path, monkeypatch):
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.readers import cache

    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))
    calls = []
    real = cache.downsample2

    def counting(block):
        calls.append(block.shape)
        return real(block)

    monkeypatch.setattr(cache, "downsample2", counting)
    img = _single_level_tiff(tmp_path / "a.tif", 0)
    pyr = open_pyramid(tmp_path / "a.tif")
    assert pyr.metadata.get("virtual_levels", 0) >= 1
    level = pyr.n_levels - 1
    want = _reference_halvings(img, level)
    np.testing.assert_array_equal(pyr.levels[level].compute(), want)
    n = len(calls)
    assert n > 0
    box = Box(10, 20, 100, 60)
    for _ in range(3):  # windows, whole levels, finer levels: no reduction runs again
        np.testing.assert_array_equal(pyr.read(box, level), want[box.slices()])
        pyr.levels[level].compute()
        pyr.levels[1].compute()
    assert len(calls) == n

    # The memo belongs to the opened slide: a changed file, opened again, gives its pixels.
    img2 = _single_level_tiff(tmp_path / "a.tif", 1)
    again = open_pyramid(tmp_path / "a.tif")
    assert again.levels[level].name != pyr.levels[level].name  # the file stamp changed
    np.testing.assert_array_equal(again.levels[level].compute(), _reference_halvings(img2, level))
    assert len(calls) > n


# --------------------------------------------------------------------- single-flight caches
@pytest.fixture
def fresh_caches(monkeypatch):
    from napari_sgnet.inference import tissue
    from napari_sgnet.io.labelstore import meta

    monkeypatch.setattr(tissue, "_CACHE", OrderedDict())
    monkeypatch.setattr(meta, "_DIGESTS", OrderedDict())
    return tissue, meta


def test_tissue_mask_is_computed_once_for_concurrent_callers(fresh_caches, monkeypatch):
    tissue, _ = fresh_caches
    calls = []
    real = tissue._compute

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.2)  # keep the others waiting while this one computes
        return real(*args, **kwargs)

    monkeypatch.setattr(tissue, "_compute", slow)
    slide = pattern_slide(600, 400, seed=3, glass_border=40)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(tissue.tissue_mask(slide)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 3 and all(r is results[0] for r in results)
    assert not tissue._COMPUTING
    # another slide (other pixels: another dask token) gets its own mask
    other = tissue.tissue_mask(pattern_slide(600, 400, seed=4, glass_border=80))
    assert len(calls) == 2 and other is not results[0]
    assert other.fraction < results[0].fraction


def test_prime_slide_computes_what_the_first_run_reads(fresh_caches, monkeypatch, tmp_path):
    from napari_sgnet.app.runs import prime_slide
    from napari_sgnet.inference.engine import predict_slide

    tissue, meta = fresh_caches
    slide = pattern_slide(700, 500, seed=5, glass_border=48)
    assert prime_slide(slide)
    assert prime_slide("not a pyramid") is False

    def fail(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(tissue, "_compute", fail)
    monkeypatch.setattr(meta, "_thumbnail_digest", fail)
    view = Box(100, 80, 400, 300)
    predict_slide(slide, tmp_path / "primed.zarr", PixelRulePredictor(64), region=view,
                  batch_size=2, commit_interval=0)  # fmt: skip
    monkeypatch.undo()  # the real functions and empty caches again: the same run, unprimed
    monkeypatch.setattr(tissue, "_CACHE", OrderedDict())
    monkeypatch.setattr(meta, "_DIGESTS", OrderedDict())
    predict_slide(slide, tmp_path / "plain.zarr", PixelRulePredictor(64), region=view,
                  batch_size=2, commit_interval=0)  # fmt: skip
    assert differing_arrays(tmp_path / "primed.zarr", tmp_path / "plain.zarr") == []


def test_prime_slide_of_an_unreadable_slide_is_quiet(fresh_caches):
    import dask.array as da

    from napari_sgnet.app.runs import prime_slide
    from napari_sgnet.io.pyramid import Pyramid

    def broken(block):
        raise OSError("the file went away")

    level = da.zeros((256, 256, 3), dtype=np.uint8, chunks=(128, 128, 3)).map_blocks(
        broken, dtype=np.uint8
    )
    assert prime_slide(Pyramid((level,), (1.0,), mpp=0.5, name="gone")) is False


# --------------------------------------------------------------------- resume check of a view
def test_resume_check_covers_the_runs_own_tiles(tmp_path):
    from napari_sgnet.errors import StoreError
    from napari_sgnet.inference.engine import predict_slide
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.labelstore.verify import verify_store

    slide = pattern_slide(1024, 512, seed=9)
    path = tmp_path / "s.zarr"
    kw = dict(batch_size=2, skip_glass=False, commit_interval=0)
    predict_slide(slide, path, PixelRulePredictor(64), **kw)
    store = LabelStore.open(path)
    chunks = sorted(p for p in (path / "0" / "c").rglob("*") if p.is_file())
    chunks[0].write_bytes(b"\x28\xb5\x2f\xfd not zstd" * 4)  # the top-left chunk
    full = verify_store(store, done_only=True)
    bad = full.damaged_tiles
    assert not full.ok and bad
    grid = np.zeros(store.grid_shape, dtype=bool)
    away = grid.copy()
    away[:, -1] = True  # the right-most column of tiles: none under the damaged chunk
    assert not any(away[t] for t in bad)
    assert verify_store(store, done_only=True, tiles=away).ok
    near = grid.copy()
    near[next(iter(bad))] = True
    assert verify_store(store, done_only=True, tiles=near).damaged_tiles == full.damaged_tiles

    # a resumed viewport run checks its own view: away from the damage it runs ...
    tile = store.tile
    right = Box(1024 - tile, 0, tile, 512)
    last = predict_slide(slide, path, PixelRulePredictor(64), region=right, resume=True, **kw)
    assert last.stage == "completed" and last.tiles_cached > 0
    # ... over it, it refuses and names the repair
    with pytest.raises(StoreError, match="check"):
        predict_slide(slide, path, PixelRulePredictor(64), region=Box(0, 0, 64, 64),
                      resume=True, **kw)  # fmt: skip


# --------------------------------------------------------------------- first batch alone
def test_head_start_reads_the_first_job_alone_and_keeps_the_order():
    from napari_sgnet.inference.prefetch import Prefetcher

    started = []

    def fn(job):
        started.append(job)
        return job * 10

    with Prefetcher(range(6), fn, depth=2, workers=2, head_start=True) as feeder:
        it = iter(feeder)
        assert next(it) == 0
        time.sleep(0.3)  # a reader ahead would have started job 1 by now
        assert started == [0]
        assert list(it) == [10, 20, 30, 40, 50]
    with Prefetcher(range(6), fn, depth=2, workers=2) as feeder:
        assert list(feeder) == [0, 10, 20, 30, 40, 50]


def test_viewport_run_with_head_start_matches_a_whole_slide_run(tmp_path):
    from napari_sgnet.inference.engine import predict_slide
    from napari_sgnet.inference.testing import store_arrays
    from napari_sgnet.io.labelstore import LabelStore

    slide = pattern_slide(700, 500, seed=11)
    kw = dict(batch_size=2, skip_glass=False, commit_interval=0)
    predict_slide(slide, tmp_path / "whole.zarr", PixelRulePredictor(64), **kw)
    view = Box(120, 90, 380, 260)
    predict_slide(slide, tmp_path / "view.zarr", PixelRulePredictor(64), region=view,
                  order="center", **kw)  # fmt: skip
    whole, part = store_arrays(tmp_path / "whole.zarr"), store_arrays(tmp_path / "view.zarr")
    done = part["done"] > 0
    assert done.any()
    tile = LabelStore.open(tmp_path / "view.zarr").tile
    for ty, tx in zip(*np.nonzero(done), strict=True):
        sl = (slice(ty * tile, (ty + 1) * tile), slice(tx * tile, (tx + 1) * tile))
        np.testing.assert_array_equal(part["level0"][sl], whole["level0"][sl])
        np.testing.assert_array_equal(part["confidence"][sl], whole["confidence"][sl])
