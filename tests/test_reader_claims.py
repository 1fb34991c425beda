"""The npe2 reader claims only what napari-sgnet opens, deciding from metadata alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_sgnet._napari.reader import get_reader
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers import can_open, open_pyramid, probe
from napari_sgnet.io.writers import write_ome_zarr
from napari_sgnet.palette import GLEASON

SAMPLE = Path(__file__).parents[1] / "napari_sgnet" / "sample_data" / "CMU-1-Small-Region.svs"


def _rgb(h: int = 64, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _unclaimed(path: Path) -> None:
    assert get_reader(str(path)) is None
    assert not can_open(path)


# ------------------------------------------------------------------ left to other readers
def test_fluorescence_tiff_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "fluo.tif"
    data = np.zeros((5, 32, 40), dtype=np.uint16)
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "CYX"})
    _unclaimed(path)
    assert "5" in (probe(path).problem or "")


def test_z_stack_ome_tiff_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "stack.ome.tif"
    data = np.zeros((4, 32, 40), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "ZYX"})
    _unclaimed(path)
    assert "'Z'" in (probe(path).problem or "")


def test_plain_zarr_array_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "plain.zarr"
    zarr.create_array(store=str(path), shape=(32, 40), dtype="uint8")
    _unclaimed(path)


def test_zarr_group_without_ngff_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "group.zarr"
    zarr.open_group(str(path), mode="w").create_array("0", shape=(8, 8), dtype="uint8")
    _unclaimed(path)


def test_truncated_tiff_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _rgb(256, 256), photometric="rgb", tile=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _unclaimed(path)


def test_random_bytes_named_tif_are_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    _unclaimed(path)


def test_folder_that_is_not_zarr_and_odd_inputs_are_not_claimed(tmp_path: Path) -> None:
    folder = tmp_path / "notzarr.zarr"
    folder.mkdir()
    _unclaimed(folder)
    assert get_reader([]) is None
    assert get_reader(str(tmp_path / "missing.svs")) is None
    good = tmp_path / "rgb.tif"
    tifffile.imwrite(good, _rgb(), photometric="rgb")
    assert get_reader([str(good), str(folder)]) is None  # one unreadable path: not claimed


# ------------------------------------------------------------------ claimed and opened
def test_rgb_tiff_is_claimed_and_read(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    img = _rgb()
    tifffile.imwrite(path, img, photometric="rgb")
    reader = get_reader(str(path))
    assert reader is not None
    data, _, layer_type = reader(str(path))[0]
    assert layer_type == "image"
    level0 = data[0] if isinstance(data, list) else data
    np.testing.assert_array_equal(np.asarray(level0), img)


def test_bundled_svs_is_claimed() -> None:
    assert get_reader(str(SAMPLE)) is not None
    assert probe(SAMPLE).kind == "tiff"


def test_label_store_is_claimed(tmp_path: Path) -> None:
    level0 = _rgb(128, 160)
    slide = Pyramid(levels=(level0,), downsamples=(1.0,), mpp=0.5, name="tiny")
    path = tmp_path / "slide.sgnet.zarr"
    store = LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=1, tile=64)
    store.write_tile(
        Box(0, 0, 160, 128), np.ones((128, 160), np.uint8), np.full((128, 160), 200, np.uint8)
    )
    assert probe(path).kind == "labelstore"
    assert get_reader(str(path)) is not None


def test_ome_zarr_image_is_claimed_and_read(tmp_path: Path) -> None:
    img = _rgb(64, 64)
    path = write_ome_zarr([img, img[::2, ::2]], tmp_path / "img.ome.zarr", mpp=0.5)
    assert probe(path).kind == "omezarr"
    reader = get_reader(str(path))
    assert reader is not None
    data, _, layer_type = reader(str(path))[0]
    assert layer_type == "image"
    np.testing.assert_array_equal(np.asarray(data[0]), img)


def test_ome_zarr_label_image_is_claimed(tmp_path: Path) -> None:
    lab = np.zeros((64, 64), np.uint8)
    lab[8:20, 8:30] = 2
    path = write_ome_zarr([lab], tmp_path / "lab.ome.zarr", mpp=0.5, labels=True, palette=GLEASON)
    assert probe(path).kind == "label-image"
    assert get_reader(str(path)) is not None


# ------------------------------------------------------------------ one set of rules
def test_open_pyramid_refuses_with_the_probe_message(tmp_path: Path) -> None:
    path = tmp_path / "fluo.tif"
    tifffile.imwrite(path, np.zeros((5, 16, 16), np.uint16), metadata={"axes": "CYX"})
    verdict = probe(path)
    assert verdict.error is not None
    with pytest.raises(type(verdict.error)) as info:
        open_pyramid(path)
    assert str(info.value) == str(verdict.error)
    assert "fluo.tif" in str(info.value)
