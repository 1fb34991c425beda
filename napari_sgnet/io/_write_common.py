"""Shared plumbing of the pyramid writers: input normalisation and atomic output paths."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from napari_sgnet.errors import StoreError
from napari_sgnet.io.pyramid import Pyramid

__all__ = [
    "Progress",
    "as_levels",
    "check_levels",
    "claim_path",
    "commit_path",
    "is_zarr_group",
    "remove_path",
]

#: Progress callback: called with the number of pixels just written.
Progress = Callable[[int], Any]


def as_levels(
    source: Pyramid | Sequence[Any], mpp: float | None
) -> tuple[list[da.Array], list[float], float | None, str]:
    """Levels as dask arrays, their downsample factors, µm/px and a name."""
    if isinstance(source, Pyramid):
        levels = list(source.levels)
        downsamples = [float(d) for d in source.downsamples]
        return levels, downsamples, mpp if mpp is not None else source.mpp, source.name
    levels = [a if isinstance(a, da.Array) else da.from_array(a, chunks=a.shape) for a in source]
    if not levels:
        raise ValueError("nothing to write: no levels")
    width = levels[0].shape[1]
    downsamples = [width / a.shape[1] for a in levels]
    return levels, downsamples, mpp, "image"


def check_levels(levels: Sequence[da.Array]) -> None:
    first = levels[0]
    for i, a in enumerate(levels):
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            raise ValueError(f"level {i}: expected (H, W) or (H, W, C<=4), got shape {a.shape}")
        if a.ndim != first.ndim or a.dtype != first.dtype:
            raise ValueError(f"level {i}: dimensions/dtype differ from level 0")
        if i and (a.shape[0] > levels[i - 1].shape[0] or a.shape[1] > levels[i - 1].shape[1]):
            raise ValueError(f"level {i} is larger than level {i - 1}; levels go largest first")


def claim_path(path: Path, overwrite: bool, is_zarr: bool) -> Path:
    """Check ``path`` may be (re)written; return the sibling partial path to write to."""
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise StoreError(
                path, "already exists; pass overwrite=True (--overwrite) to replace it"
            )
        if is_zarr and path.is_dir() and not is_zarr_group(path):
            raise StoreError(path, "exists and is not a zarr store; refusing to replace it")
        if not is_zarr and path.is_dir():
            raise StoreError(path, "is a directory; refusing to replace it with a file")
    if not path.parent.is_dir():
        raise StoreError(path, f"parent folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    remove_path(partial)
    return partial


def is_zarr_group(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit_path(partial: Path, path: Path) -> None:
    if path.exists() or path.is_symlink():
        remove_path(path)
    os.replace(partial, path)
