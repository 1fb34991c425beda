"""Tiny hostile files for the hostile-input suite: TIFFs whose tags lie, zarr arrays that
declare absurd shapes. Every file here is a few kilobytes; what it declares is not."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile
import zarr

_LONG = 4


def _tag(path: Path, name: str) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tf:
        assert tf.byteorder == "<" and not tf.is_bigtiff
        t = tf.pages[0].tags[name]
        return int(t.offset), int(t.dtype)


def set_tag(path: Path, name: str, value: int | None = None, count: int | None = None) -> None:
    """Overwrite an inline tag's value (and/or its count) in a little-endian classic TIFF."""
    off, dtype = _tag(path, name)
    data = bytearray(path.read_bytes())
    if count is not None:
        struct.pack_into("<I", data, off + 4, count)
    if value is not None:
        struct.pack_into("<H" if dtype == 3 else "<I", data, off + 8, value)
    path.write_bytes(bytes(data))


def set_tag_array(path: Path, name: str, values: np.ndarray) -> None:
    """Point a tag at a new LONG array appended to the end of the file."""
    off, _ = _tag(path, name)
    data = bytearray(path.read_bytes())
    if len(data) % 2:
        data += b"\0"
    where = len(data)
    data += np.asarray(values, dtype="<u4").tobytes()
    struct.pack_into("<HI", data, off + 2, _LONG, len(values))
    struct.pack_into("<I", data, off + 8, where)
    path.write_bytes(bytes(data))


def tiled_tiff(path: Path, side: int = 256, tile: int = 256, mpp: float | None = None) -> Path:
    """A small honest tiled RGB TIFF (no shaped description, so tags can be patched)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    kw: dict[str, object] = {}
    if mpp is not None:
        kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, image, tile=(tile, tile), photometric="rgb", metadata=None, **kw)
    return path


def declared_huge_tiff(path: Path, width: int, height: int) -> Path:
    """A 200-byte-ish tiled TIFF that declares ``width x height`` px with one real tile."""
    tiled_tiff(path, 256, 256)
    set_tag(path, "ImageWidth", width)
    set_tag(path, "ImageLength", height)
    return path


def sparse_tiff(path: Path, side: int, tile: int = 4096) -> Path:
    """A valid sparse tiled TIFF: ``side x side`` px, every tile empty (byte count 0)."""
    tiffile_small = np.zeros((tile, tile, 3), np.uint8)
    tifffile.imwrite(path, tiffile_small, tile=(tile, tile), photometric="rgb", metadata=None,
                     compression="zlib")
    set_tag(path, "ImageWidth", side)
    set_tag(path, "ImageLength", side)
    n = (-(-side // tile)) ** 2
    set_tag_array(path, "TileOffsets", np.full(n, 8, dtype=np.uint32))
    set_tag_array(path, "TileByteCounts", np.zeros(n, dtype=np.uint32))
    return path


def pyramid_tiff(path: Path, side: int = 1024, mpp: float = 0.5) -> Path:
    """A three-level SubIFD pyramid with µm/px."""
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(big, tile=(256, 256), photometric="rgb", subifds=2, metadata=None, **res)
        tw.write(big[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
        tw.write(big[::4, ::4], tile=(256, 256), photometric="rgb", subfiletype=1)
    return path


def truncated(path: Path, source: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def huge_omezarr(path: Path, side: int, chunk: int = 512, mpp: float = 0.5) -> Path:
    """An OME-Zarr 0.5 image declaring ``side x side`` RGB px and holding no chunk."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("0", shape=(3, side, side), chunks=(3, chunk, chunk), dtype="uint8",
                       fill_value=0)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, mpp, mpp]}]}],
        }],
    }
    return path
