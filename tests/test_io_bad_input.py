"""Bad input gives a typed error naming the file and the problem, never a hang or a raw
codec traceback; odd-but-valid input (16-bit) is supported."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

import napari_sgnet.cli.main as cli_main
from napari_sgnet.geometry import Box
from napari_sgnet.io import (
    CorruptSlideError,
    SlideError,
    StoreError,
    UnsupportedSlideError,
    open_pyramid,
)

SVS = Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-Small-Region.svs"


def _tiled(path: Path, shape: tuple[int, ...] = (600, 700, 3), **kwargs: object) -> np.ndarray:
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    kwargs.setdefault("photometric", "rgb" if len(shape) == 3 and shape[-1] == 3 else None)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", **kwargs)
    return img


def _expect(exc_type: type[SlideError], path: Path, *words: str, **kwargs: object) -> SlideError:
    with pytest.raises(exc_type) as info:
        open_pyramid(path, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert type(err) is exc_type
    assert str(path.name) in str(err) and err.path == path
    for word in words:
        assert word.lower() in str(err).lower(), str(err)
    return err


@pytest.mark.parametrize("name", ["empty.tif", "empty.svs", "empty.png"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    _expect(CorruptSlideError, path, "empty")


@pytest.mark.parametrize("name", ["noise.tif", "noise.svs", "noise.ndpi", "noise.png"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x13\x37" + np.random.default_rng(1).bytes(10_000))
    _expect(CorruptSlideError, path, "not a valid")


def test_random_bytes_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "noise.xyz"
    path.write_bytes(np.random.default_rng(2).bytes(1000))
    _expect(UnsupportedSlideError, path, "not a supported")


def test_nonexistent_path(tmp_path: Path) -> None:
    _expect(SlideError, tmp_path / "missing.svs", "no such file")


def test_truncated_tiff_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    _tiled(path)
    data = path.read_bytes()
    path.write_bytes(data[:12])  # the IFD is gone
    _expect(CorruptSlideError, path, "TIFF")


def test_truncated_tiff_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    _tiled(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # The IFD is intact, but the tile table points past the end: refused from metadata,
    # saying how many tiles are missing, instead of opening with wrong pixels.
    with pytest.raises(CorruptSlideError, match="cut.tif") as info:
        open_pyramid(path)
    assert "truncated" in str(info.value) and "level 0" in str(info.value)


def test_corrupt_tile(tmp_path: Path) -> None:
    path = tmp_path / "bad-tile.tif"
    img = _tiled(path)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[3], page.databytecounts[3]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * min(count, 64))
    pyr = open_pyramid(path)
    np.testing.assert_array_equal(pyr.read(Box(0, 0, 256, 256)), img[:256, :256])  # good tile
    with pytest.raises(CorruptSlideError, match="bad-tile.tif") as info:
        pyr.levels[0].compute()
    assert "damaged" in str(info.value)
    assert info.value.__cause__ is not None  # the codec error stays chained for debugging


def test_unsupported_compression(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    _tiled(path)
    with tifffile.TiffFile(path, mode="r+b") as tf:
        tf.pages[0].tags["Compression"].overwrite(12345)
    _expect(UnsupportedSlideError, path, "compression", "12345")


def test_folder_not_zarr(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    _expect(UnsupportedSlideError, folder, "not a zarr store")


def test_zarr_without_multiscales_and_bare_array(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    group.create_array("0", shape=(10, 10), dtype="uint8")
    _expect(UnsupportedSlideError, tmp_path / "plain.zarr", "multiscales")
    _expect(UnsupportedSlideError, tmp_path / "plain.zarr" / "0", "single zarr array")


def _ngff(root: Path, data: np.ndarray, axes: str) -> None:
    group = zarr.open_group(root, mode="w", zarr_format=3)
    group.create_array("0", data=data, chunks=(*data.shape[:-2], 64, 64))
    ax = [{"name": a, "type": "space" if a in "yx" else "other"} for a in axes]
    datasets = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]}
    ]
    group.attrs.put(
        {"ome": {"version": "0.5", "multiscales": [{"axes": ax, "datasets": datasets}]}}
    )


def test_ngff_missing_dataset_and_corrupt_chunk(tmp_path: Path) -> None:
    root = tmp_path / "img.zarr"
    _ngff(root, np.ones((3, 128, 128), np.uint8), "cyx")
    shutil.rmtree(root / "0")
    _expect(CorruptSlideError, root, "missing")

    _ngff(root, np.ones((3, 128, 128), np.uint8), "cyx")
    chunk = next(p for p in (root / "0" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"garbage")
    pyr = open_pyramid(root)
    with pytest.raises(CorruptSlideError, match="img.zarr"):
        pyr.levels[0].compute()


@pytest.mark.parametrize("channels", [2, 5, 8])
def test_multichannel_is_refused(tmp_path: Path, channels: int) -> None:
    data = np.zeros((channels, 64, 64), np.uint8)
    tif = tmp_path / f"c{channels}.ome.tif"
    tifffile.imwrite(tif, data, tile=(64, 64), metadata={"axes": "CYX"}, ome=True)
    _expect(UnsupportedSlideError, tif, f"{channels} channels")
    root = tmp_path / f"c{channels}.zarr"
    _ngff(root, data, "cyx")
    _expect(UnsupportedSlideError, root, f"{channels} channels")


def test_z_stack_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "z.zarr"
    _ngff(root, np.zeros((1, 4, 64, 64), np.uint8), "czyx")
    _expect(UnsupportedSlideError, root, "4 planes", "'Z'")


def test_16bit_images_keep_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 65535, (300, 400), dtype=np.uint16)
    tif = tmp_path / "g16.tif"
    tifffile.imwrite(tif, grey, tile=(128, 128))
    pyr = open_pyramid(tif)
    assert pyr.dtype == np.uint16 and pyr.shape == (300, 400)
    np.testing.assert_array_equal(pyr.levels[0].compute(), grey)
    rgb16 = rng.integers(0, 65535, (520, 530, 3), dtype=np.uint16)
    png = tmp_path / "rgb16.png"
    png.write_bytes(imagecodecs.png_encode(rgb16))
    pyr = open_pyramid(png, cache_dir=tmp_path / "cache")
    assert pyr.dtype == np.uint16 and pyr.n_levels == 2 and pyr.levels[1].dtype == np.uint16
    np.testing.assert_array_equal(pyr.levels[0].compute(), rgb16)


def test_corrupt_png_leaves_no_cache_behind(tmp_path: Path) -> None:
    png = tmp_path / "broken.png"
    data = imagecodecs.png_encode(np.zeros((600, 600, 3), np.uint8))
    png.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    _expect(CorruptSlideError, png, "PNG", cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_png_header_only(tmp_path: Path) -> None:
    png = tmp_path / "stub.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    _expect(CorruptSlideError, png, "PNG", cache_dir=tmp_path / "cache")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svs"
    os.mkfifo(fifo)
    _expect(UnsupportedSlideError, fifo, "not a regular file")


def test_openslide_format_without_openslide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slide.mrxs"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a mirax")
    monkeypatch.setitem(sys.modules, "openslide", None)  # import fails as if not installed
    _expect(UnsupportedSlideError, path, "pip install 'napari-sgnet[slides]'")


def test_openslide_reader_matches_tifffile() -> None:
    pytest.importorskip("openslide")
    from napari_sgnet.io.readers.openslide_reader import open_openslide

    pyr = open_openslide(SVS)
    assert (pyr.width, pyr.height) == (2220, 2967) and pyr.mpp == pytest.approx(0.499)
    box = Box(512, 640, 300, 200)
    np.testing.assert_array_equal(pyr.read(box), tifffile.imread(SVS)[box.slices()])


def test_uncreatable_cache_dir(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(imagecodecs.png_encode(np.zeros((10, 10), np.uint8)))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should go")
    with pytest.raises(StoreError, match="cannot create the pyramid cache folder"):
        open_pyramid(png, cache_dir=blocker / "cache")
    assert blocker.read_text().startswith("a file")  # nothing the user made is touched


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ("info",))
    return cli_main.main


def test_cli_info(cli, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli(["info", str(SVS)]) == 0
    out = capsys.readouterr().out
    assert "2220 x 2967" in out and "0.499" in out and "uint8" in out and "chunks" in out
    assert cli(["info", str(SVS), "--mpp", "0.3"]) == 0
    assert "µm/px: 0.3" in capsys.readouterr().out


def test_cli_info_bad_input(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "noise.svs"
    bad.write_bytes(b"nonsense" * 10)
    assert cli(["info", str(bad)]) == cli_main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "noise.svs" in err and "not a valid TIFF" in err and "Traceback" not in err
    assert cli(["info", str(tmp_path / "missing.svs")]) == cli_main.EXIT_BAD_INPUT
