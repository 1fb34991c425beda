"""OME-Zarr images: OME-NGFF 0.4 (zarr v2, ``multiscales`` in ``.zattrs``) and 0.5
(zarr v3, attributes under ``"ome"``), read with zarr directly.

The metadata is parsed by :mod:`napari_sgnet.io.ngff`. Axes ``yx``, ``cyx``/``yxc`` and
``tczyx`` (singleton t and z) are supported; channels move last. µm/px comes from the
first dataset's ``scale`` transform (times any multiscale-level scale) and the x axis'
unit; a translation of the first dataset is kept as ``metadata["origin_px"]`` (level-0
pixels), which the napari layer turns into its ``translate``.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import zarr

from napari_sgnet.errors import CorruptSlideError, UnsupportedSlideError
from napari_sgnet.io.ngff import Multiscale, ngff_version, ome_attributes, parse_multiscale
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import (
    LevelArray,
    as_dask,
    axes_problem,
    check_declared,
    dask_chunks,
    downsample_factors,
    file_stamp,
    guard_open,
    length_to_um,
    normalise_axes,
    slide_name,
    validate_levels,
)

__all__ = ["is_zarr_folder", "open_omezarr", "probe_omezarr"]

log = logging.getLogger(__name__)

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


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
    group, version, ms, axes, arrays = _inspect(path)
    units = {a.name[:1].upper(): a.unit for a in ms.axes if a.name}
    scales = [ms.level_scale(k) for k in range(len(ms.datasets))]

    stamp = file_stamp(path)
    yx = (axes.index("Y"), axes.index("X"))
    group_path = Path(str(group.store.root)) / group.path if hasattr(group.store, "root") else path
    levels = []
    for k, (arr, d) in enumerate(zip(arrays, ms.datasets, strict=True)):
        opener = partial(zarr.open_array, str(group_path / d.path), mode="r")
        level = LevelArray(arr, path, f"level {k} ({d.path})", opener=opener)
        chunks = dask_chunks(arr.shape, arr.chunks, yx)
        levels.append(normalise_axes(as_dask(level, chunks, stamp), axes, path))
    sizes = [tuple(lvl.shape[:2]) for lvl in levels]
    validate_levels(sizes, path)

    x = yx[1]
    x_steps = [s[x] for s in scales if s is not None]
    if len(x_steps) == len(scales) and x_steps[0] > 0:
        downsamples = (1.0, *(step / x_steps[0] for step in x_steps[1:]))
    else:
        downsamples = downsample_factors(sizes)
    mpp = None
    first = scales[0]
    if first is not None:
        mpp = length_to_um(first[x], units.get("X"))
        if mpp is None and units.get("X") is None:
            log.info("%s: x axis has no unit; µm/px unknown", path)
    metadata: dict[str, Any] = {}
    origin = _origin_px(ms, yx)
    if origin is not None:
        metadata["origin_px"] = origin
    return Pyramid(
        levels=tuple(levels),
        downsamples=downsamples,
        mpp=mpp,
        source=path,
        name=slide_name(path),
        metadata={
            **metadata,
            "ngff_name": ms.name,
            "format": f"OME-Zarr {version}".strip(),
            "mpp_source": None if mpp is None else "OME-NGFF scale + axis unit",
            "zarr_format": group.metadata.zarr_format,
        },
    )


def _origin_px(ms: Multiscale, yx: tuple[int, int]) -> tuple[float, float] | None:
    """``(y, x)`` of level 0's first pixel centre in level-0 pixels, from its translation.

    NGFF places pixel ``i`` at ``i * scale + translation``; the translation divided by the
    scale is the same whatever the unit. ``None`` when level 0 has no (non-zero) translation.
    """
    first = ms.datasets[0]
    if first.translation is None or first.scale is None:
        return None
    if len(first.translation) != len(ms.axes) or len(first.scale) != len(ms.axes):
        return None
    y, x = yx
    sy, sx = first.scale[y], first.scale[x]
    if sy <= 0 or sx <= 0:
        return None
    origin = (first.translation[y] / sy, first.translation[x] / sx)
    return None if origin == (0.0, 0.0) else (float(origin[0]), float(origin[1]))


def probe_omezarr(path: Path) -> None:
    """Check, from metadata only, that :func:`open_omezarr` opens ``path``.

    Reads the group attributes and the datasets' array metadata, never chunks.

    Raises
    ------
    SlideError
        ``CorruptSlideError`` or ``UnsupportedSlideError`` naming the store and the problem.
    """
    _, _, _, axes, arrays = _inspect(path)
    problem = axes_problem(axes, arrays[0].shape, arrays[0].dtype)
    if problem is not None:
        raise UnsupportedSlideError(path, problem)


def _inspect(path: Path) -> tuple[zarr.Group, str, Multiscale, str, list[zarr.Array[Any]]]:
    """The image group, its NGFF version, multiscale, axis letters and level arrays."""
    with guard_open(path, "zarr store"):
        node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        raise UnsupportedSlideError(
            path, "is a single zarr array, not an OME-Zarr image; open the image group above it"
        )
    with guard_open(path, "OME-Zarr store"):
        group, version = _image_group(node, path)
        try:
            ms = parse_multiscale(group.attrs.asdict())
        except ValueError as exc:
            raise CorruptSlideError(path, f"OME-Zarr {exc}") from exc
        axes = _axis_names(ms, path)
        arrays = []
        for d in ms.datasets:
            try:
                arr = group[d.path]
            except KeyError as exc:
                raise CorruptSlideError(path, f"dataset {d.path!r} is missing") from exc
            if not isinstance(arr, zarr.Array) or arr.ndim != len(axes):
                raise CorruptSlideError(
                    path, f"dataset {d.path!r} is not a {len(axes)}-D array ({axes})"
                )
            arrays.append(arr)
    for k, arr in enumerate(arrays):  # the resource limits, before any dask array is built
        check_declared(path, f"level {k}", axes, arr.shape, arr.chunks, arr.dtype)
    return group, version, ms, axes, arrays


def _image_group(node: zarr.Group, path: Path) -> tuple[zarr.Group, str]:
    """The group with ``multiscales`` and its NGFF version (descending into bioformats2raw)."""
    for _ in range(2):
        attrs = dict(node.attrs)
        ome = ome_attributes(attrs)
        if ome.get("multiscales"):
            return node, ngff_version(attrs) or ""
        if "bioformats2raw.layout" in ome and "0" in node:
            child = node["0"]
            if not isinstance(child, zarr.Group):
                break
            node = child
            continue
        break
    raise UnsupportedSlideError(
        path, "is a zarr store without OME-NGFF 'multiscales' metadata, not an OME-Zarr image"
    )


def _axis_names(ms: Multiscale, path: Path) -> str:
    """The axes as one upper-case letter each (``"CYX"``); they must include y and x once."""
    names = "".join(a.name[:1] for a in ms.axes).upper()
    if "Y" not in names or "X" not in names or len(set(names)) != len(names):
        raise UnsupportedSlideError(path, f"has OME-Zarr axes {names.lower()!r}; need y and x")
    return names
