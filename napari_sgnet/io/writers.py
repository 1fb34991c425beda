"""Streaming pyramid writers: OME-TIFF (tiled, SubIFD pyramid) and OME-Zarr (NGFF 0.4 / 0.5).

Both read their input tile by tile (dask computes a bounded group of tiles at a time) and
never hold a whole level in memory, so a 200,000 x 200,000 px lazy pyramid can be written
on a laptop. Output appears atomically: data goes to a ``*.partial`` sibling that is renamed
into place only when complete, and an existing path is never replaced without
``overwrite=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from napari_sgnet.io._write_common import (
    Progress,
    as_levels,
    atomic_output,
    check_levels,
    check_target,
    ome_physical_size,
    tiff_resolution,
    write_labels,
    write_multiscale,
)
from napari_sgnet.io.ngff import NGFF_VERSIONS, check_version
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = ["NGFF_VERSIONS", "write_ome_tiff", "write_ome_zarr"]

log = logging.getLogger(__name__)
_TIFF_COMPRESSION = {
    "jpeg": "jpeg",
    "zlib": "zlib",
    "deflate": "zlib",
    "zstd": "zstd",
    "lzw": "lzw",
    "none": None,
}
#: Decoded bytes computed at once while streaming (bounds memory, keeps dask threads busy).
_GROUP_BYTES = 64 * 2**20


def _tile_groups(array: da.Array, tile: int) -> Iterator[list[tuple[tuple[int, int], np.ndarray]]]:
    """Row-major groups of ``((row, col), tile_array)``, each group computed in one go."""
    h, w = array.shape[:2]
    itemsize = array.dtype.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    per_group = max(1, _GROUP_BYTES // (tile * tile * itemsize))
    coords = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    for i in range(0, len(coords), per_group):
        batch = coords[i : i + per_group]
        lazy = [array[y : y + tile, x : x + tile] for y, x in batch]
        computed = dask.compute(*lazy)  # type: ignore[attr-defined,no-untyped-call]
        yield list(zip(batch, computed, strict=True))


# --------------------------------------------------------------------------- OME-TIFF
def write_ome_tiff(
    source: Pyramid | Sequence[Any],
    path: str | os.PathLike[str],
    mpp: float | None = None,
    *,
    tile: int = 512,
    compression: str = "jpeg",
    quality: int = 90,
    overwrite: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
) -> Path:
    """Write a pyramid as a tiled, pyramidal OME-TIFF (levels 1.. as SubIFDs of level 0).

    Parameters
    ----------
    source : Pyramid or sequence of arrays
        Levels largest first, ``(H, W)`` or ``(H, W, C)``; dask, zarr or numpy arrays.
    path : path-like
        Output file, conventionally ``*.ome.tif``.
    mpp : float, optional
        Level-0 µm/px (defaults to the pyramid's); written as OME ``PhysicalSizeX/Y`` and
        as TIFF resolution of every level.
    tile : int
        Tile side in pixels (multiple of 16).
    compression : str
        ``"jpeg"`` (lossy, uint8 grey/RGB only), ``"zlib"``, ``"zstd"``, ``"lzw"`` or ``"none"``.
    quality : int
        JPEG quality (1-100).
    overwrite : bool
        Replace an existing file.
    progress : callable, optional
        Called with the number of pixels just written (all levels count).
    name : str, optional
        OME image name.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    StoreError
        If the path exists (and ``overwrite`` is false) or cannot be written.
    """
    import tifffile

    path = Path(path)
    if compression not in _TIFF_COMPRESSION:
        raise ValueError(
            f"compression must be one of {sorted(_TIFF_COMPRESSION)}, got {compression!r}"
        )
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    levels, downsamples, mpp, default_name = as_levels(source, mpp)
    check_levels(levels)
    first = levels[0]
    rgb = first.ndim == 3 and first.shape[2] in (3, 4)
    codec = _TIFF_COMPRESSION[compression]
    if codec == "jpeg" and (first.dtype != np.uint8 or (first.ndim == 3 and first.shape[2] == 4)):
        raise ValueError("JPEG compression needs uint8 grey or RGB levels; use zlib or zstd")
    args: dict[str, Any] = {
        "tile": (tile, tile),
        "photometric": "rgb" if rgb else "minisblack",
        "compression": codec,
        "maxworkers": os.cpu_count() or 1,
    }
    if codec == "jpeg":
        args["compressionargs"] = {"level": int(quality)}
    elif codec in ("zlib", "zstd"):
        args["compressionargs"] = {"level": 6}
        args["predictor"] = first.dtype.kind in "ui"
    check_target(path, overwrite, is_zarr=False)
    metadata: dict[str, Any] = {
        "axes": "YXS" if first.ndim == 3 else "YX",
        "Name": name or default_name,
    }
    if mpp:
        metadata.update(ome_physical_size(mpp))
    with atomic_output(path) as partial:
        with tifffile.TiffWriter(partial, bigtiff=True, ome=True) as tif:
            for i, (level, ds) in enumerate(zip(levels, downsamples, strict=True)):
                extra: dict[str, Any] = tiff_resolution(mpp * ds) if mpp else {}
                if i == 0:
                    extra.update(subifds=len(levels) - 1, metadata=metadata)
                else:
                    extra.update(subfiletype=1, metadata=None)
                tif.write(
                    _tiff_tiles(level, tile, progress),
                    shape=level.shape,
                    dtype=level.dtype,
                    **args,
                    **extra,
                )
    log.info("wrote %s (%d levels)", path, len(levels))
    return path


def _tiff_tiles(level: da.Array, tile: int, progress: Progress | None) -> Iterator[np.ndarray]:
    for group in _tile_groups(level, tile):
        if progress is not None:
            progress(sum(int(d.shape[0]) * int(d.shape[1]) for _, d in group))
        for _, data in group:
            yield np.ascontiguousarray(data)


# --------------------------------------------------------------------------- OME-Zarr
def write_ome_zarr(
    source: Pyramid | Sequence[Any],
    path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    version: str = "0.5",
    labels: bool = False,
    name: str | None = None,
    palette: Palette | None = None,
    chunks: int = 512,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a pyramid as an NGFF multiscale image, or as an NGFF label image.

    Parameters
    ----------
    source : Pyramid or sequence of arrays
        Levels largest first. Images: ``(H, W)`` or ``(H, W, C)`` (stored channel-first,
        axes ``c, y, x``). Labels: ``(H, W)`` integer label ids.
    path : path-like
        The zarr root. For an image it must not exist (unless ``overwrite``). For labels it
        may be an existing NGFF image (the labels attach to it) or a new folder; the label
        image goes to ``<path>/labels/<name>/`` and is listed in ``<path>/labels``.
    mpp : float, optional
        Level-0 µm/px (defaults to the pyramid's), written as ``scale`` transformations.
    version : {"0.5", "0.4"}
        NGFF version: 0.5 writes zarr v3, 0.4 writes zarr v2.
    labels : bool
        Write an NGFF ``image-label`` instead of an image.
    name : str, optional
        Label image name (default ``"labels"``) or image name.
    palette : Palette, optional
        Label colours and class names (``image-label`` ``colors`` and ``properties``).
    chunks : int
        Chunk side in pixels.
    overwrite : bool
        Replace an existing image / an existing label image of the same name.
    progress : callable, optional
        Called with the number of pixels just written.

    Returns
    -------
    Path
        The image root, or the label image group for ``labels=True``.
    """
    ngff = check_version(version)
    levels, downsamples, mpp, default_name = as_levels(source, mpp)
    check_levels(levels)
    root = Path(path)
    if not labels:
        check_target(root, overwrite, is_zarr=True)
        with atomic_output(root) as partial:
            write_multiscale(
                partial,
                levels,
                downsamples,
                mpp=mpp,
                version=ngff,
                chunks=chunks,
                progress=progress,
                name=name or default_name,
            )
        return root
    if levels[0].ndim != 2 or levels[0].dtype.kind not in "ui":
        raise ValueError(
            f"labels must be 2-D integer arrays, got {levels[0].shape} {levels[0].dtype}"
        )
    return write_labels(
        root,
        levels,
        downsamples,
        mpp=mpp,
        version=ngff,
        chunks=chunks,
        progress=progress,
        name=name or "labels",
        palette=palette,
        overwrite=overwrite,
    )
