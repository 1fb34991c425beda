"""NGFF (OME-Zarr 0.4 on zarr v2, 0.5 on zarr v3) multiscale and label-image writing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.errors import StoreError
from napari_sgnet.io._write_common import (
    Progress,
    commit_path,
    is_zarr_group,
    remove_path,
)
from napari_sgnet.palette import Palette

__all__ = ["write_labels", "write_multiscale"]

log = logging.getLogger(__name__)


def _zarr_format(version: str) -> int:
    return 3 if version == "0.5" else 2


def _array_options(version: str, axes: list[str]) -> dict[str, Any]:
    if version == "0.5":
        from zarr.codecs import BloscCodec

        return {
            "dimension_names": axes,
            "compressors": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
        }
    import numcodecs

    return {
        "chunk_key_encoding": {"name": "v2", "separator": "/"},
        "compressors": numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
    }


def _store(array: da.Array, target: Any, chunk: int, progress: Progress | None) -> None:
    """Copy ``array`` into the zarr array ``target`` one band of chunk rows at a time."""
    array = array.rechunk(target.chunks)
    y_axis = array.ndim - 2
    height = array.shape[y_axis]
    lead = (slice(None),) * y_axis
    for y in range(0, height, chunk):
        band = (*lead, slice(y, min(y + chunk, height)), slice(None))
        da.store(array[band], target, regions=band, lock=False)
        if progress is not None:
            progress((band[y_axis].stop - y) * int(array.shape[-1]))


def write_multiscale(
    location: Path,
    levels: Sequence[da.Array],
    downsamples: Sequence[float],
    mpp: float | None,
    version: str,
    chunks: int,
    progress: Progress | None,
    name: str,
    image_label: dict[str, Any] | None,
) -> None:
    import zarr

    group = zarr.open_group(str(location), mode="w-", zarr_format=_zarr_format(version))
    rgb = levels[0].ndim == 3
    space: dict[str, Any] = {"type": "space", "unit": "micrometer"} if mpp else {"type": "space"}
    axes = ([{"name": "c", "type": "channel"}] if rgb else []) + [
        {"name": "y", **space},
        {"name": "x", **space},
    ]
    names = [a["name"] for a in axes]
    datasets = []
    for i, (level, ds) in enumerate(zip(levels, downsamples, strict=True)):
        array = level.transpose(2, 0, 1) if rgb else level
        shape = tuple(int(s) for s in array.shape)
        chunk_shape = (shape[0], chunks, chunks) if rgb else (chunks, chunks)
        target = group.create_array(
            str(i),
            shape=shape,
            chunks=chunk_shape,
            dtype=array.dtype,
            fill_value=0,
            **_array_options(version, names),
        )
        _store(array, target, chunks, progress)
        step = float(ds) * (mpp or 1.0)
        scale = ([1.0] if rgb else []) + [step, step]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    meta: dict[str, Any] = {"multiscales": [multiscale]}
    if rgb and levels[0].dtype == np.uint8:
        colors = ("FF0000", "00FF00", "0000FF", "FFFFFF")
        meta["omero"] = {
            "rdefs": {"model": "color"},
            "channels": [
                {
                    "label": label,
                    "color": color,
                    "active": True,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for label, color in zip("RGBA", colors, strict=False)
            ],
        }
    if image_label is not None:
        meta["image-label"] = image_label
    if version == "0.4":
        multiscale["version"] = "0.4"
        if image_label is not None:
            image_label["version"] = "0.4"
        group.attrs.update(meta)
    else:
        group.attrs.update({"ome": {"version": "0.5", **meta}})


def _ome_attrs(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", {})) if group.metadata.zarr_format == 3 else attrs


def write_labels(
    root: Path,
    levels: Sequence[da.Array],
    downsamples: Sequence[float],
    mpp: float | None,
    version: str,
    chunks: int,
    progress: Progress | None,
    name: str,
    palette: Palette | None,
    overwrite: bool,
) -> Path:
    import zarr

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid label name {name!r}")
    fmt = _zarr_format(version)
    if root.exists():
        if not is_zarr_group(root):
            raise StoreError(
                root, "exists and is not a zarr store; refusing to write labels into it"
            )
        found = 3 if (root / "zarr.json").is_file() else 2
        if found != fmt:
            want = "0.5" if found == 3 else "0.4"
            raise StoreError(root, f"is a zarr v{found} store: write NGFF {want} labels into it")
        root_group = zarr.open_group(str(root), mode="r+")
    else:
        if not root.parent.is_dir():
            raise StoreError(root, f"parent folder {root.parent} does not exist")
        root_group = zarr.open_group(str(root), mode="w-", zarr_format=fmt)
    labels_group = root_group.require_group("labels")
    target = root / "labels" / name
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise StoreError(target, "already exists; pass overwrite=True (--overwrite) to replace it")
    image_label: dict[str, Any] = {}
    if palette is not None:
        image_label["colors"] = [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
            {"label-value": i + 1, "rgba": [*c.color, 255]} for i, c in enumerate(palette.classes)
        ]
        image_label["properties"] = [{"label-value": 0, "name": "no label"}] + [
            {"label-value": i + 1, "name": c.name} for i, c in enumerate(palette.classes)
        ]
    if "multiscales" in _ome_attrs(root_group):
        image_label["source"] = {"image": "../../"}
    partial = target.with_name(f".{name}.partial")
    remove_path(partial)
    try:
        write_multiscale(
            partial, levels, downsamples, mpp, version, chunks, progress, name, image_label
        )
        commit_path(partial, target)
    except BaseException:
        remove_path(partial)
        raise
    listing = _ome_attrs(labels_group)
    names = [n for n in listing.get("labels", []) if n != name] + [name]
    if fmt == 3:
        labels_group.attrs.update({"ome": {**listing, "version": "0.5", "labels": names}})
    else:
        labels_group.attrs.update({"labels": names})
    log.info("wrote labels %s", target)
    return target
