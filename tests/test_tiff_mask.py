"""The TIFF label mask at the slide's level-0 resolution (issue 12, part 4).

Read back with tifffile, tiffslide and OpenSlide (levels, sizes, µm/px, pixel values)
and by the project's own label reader (``--labels`` of ``train``/``evaluate``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_sgnet.errors import OptionError
from napari_sgnet.geometry import Box
from napari_sgnet.io.exporters import LabelSource, export_tiff, read_tiff_record
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import GLEASON

BASE, MPP = 4, 0.5
H, W = 150, 230  # store level 0 (working level); the slide is 600 x 920, less a ragged edge
SLIDE_H, SLIDE_W = 598, 917


@pytest.fixture(scope="module")
def slide() -> Pyramid:
    rng = np.random.default_rng(2)
    level0 = rng.integers(0, 256, (SLIDE_H, SLIDE_W, 3), dtype=np.uint8)
    return Pyramid((da.from_array(level0, chunks=(256, 256, 3)),), (1.0,), mpp=MPP, name="slide")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, slide: Pyramid) -> LabelStore:
    path = tmp_path_factory.mktemp("t") / "slide.sgnet.zarr"
    s = LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=BASE, tile=32)
    h, w = s.height, s.width
    labels = np.random.default_rng(5).integers(0, 6, (h // 10 + 1, w // 10 + 1), np.uint8)
    labels = np.repeat(np.repeat(labels, 10, axis=0), 10, axis=1)[:h, :w]
    s.write_tile(Box(0, 0, w, h), labels, np.full_like(labels, 200))
    s.update_pyramid(Box(0, 0, w, h))
    return s


def _level0(store: LabelStore) -> np.ndarray:
    return store.read_labels(Box(0, 0, store.width, store.height), 0)


def _expected_slide_mask(store: LabelStore) -> np.ndarray:
    """Each working-level label repeated over the BASE x BASE slide pixels it covers."""
    up = np.repeat(np.repeat(_level0(store), BASE, axis=0), BASE, axis=1)
    return up[:SLIDE_H, :SLIDE_W]


def test_slide_resolution_mask_reads_back_everywhere(store: LabelStore, tmp_path: Path) -> None:
    out = export_tiff(store, tmp_path / "mask.ome.tif", tile=128)
    expected = _expected_slide_mask(store)
    n_levels = 1 + math.ceil(math.log2(max(SLIDE_H, SLIDE_W) / 128))
    sizes = [(math.ceil(SLIDE_W / 2**k), math.ceil(SLIDE_H / 2**k)) for k in range(n_levels)]

    # tifffile: one OME image, grey uint8 ids, tiled, levels as SubIFDs, µm pixel size.
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and len(tf.series) == 1
        series = tf.series[0]
        assert [lvl.shape[::-1] for lvl in series.levels] == sizes
        np.testing.assert_array_equal(series.levels[0].asarray(), expected)
        half = expected[1::2, 1::2]  # level-1 pixel i is centred on slide pixel 2i + 1
        np.testing.assert_array_equal(
            series.levels[1].asarray()[: half.shape[0], : half.shape[1]], half
        )
        page = tf.pages[0]
        assert page.is_tiled and page.tilewidth == 128 and page.dtype == np.uint8
        assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.colormap is None
        assert f'PhysicalSizeX="{MPP}"' in tf.ome_metadata
        assert 'PhysicalSizeXUnit="µm"' in tf.ome_metadata
    record = read_tiff_record(out)
    assert record["palette"] == GLEASON.to_dict() and record["tiff_level"] == "slide"
    assert record["base_downsample"] == 1.0
    assert record["provenance"]["resampled_from"]["base_downsample"] == BASE
    json.dumps(record)

    # tiffslide and OpenSlide: the same levels, sizes and µm/px; OpenSlide shows grey ids.
    import openslide
    import tiffslide

    ts = tiffslide.TiffSlide(out)
    assert list(ts.level_dimensions) == sizes
    assert float(ts.properties["tiffslide.mpp-x"]) == pytest.approx(MPP)
    region = np.asarray(ts.read_region((0, 0), 0, (SLIDE_W, SLIDE_H), as_array=True))
    np.testing.assert_array_equal(region.reshape(SLIDE_H, SLIDE_W), expected)
    ts.close()
    osl = openslide.OpenSlide(out)
    assert list(osl.level_dimensions) == sizes
    assert float(osl.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP)
    rgba = np.asarray(osl.read_region((0, 0), 0, (SLIDE_W, SLIDE_H)))
    assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 0] == rgba[..., 2]).all()
    np.testing.assert_array_equal(rgba[..., 0], expected)
    w2, h2 = sizes[2]
    coarse = np.asarray(osl.read_region((0, 0), 2, (w2, h2)))[..., 0]
    with tifffile.TiffFile(out) as tf:
        np.testing.assert_array_equal(coarse, tf.series[0].levels[2].asarray())
    osl.close()


def test_the_project_reads_the_mask_as_labels(
    store: LabelStore, slide: Pyramid, tmp_path: Path
) -> None:
    """The mask opens as a label pyramid and serves as ``--labels`` ground truth."""
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.writers import write_ome_tiff
    from napari_sgnet.training.dataset import working_views
    from napari_sgnet.training.sources import file_source

    out = export_tiff(store, tmp_path / "gt.ome.tif", tile=128)
    mask = open_pyramid(out)
    assert (mask.width, mask.height) == (SLIDE_W, SLIDE_H) and mask.mpp == pytest.approx(MPP)
    assert mask.levels[0].ndim == 2 and mask.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.levels[0]), _expected_slide_mask(store))

    slide_file = write_ome_tiff(slide, tmp_path / "slide.ome.tif", tile=128, compression="zlib")
    src = file_source(slide_file, out)  # what `train --slide S --labels M` builds
    img, lab = working_views(src.image, src.labels, MPP * BASE)
    assert lab.size == img.size
    got = lab.read(Box(0, 0, *lab.size))
    np.testing.assert_array_equal(got[: H - 1, : W - 1], _level0(store)[: H - 1, : W - 1])


def test_working_resolution_mask_is_kept_as_an_option(store: LabelStore, tmp_path: Path) -> None:
    out = export_tiff(store, tmp_path / "w.ome.tif", tile=64, tiff_level="working")
    with tifffile.TiffFile(out) as tf:
        assert tf.series[0].levels[0].shape == (store.height, store.width)
        np.testing.assert_array_equal(tf.series[0].levels[0].asarray(), _level0(store))
        assert f'PhysicalSizeX="{MPP * BASE}"' in tf.ome_metadata
    with pytest.raises(OptionError, match="tiff_level"):
        export_tiff(store, tmp_path / "x.tif", tiff_level="full")  # type: ignore[arg-type]
    assert not (tmp_path / "x.tif").exists()


def test_slide_grid_is_read_window_by_window() -> None:
    """The slide-resolution level is never materialised: reads touch only their window."""
    reads: list[tuple[int, int]] = []

    class Spy:
        shape, dtype, ndim = (50_000, 50_000), np.dtype(np.uint8), 2

        def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
            ys, xs = key
            reads.append((ys.stop - ys.start, xs.stop - xs.start))
            return np.ones((ys.stop - ys.start, xs.stop - xs.start), np.uint8)

    source = LabelSource((Spy(),), (1.0,), base_downsample=4.0, mpp=0.25)
    grid = source.on_slide_grid(min_side=512)
    assert grid.shape(0) == (200_000, 200_000)
    window = grid.read(Box(100_000, 100_000, 512, 512), 0)
    assert window.shape == (512, 512) and (window == 1).all()
    assert reads == [(128, 128)]
