"""Streaming OME-TIFF and OME-Zarr (NGFF 0.4 / 0.5) pyramid writers."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.writers import write_ome_tiff, write_ome_zarr
from napari_sgnet.palette import GLEASON


def _smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A JPEG-friendly RGB image (smooth gradients plus mild noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            128 + 100 * np.sin(x / 37.0),
            128 + 100 * np.cos(y / 53.0),
            128 + 60 * np.sin((x + y) / 71.0),
        ],
        axis=-1,
    )
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def _pyramid(base: np.ndarray, chunks: int = 128) -> Pyramid:
    levels, ds = [], []
    for k in range(3):
        step = 2**k
        levels.append(da.from_array(np.ascontiguousarray(base[::step, ::step]), chunks=chunks))
        ds.append(float(step))
    return Pyramid(tuple(levels), tuple(ds), mpp=0.5, name="test")


@pytest.fixture
def rgb_pyramid() -> Pyramid:
    return _pyramid(_smooth_rgb(700, 900))


@pytest.fixture
def label_pyramid() -> Pyramid:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=(700, 900), dtype=np.uint8)
    return _pyramid(labels)


def test_tiff_round_trip_lossless_level_by_level(tmp_path, rgb_pyramid):
    path = tmp_path / "slide.ome.tif"
    seen = []
    out = write_ome_tiff(rgb_pyramid, path, compression="zlib", tile=256, progress=seen.append)
    assert out == path and path.is_file()
    assert sum(seen) == sum(a.shape[0] * a.shape[1] for a in rgb_pyramid.levels)
    assert not list(tmp_path.glob(".*partial"))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert len(series.levels) == 3
        for k, level in enumerate(series.levels):
            assert np.array_equal(level.asarray(), rgb_pyramid.levels[k].compute())
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 256
        assert len(page.subifds) == 2
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
        x_res = page.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.5)


def test_tiff_jpeg_is_close_and_grey_levels_work(tmp_path, rgb_pyramid):
    path = tmp_path / "slide.ome.tif"
    write_ome_tiff(rgb_pyramid, path, compression="jpeg", quality=90)
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert len(levels) == 3
        for k, level in enumerate(levels):
            err = np.abs(level.asarray().astype(int) - rgb_pyramid.levels[k].compute()).mean()
            assert err < 3.0, (k, err)
    grey = [
        np.arange(300 * 200, dtype=np.uint16).reshape(300, 200),
        np.zeros((150, 100), np.uint16),
    ]
    write_ome_tiff(grey, tmp_path / "grey.ome.tif", mpp=0.25, compression="zstd", tile=64)
    with tifffile.TiffFile(tmp_path / "grey.ome.tif") as tif:
        assert np.array_equal(tif.series[0].levels[0].asarray(), grey[0])
    with pytest.raises(ValueError, match="JPEG"):
        write_ome_tiff(grey, tmp_path / "bad.ome.tif")


def test_tiff_refuses_to_overwrite(tmp_path, rgb_pyramid):
    path = tmp_path / "slide.ome.tif"
    path.write_bytes(b"precious")
    with pytest.raises(StoreError, match="already exists") as err:
        write_ome_tiff(rgb_pyramid, path)
    assert err.value.path == path and path.read_bytes() == b"precious"
    write_ome_tiff(rgb_pyramid, path, overwrite=True)
    assert tifffile.TiffFile(path).is_ome
    folder = tmp_path / "folder.ome.tif"
    folder.mkdir()
    with pytest.raises(StoreError, match="directory"):
        write_ome_tiff(rgb_pyramid, folder, overwrite=True)


def test_failed_write_leaves_nothing(tmp_path, rgb_pyramid):
    def boom(n: int) -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        write_ome_tiff(rgb_pyramid, tmp_path / "x.ome.tif", progress=boom)
    with pytest.raises(RuntimeError):
        write_ome_zarr(rgb_pyramid, tmp_path / "x.ome.zarr", progress=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_image_and_labels_open_with_ome_zarr(tmp_path, rgb_pyramid, label_pyramid, version):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    root = tmp_path / "slide.ome.zarr"
    write_ome_zarr(rgb_pyramid, root, version=version, chunks=128)
    label_group = write_ome_zarr(
        label_pyramid,
        root,
        version=version,
        labels=True,
        name="gleason",
        palette=GLEASON,
        chunks=128,
    )
    assert label_group == root / "labels" / "gleason"
    write_ome_zarr(label_pyramid, root, version=version, labels=True, name="other", chunks=128)
    assert (root / ("zarr.json" if version == "0.5" else ".zgroup")).is_file()

    nodes = list(Reader(parse_url(str(root)))())
    image = nodes[0]
    assert len(image.data) == 3
    assert image.data[0].shape == (3, 700, 900)
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    for k, level in enumerate(image.data):
        assert np.array_equal(
            np.moveaxis(np.asarray(level), 0, -1), rgb_pyramid.levels[k].compute()
        )
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]

    label_nodes = list(Reader(parse_url(str(root / "labels")))())
    by_name = {n.metadata["name"]: n for n in label_nodes if "color" in n.metadata}
    assert set(by_name) == {"gleason", "other"}
    gleason = by_name["gleason"]
    assert len(gleason.data) == 3
    assert np.array_equal(np.asarray(gleason.data[0]), label_pyramid.levels[0].compute())
    for k, cls in enumerate(GLEASON.classes, start=1):
        assert gleason.metadata["color"][k] == pytest.approx([c / 255 for c in cls.color] + [1.0])
        assert gleason.metadata["properties"][k]["class"] == cls.name
    assert gleason.metadata["color"][0][3] == 0
    assert gleason.metadata["properties"][0]["class"] == "no label"
    group = zarr.open_group(str(root / "labels"), mode="r")
    listing = group.attrs["ome"]["labels"] if version == "0.5" else group.attrs["labels"]
    assert listing == ["gleason", "other"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_metadata_validates(tmp_path, rgb_pyramid, label_pyramid, version):
    models = pytest.importorskip("ome_zarr_models")
    root = tmp_path / "slide.ome.zarr"
    write_ome_zarr(rgb_pyramid, root, version=version, chunks=128)
    write_ome_zarr(label_pyramid, root, version=version, labels=True, name="g", palette=GLEASON)
    image = models.open_ome_zarr(zarr.open_group(str(root), mode="r"))
    assert type(image).__name__ == "Image"
    label = models.open_ome_zarr(zarr.open_group(str(root / "labels" / "g"), mode="r"))
    assert type(label).__name__ == "ImageLabel"


def test_standalone_labels_store_and_overwrite_rules(tmp_path, label_pyramid, rgb_pyramid):
    root = tmp_path / "slide.labels.ome.zarr"
    write_ome_zarr(label_pyramid, root, labels=True, name="gleason", palette=GLEASON)
    with pytest.raises(StoreError, match="already exists") as err:
        write_ome_zarr(label_pyramid, root, labels=True, name="gleason")
    assert err.value.path == root / "labels" / "gleason"
    write_ome_zarr(label_pyramid, root, labels=True, name="gleason", overwrite=True)
    with pytest.raises(StoreError, match="zarr v3"):
        write_ome_zarr(label_pyramid, root, labels=True, name="v4", version="0.4")
    image = tmp_path / "image.ome.zarr"
    write_ome_zarr(rgb_pyramid, image)
    with pytest.raises(StoreError, match="already exists"):
        write_ome_zarr(rgb_pyramid, image)
    write_ome_zarr(rgb_pyramid, image, overwrite=True)
    not_zarr = tmp_path / "notes"
    not_zarr.mkdir()
    (not_zarr / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="not a zarr"):
        write_ome_zarr(rgb_pyramid, not_zarr, overwrite=True)
    with pytest.raises(StoreError, match="not a zarr"):
        write_ome_zarr(label_pyramid, not_zarr, labels=True)
    assert (not_zarr / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError, match="2-D integer"):
        write_ome_zarr(rgb_pyramid, tmp_path / "bad.zarr", labels=True)


def test_writers_stream_lazy_synthetic_slide(tmp_path):
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    slide = generate_slide(
        SynthConfig(width=1300, height=900, seed=2, chunk_size=256, min_level_size=400)
    )
    write_ome_tiff(slide.image, tmp_path / "s.ome.tif", tile=256, compression="zlib")
    label_group = write_ome_zarr(
        slide.labels, tmp_path / "s.labels.ome.zarr", labels=True, palette=slide.palette, chunks=256
    )
    with tifffile.TiffFile(tmp_path / "s.ome.tif") as tif:
        for k, level in enumerate(tif.series[0].levels):
            assert np.array_equal(level.asarray(), slide.image.levels[k].compute())
    stored = zarr.open_group(str(label_group), mode="r")
    for k, level in enumerate(slide.labels.levels):
        assert np.array_equal(stored[str(k)][...], level.compute())
