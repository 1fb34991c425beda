"""Round trips and properties of the lazy slide readers (napari_sgnet.io.readers)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from tifffile.zarr import ZarrTiffStore

from napari_sgnet.geometry import Box
from napari_sgnet.io import Pyramid, open_pyramid
from napari_sgnet.io.readers import cache as cache_mod
from napari_sgnet.io.readers import detect_format
from napari_sgnet.io.working import working_level

SVS = Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-Small-Region.svs"
_META_KEYS = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


def _image(h: int, w: int, c: int | None = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    info = np.iinfo(dtype)
    return rng.integers(0, int(info.max) + 1, shape, dtype=dtype)


def _pyramid_of(image: np.ndarray, n: int) -> list[np.ndarray]:
    return [image[:: 2**k, :: 2**k] for k in range(n)]


def _assert_levels_equal(pyr: Pyramid, expected: list[np.ndarray]) -> None:
    assert pyr.n_levels == len(expected)
    for level, exp in zip(pyr.levels, expected, strict=True):
        assert level.shape == exp.shape
        np.testing.assert_array_equal(level.compute(), exp)


# ----------------------------------------------------------------------------- TIFF


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return _image(700, 1100)


def test_ome_tiff_subifds_round_trip(tmp_path: Path, rgb: np.ndarray) -> None:
    levels = _pyramid_of(rgb, 3)
    path = tmp_path / "sub.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(
            levels[0],
            subifds=2,
            tile=(256, 256),
            compression="zlib",
            photometric="rgb",
            metadata={"axes": "YXS", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm"},
        )
        for lvl in levels[1:]:
            tw.write(lvl, subfiletype=1, tile=(256, 256), compression="zlib", photometric="rgb")
    pyr = open_pyramid(path)
    _assert_levels_equal(pyr, levels)
    assert pyr.downsamples == (1.0, 2.0, 4.0)
    assert pyr.mpp == pytest.approx(0.25)
    assert pyr.metadata["format"] == "OME-TIFF"
    assert pyr.name == "sub"
    assert pyr.is_rgb and pyr.dtype == np.uint8
    # dask chunks are whole multiples of the 256 px tiles
    assert all(c % 256 == 0 for c in pyr.levels[0].chunks[0][:-1])


def test_multi_series_pyramid_with_cm_resolution(tmp_path: Path, rgb: np.ndarray) -> None:
    levels = _pyramid_of(rgb, 3)
    path = tmp_path / "multi.tif"
    with tifffile.TiffWriter(path) as tw:
        for lvl in levels:
            tw.write(
                lvl, tile=(128, 128), photometric="rgb", resolution=(20000, 20000),
                resolutionunit="CENTIMETER",
            )  # fmt: skip
    pyr = open_pyramid(path)
    _assert_levels_equal(pyr, levels)
    assert pyr.mpp == pytest.approx(0.5)
    assert pyr.metadata["mpp_source"].startswith("TIFF")


def test_tiled_tiff_inch_resolution_and_planar_ome(tmp_path: Path, rgb: np.ndarray) -> None:
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(
        path, rgb, tile=(128, 128), photometric="rgb", resolution=(25400 / 0.25, 25400 / 0.25),
        resolutionunit="INCH",
    )  # fmt: skip
    pyr = open_pyramid(path)
    assert pyr.mpp == pytest.approx(0.25) and pyr.n_levels > 1  # lazy halvings
    np.testing.assert_array_equal(
        pyr.read(Box(1000, 650, 200, 100)), _pad(rgb, 1000, 650, 200, 100)
    )
    # the usual 72 dpi default says nothing about the specimen: µm/px unknown
    dpi72 = tmp_path / "dpi72.tif"
    tifffile.imwrite(dpi72, rgb, tile=(128, 128), photometric="rgb", resolution=(72, 72))
    assert open_pyramid(dpi72).mpp is None
    # channels stored as separate planes (C, Y, X) come back channel-last
    planar = tmp_path / "planar.ome.tif"
    tifffile.imwrite(
        planar, np.moveaxis(rgb, -1, 0), tile=(128, 128), metadata={"axes": "CYX"}, ome=True
    )
    np.testing.assert_array_equal(open_pyramid(planar).levels[0].compute(), rgb)


def _pad(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.zeros((h, w, *img.shape[2:]), img.dtype)
    part = img[y : y + h, x : x + w]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def test_real_svs() -> None:
    pyr = open_pyramid(SVS)
    assert (pyr.width, pyr.height) == (2220, 2967)
    assert pyr.mpp == pytest.approx(0.499)
    assert pyr.metadata["format"] == "Aperio SVS"
    assert pyr.metadata["objective_power"] == 20.0
    full = tifffile.imread(SVS)
    box = Box(733, 1201, 1024, 1024)
    np.testing.assert_array_equal(pyr.read(box), full[box.slices()])
    edge = pyr.read(Box(2000, 2900, 300, 100), pad_value=255)
    np.testing.assert_array_equal(edge[:67, :220], full[2900:, 2000:])
    assert (edge[67:] == 255).all() and (edge[:, 220:] == 255).all()


def test_large_single_level_tiled_tiff_gets_cached_lower_levels(tmp_path: Path) -> None:
    img = np.zeros((4200, 1500), np.uint8)
    img[::7, ::5] = 200
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, img, tile=(512, 512), compression="zlib")
    pyr = open_pyramid(path, cache_dir=tmp_path / "cache")
    assert pyr.metadata["cache"] == "lower-levels"
    assert [lvl.shape for lvl in pyr.levels] == [(4200, 1500), (2100, 750), (1050, 375)]
    np.testing.assert_array_equal(pyr.levels[0][:100, :100].compute(), img[:100, :100])
    expected = img.reshape(2100, 2, 750, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(pyr.levels[1].compute(), np.rint(expected).astype(np.uint8))


# ----------------------------------------------------------------------------- OME-Zarr


def _write_ngff(root: Path, levels: list[np.ndarray], axes: list[dict], scale0: list[float],
                zarr_format: int) -> None:  # fmt: skip
    group = zarr.open_group(root, mode="w", zarr_format=zarr_format)
    datasets = []
    for k, lvl in enumerate(levels):
        group.create_array(str(k), data=lvl, chunks=(*lvl.shape[:-2], 128, 128))
        scale = [
            s * (2**k if a["type"] == "space" else 1) for s, a in zip(scale0, axes, strict=True)
        ]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = {"name": "img", "axes": axes, "datasets": datasets}
    if zarr_format == 2:
        group.attrs.put({"multiscales": [{"version": "0.4", **ms}]})
    else:
        group.attrs.put({"ome": {"version": "0.5", "multiscales": [ms]}})


def test_ngff_04_cyx_zarr_v2(tmp_path: Path, rgb: np.ndarray) -> None:
    levels = _pyramid_of(rgb, 3)
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    root = tmp_path / "img.zarr"
    _write_ngff(root, [np.moveaxis(lvl, -1, 0) for lvl in levels], axes, [1, 0.5, 0.5], 2)
    assert (root / ".zattrs").is_file()
    pyr = open_pyramid(root)
    _assert_levels_equal(pyr, levels)
    assert pyr.mpp == pytest.approx(0.5) and pyr.downsamples == (1.0, 2.0, 4.0)
    assert pyr.metadata["format"] == "OME-Zarr 0.4"


def test_ngff_05_tczyx_uint16_zarr_v3(tmp_path: Path) -> None:
    grey = _image(600, 900, None, np.uint16)
    levels = _pyramid_of(grey, 2)
    axes = [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    root = tmp_path / "img.ome.zarr"
    _write_ngff(root, [lvl[None, None, None] for lvl in levels], axes, [1, 1, 1, 240, 240], 3)
    assert json.loads((root / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    pyr = open_pyramid(root)
    _assert_levels_equal(pyr, levels)
    assert pyr.dtype == np.uint16 and not pyr.is_rgb
    assert pyr.mpp == pytest.approx(0.24)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_written_by_ome_zarr_py(tmp_path: Path, rgb: np.ndarray, version: str) -> None:
    ome_format = pytest.importorskip("ome_zarr.format")
    writer = pytest.importorskip("ome_zarr.writer")
    fmt = ome_format.FormatV04() if version == "0.4" else ome_format.FormatV05()
    levels = [np.moveaxis(lvl, -1, 0) for lvl in _pyramid_of(rgb, 3)]
    root = tmp_path / f"omezarrpy-{version}.zarr"
    group = zarr.open_group(root, mode="w", zarr_format=fmt.zarr_format)
    writer.write_multiscale(
        levels, group, fmt=fmt, axes="cyx", scale={"y": 0.25, "x": 0.25},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )  # fmt: skip
    pyr = open_pyramid(root)
    _assert_levels_equal(pyr, _pyramid_of(rgb, 3))
    assert pyr.mpp == pytest.approx(0.25)
    assert pyr.metadata["format"] == f"OME-Zarr {version}"


# ----------------------------------------------------------------------------- flat images


def test_flat_png_cache_built_once(tmp_path: Path) -> None:
    img = _image(1100, 1300)
    path = tmp_path / "flat.png"
    path.write_bytes(imagecodecs.png_encode(img))
    cache = tmp_path / "cache"
    calls: list[tuple[int, int]] = []
    pyr = open_pyramid(path, cache_dir=cache, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] > 0
    assert [lvl.shape[:2] for lvl in pyr.levels] == [(1100, 1300), (550, 650), (275, 325)]
    np.testing.assert_array_equal(pyr.levels[0].compute(), img)
    lvl1 = np.rint(img.reshape(550, 2, 650, 2, 3).mean(axis=(1, 3), dtype=np.float32))
    np.testing.assert_array_equal(pyr.levels[1].compute(), lvl1.astype(np.uint8))
    entry = Path(pyr.metadata["cache_path"])
    assert entry.parent == cache and pyr.metadata["cache_built"]
    stamp = entry.stat().st_mtime_ns, (entry / "zarr.json").stat().st_mtime_ns

    again: list[tuple[int, int]] = []
    pyr2 = open_pyramid(path, cache_dir=cache, progress=lambda d, t: again.append((d, t)))
    assert again == [] and not pyr2.metadata["cache_built"]
    assert Path(pyr2.metadata["cache_path"]) == entry
    assert (entry.stat().st_mtime_ns, (entry / "zarr.json").stat().st_mtime_ns) == stamp
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no partial leftovers
    np.testing.assert_array_equal(pyr2.levels[2].compute(), pyr.levels[2].compute())


def test_flat_cache_env_var_and_invalidation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "envcache"))
    path = tmp_path / "a.png"
    path.write_bytes(imagecodecs.png_encode(_image(300, 200, seed=1)))
    first = open_pyramid(path)
    assert Path(first.metadata["cache_path"]).parent == tmp_path / "envcache"
    assert first.n_levels == 1  # smallest side already < 512
    path.write_bytes(imagecodecs.png_encode(_image(300, 200, seed=2)))  # the slide changed
    second = open_pyramid(path)
    assert second.metadata["cache_built"]
    np.testing.assert_array_equal(second.levels[0].compute(), _image(300, 200, seed=2))


def test_flat_jpeg_and_strip_tiff(tmp_path: Path) -> None:
    img = np.full((520, 700, 3), 128, np.uint8)
    jpg = tmp_path / "x.jpg"
    from PIL import Image

    Image.fromarray(img).save(jpg, dpi=(25400 / 2.0, 25400 / 2.0), quality=95)
    pyr = open_pyramid(jpg, cache_dir=tmp_path / "c")
    assert pyr.mpp == pytest.approx(2.0, rel=1e-3) and pyr.n_levels == 2
    assert np.abs(pyr.levels[0].compute().astype(int) - 128).max() <= 2
    strip = tmp_path / "strip.tif"
    rgb = _image(530, 610, seed=3)
    tifffile.imwrite(strip, rgb, photometric="rgb", rowsperstrip=16)
    pyr = open_pyramid(strip, cache_dir=tmp_path / "c")
    assert pyr.metadata["cache"] == "flat" and pyr.n_levels == 2
    np.testing.assert_array_equal(pyr.levels[0].compute(), rgb)


def test_downsample2_keeps_dtype_and_odd_edges() -> None:
    block = np.array([[0, 2, 65535], [4, 6, 65535], [8, 8, 1]], np.uint16)
    out = cache_mod.downsample2(block)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[3, 65535], [8, 1]])


# ----------------------------------------------------------------------------- properties


def test_mpp_override(tmp_path: Path) -> None:
    pyr = open_pyramid(SVS, mpp=0.25)
    assert pyr.mpp == 0.25 and pyr.level_mpp(0) == 0.25
    assert pyr.metadata["mpp_source"] == "override"
    assert pyr.metadata["file_mpp"] == pytest.approx(0.499)
    with pytest.raises(ValueError, match="mpp"):
        open_pyramid(SVS, mpp=-1.0)


def test_open_reads_no_tiff_pixels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "p.ome.tif"
    img = _image(1024, 1024)
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(img, subifds=1, tile=(256, 256), photometric="rgb", compression="zlib")
        tw.write(img[::2, ::2], subfiletype=1, tile=(256, 256), photometric="rgb")
    reads: list[str] = []
    original = ZarrTiffStore.get

    async def counting_get(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not key.endswith(_META_KEYS):
            reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(ZarrTiffStore, "get", counting_get)
    pyr = open_pyramid(path)
    assert pyr.n_levels == 2 and reads == []
    pyr.read(Box(0, 0, 300, 10), level=0)
    assert len(reads) == 2  # exactly the two tiles the window touches


def test_open_reads_no_zarr_chunks_of_huge_slide(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 100k x 100k x 3 OME-Zarr (no chunk written) opens from metadata alone."""
    root = tmp_path / "huge.zarr"
    group = zarr.open_group(root, mode="w", zarr_format=3)
    datasets = []
    size = 100_000
    for k in range(4):
        side = size // 4**k
        group.create_array(str(k), shape=(side, side, 3), chunks=(512, 512, 3), dtype="uint8")
        scale = [0.25 * 4**k, 0.25 * 4**k, 1.0]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    axes = [{"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
            {"name": "c", "type": "channel"}]  # fmt: skip
    group.attrs.put(
        {"ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}}
    )
    reads: list[str] = []
    original = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not key.endswith(_META_KEYS):
            reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    pyr = open_pyramid(root)
    assert pyr.shape == (size, size, 3) and pyr.downsamples == (1.0, 4.0, 16.0, 64.0)
    assert pyr.mpp == pytest.approx(0.25)
    assert reads == []
    window = pyr.read(Box(50_000, 50_000, 1024, 1024))
    assert window.shape == (1024, 1024, 3) and not window.any()
    assert 0 < len(reads) <= 9  # the chunks under the window, nothing else


def test_levels_pickle_and_reopen(tmp_path: Path) -> None:
    """Levels travel to dask.distributed workers: they pickle and reopen lazily."""
    pyr = open_pyramid(SVS)
    restored = pickle.loads(pickle.dumps(pyr.levels[0]))
    np.testing.assert_array_equal(
        restored[100:300, 50:90].compute(), pyr.levels[0][100:300, 50:90].compute()
    )


def test_detect_format() -> None:
    assert detect_format(SVS) == "tiff"


def test_cancelled_build_leaves_nothing(tmp_path: Path) -> None:
    """Raising from the progress callback cancels a build; nothing half-built remains."""
    path = tmp_path / "c.png"
    path.write_bytes(imagecodecs.png_encode(_image(1100, 1100)))
    cache = tmp_path / "cache"

    class CancelledError(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        if done >= 2:
            raise CancelledError

    with pytest.raises(CancelledError):
        open_pyramid(path, cache_dir=cache, progress=cancel)
    assert list(cache.iterdir()) == []
    assert open_pyramid(path, cache_dir=cache).metadata["cache_built"]


def test_single_level_svs_gets_lazy_exact_halvings() -> None:
    """A one-level slide still offers coarser levels (a model's µm/px), computed on read."""
    from napari_sgnet.io.readers.cache import downsample2

    pyr = open_pyramid(SVS)
    assert pyr.downsamples == (1.0, 2.0, 4.0, 8.0)
    work = working_level(pyr, 4.0)  # 0.499 * 8 ~= 4 µm/px: level 3, read as it is
    assert (work.level, work.exact) == (3, True)
    full = tifffile.imread(SVS)
    expected = downsample2(downsample2(full))
    np.testing.assert_array_equal(pyr.levels[2].compute(), expected)
    box = Box(100, 50, 64, 48)
    np.testing.assert_array_equal(pyr.read(box, level=2), expected[box.slices()])
