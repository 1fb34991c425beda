"""OME-Zarr images: OME-NGFF 0.4 (zarr v2, ``multiscales`` in ``.zattrs``) and 0.5
(zarr v3, attributes under ``"ome"``), read with zarr directly.

Axes ``yx``, ``cyx``/``yxc`` and ``tczyx`` (singleton t and z) are supported; channels
move last. µm/px comes from the first dataset's ``scale`` transform (times any
multiscale-level scale) and the x axis' unit.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import zarr

from napari_sgnet.errors import CorruptSlideError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import (
    LevelArray,
    as_dask,
    dask_chunks,
    downsample_factors,
    file_stamp,
    guard_open,
    length_to_um,
    normalise_axes,
    slide_name,
    validate_levels,
)

__all__ = ["is_zarr_folder", "open_omezarr"]

log = logging.getLogger(__name__)

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")
# Axis names before NGFF 0.4 were implicit.
_IMPLICIT_AXES = {2: "yx", 3: "cyx", 4: "czyx", 5: "tczyx"}


def is_zarr_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding zarr (v2 or v3) metadata."""
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def open_omezarr(path: Path) -> Pyramid:
    """Open an OME-Zarr image lazily.

    Parameters
    ----------
    path : Path
        The image group (the folder with the ``multiscales`` metadata), or a
        bioformats2raw container whose first image is used.

    Returns
    -------
    Pyramid
    """
    with guard_open(path, "zarr store"):
        node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        raise UnsupportedSlideError(
            path, "is a single zarr array, not an OME-Zarr image; open the image group above it"
        )
    with guard_open(path, "OME-Zarr store"):
        group, ome, version = _image_group(node, path)
        ms = ome["multiscales"][0]
        axes = _axis_names(ms, path)
        units = _axis_units(ms)
        datasets = ms.get("datasets") or []
        if not datasets:
            raise CorruptSlideError(path, "OME-Zarr multiscales lists no datasets")
        arrays, scales = [], []
        for d in datasets:
            try:
                arr = group[d["path"]]
            except KeyError as exc:
                raise CorruptSlideError(path, f"dataset {d['path']!r} is missing") from exc
            if not isinstance(arr, zarr.Array) or arr.ndim != len(axes):
                raise CorruptSlideError(
                    path, f"dataset {d['path']!r} is not a {len(axes)}-D array ({axes})"
                )
            arrays.append(arr)
            scales.append(_scale(d, ms, len(axes)))

    stamp = file_stamp(path)
    yx = (axes.index("Y"), axes.index("X"))
    group_path = Path(str(group.store.root)) / group.path if hasattr(group.store, "root") else path
    levels = []
    for k, (arr, d) in enumerate(zip(arrays, datasets, strict=True)):
        opener = partial(zarr.open_array, str(group_path / d["path"]), mode="r")
        level = LevelArray(arr, path, f"level {k} ({d['path']})", opener=opener)
        chunks = dask_chunks(arr.shape, arr.chunks, yx)
        levels.append(normalise_axes(as_dask(level, chunks, stamp), axes, path))
    sizes = [tuple(lvl.shape[:2]) for lvl in levels]
    validate_levels(sizes, path)

    x = yx[1]
    if all(s is not None for s in scales) and scales[0][x] > 0:  # type: ignore[index]
        downsamples = tuple(s[x] / scales[0][x] for s in scales)  # type: ignore[index]
        downsamples = (1.0, *downsamples[1:])
    else:
        downsamples = downsample_factors(sizes)
    mpp = None
    if scales[0] is not None:
        mpp = length_to_um(scales[0][x], units.get("X"))
        if mpp is None and units.get("X") is None:
            log.info("%s: x axis has no unit; µm/px unknown", path)
    return Pyramid(
        levels=tuple(levels),
        downsamples=downsamples,
        mpp=mpp,
        source=path,
        name=slide_name(path),
        metadata={
            "ngff_name": ms.get("name"),
            "format": f"OME-Zarr {version}".strip(),
            "mpp_source": None if mpp is None else "OME-NGFF scale + axis unit",
            "zarr_format": group.metadata.zarr_format,
        },
    )


def _image_group(node: zarr.Group, path: Path) -> tuple[zarr.Group, dict[str, Any], str]:
    """The group with ``multiscales`` (descending into a bioformats2raw container)."""
    for _ in range(2):
        attrs = dict(node.attrs)
        ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
        if ome.get("multiscales"):
            ms0 = ome["multiscales"][0]
            version = str(ome.get("version") or ms0.get("version") or "")
            return node, ome, version
        if "bioformats2raw.layout" in ome and "0" in node:
            node = node["0"]
            continue
        break
    raise UnsupportedSlideError(
        path, "is a zarr store without OME-NGFF 'multiscales' metadata, not an OME-Zarr image"
    )


def _axis_names(ms: dict[str, Any], path: Path) -> str:
    raw = ms.get("axes")
    if raw is None:
        first = ms["datasets"][0]
        ndim = len(first.get("coordinateTransformations", [{}])[0].get("scale", [])) or 5
        names = _IMPLICIT_AXES.get(ndim, "")
    else:
        names = "".join((a.get("name", "") if isinstance(a, dict) else str(a))[:1] for a in raw)
    names = names.upper()
    if "Y" not in names or "X" not in names or len(set(names)) != len(names):
        raise UnsupportedSlideError(path, f"has OME-Zarr axes {names.lower()!r}; need y and x")
    return names


def _axis_units(ms: dict[str, Any]) -> dict[str, str | None]:
    units: dict[str, str | None] = {}
    for a in ms.get("axes") or []:
        if isinstance(a, dict) and a.get("name"):
            units[str(a["name"])[:1].upper()] = a.get("unit")
    return units


def _scale(dataset: dict[str, Any], ms: dict[str, Any], ndim: int) -> list[float] | None:
    """Dataset scale times the multiscale-level scale, when present."""
    scale = _find_scale(dataset.get("coordinateTransformations"), ndim)
    if scale is None:
        return None
    outer = _find_scale(ms.get("coordinateTransformations"), ndim)
    if outer is not None:
        scale = [a * b for a, b in zip(scale, outer, strict=True)]
    return scale


def _find_scale(transforms: Any, ndim: int) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t:
            values = [float(v) for v in t["scale"]]
            if len(values) == ndim:
                return values
    return None
