"""Plumbing of the pyramid writers: input normalisation, atomic output paths, NGFF zarr groups.

The NGFF attributes come from :mod:`napari_sgnet.io.ngff`; this module only streams the
pixels into zarr arrays and puts the attributes on the groups.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.io.ngff import (
    ImageLabel,
    Multiscale,
    NgffVersion,
    labels_attributes,
    level_datasets,
    multiscale_attributes,
    ome_attributes,
    parse_labels,
    spatial_axes,
)
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = [
    "Progress",
    "array_options",
    "as_levels",
    "atomic_output",
    "check_levels",
    "check_target",
    "commit_path",
    "is_zarr_group",
    "ome_physical_size",
    "remove_path",
    "tiff_resolution",
    "write_labels",
    "write_multiscale",
    "zarr_format",
]

log = logging.getLogger(__name__)

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
    levels = [
        a if isinstance(a, da.Array) else da.from_array(a, chunks=a.shape)  # type: ignore[no-untyped-call]
        for a in source
    ]
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


def check_target(path: Path, overwrite: bool, is_zarr: bool) -> None:
    """Check ``path`` may be (re)written (write it through :func:`atomic_output`)."""
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


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield the emptied sibling ``.<name>.partial`` to write ``path`` into.

    When the block succeeds the partial replaces ``path``; when it fails (or is
    interrupted) the partial is removed and ``path`` is left as it was.
    """
    partial = path.with_name(f".{path.name}.partial")
    remove_path(partial)
    try:
        yield partial
        commit_path(partial, path)
    except BaseException:
        remove_path(partial)
        raise


def is_zarr_group(path: Path) -> bool:
    """True when ``path`` is a zarr (v2 or v3) group folder."""
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup"))


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit_path(partial: Path, path: Path) -> None:
    if path.exists() or path.is_symlink():
        remove_path(path)
    os.replace(partial, path)


# --------------------------------------------------------------------------- OME-TIFF
def ome_physical_size(mpp: float) -> dict[str, Any]:
    """The OME-XML physical pixel size entries (tifffile ``metadata``) of ``mpp`` µm/px."""
    return {
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }


def tiff_resolution(mpp: float) -> dict[str, Any]:
    """tifffile ``write`` options recording ``mpp`` µm/px as the TIFF resolution (px/cm)."""
    px_per_cm = 1e4 / mpp
    return {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}


# --------------------------------------------------------------------------- NGFF zarr groups
def zarr_format(version: NgffVersion) -> Literal[2, 3]:
    """The zarr format of an NGFF version: 3 for 0.5, 2 for 0.4."""
    return 3 if version == "0.5" else 2


def array_options(version: NgffVersion, axes: Sequence[str]) -> dict[str, Any]:
    """``create_array`` options of an NGFF level: zstd-compressed, ``/`` chunk keys on zarr v2."""
    if version == "0.5":
        from zarr.codecs import BloscCodec

        return {
            "dimension_names": list(axes),
            "compressors": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
        }
    import numcodecs

    return {
        "chunk_key_encoding": {"name": "v2", "separator": "/"},
        "compressors": numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
    }


def _store(array: da.Array, target: zarr.Array[Any], chunk: int, progress: Progress | None) -> None:
    """Copy ``array`` into the zarr array ``target`` one band of chunk rows at a time."""
    array = array.rechunk(target.chunks)  # type: ignore[no-untyped-call]
    y_axis = array.ndim - 2
    height = array.shape[y_axis]
    lead = (slice(None),) * y_axis
    for y in range(0, height, chunk):
        band = (*lead, slice(y, min(y + chunk, height)), slice(None))
        da.store(array[band], target, regions=band, lock=False)  # type: ignore[arg-type]
        if progress is not None:
            progress((band[y_axis].stop - y) * int(array.shape[-1]))


def _omero_rgb(channels: int) -> dict[str, Any]:
    """OMERO rendering settings of a uint8 RGB(A) image: one entry per stored channel."""
    colors = ("FF0000", "00FF00", "0000FF", "FFFFFF")
    return {
        "rdefs": {"model": "color"},
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            }
            for label, color in list(zip("RGBA", colors, strict=True))[:channels]
        ],
    }


def write_multiscale(
    location: Path,
    levels: Sequence[da.Array],
    downsamples: Sequence[float],
    *,
    mpp: float | None,
    version: NgffVersion,
    chunks: int,
    progress: Progress | None = None,
    name: str,
    image_label: ImageLabel | None = None,
) -> None:
    """Write ``levels`` as a new NGFF multiscale group at ``location`` (must not exist).

    Images with a channel axis (``(H, W, C)`` levels) are stored ``c, y, x``. Level ``k``
    has scale ``downsamples[k]`` x µm/px (pixels when unknown) and the translation that
    puts its pixel centres over the level-0 pixels they stand for (``(d - 1) / 2`` level-0
    pixels, the NGFF convention of :mod:`napari_sgnet.io.ngff`). With ``image_label``
    the group is a label image.
    """
    group = zarr.open_group(str(location), mode="w-", zarr_format=zarr_format(version))
    rgb = levels[0].ndim == 3
    axes = spatial_axes("micrometer" if mpp else None, channel=rgb)
    names = [a.name for a in axes]
    for i, level in enumerate(levels):
        array = level.transpose(2, 0, 1) if rgb else level  # type: ignore[no-untyped-call]
        shape = tuple(int(s) for s in array.shape)
        chunk_shape = (shape[0], chunks, chunks) if rgb else (chunks, chunks)
        target = group.create_array(
            str(i),
            shape=shape,
            chunks=chunk_shape,
            dtype=array.dtype,
            fill_value=0,
            **array_options(version, names),
        )
        _store(array, target, chunks, progress)
    multiscale = Multiscale(
        axes=axes,
        datasets=level_datasets(
            downsamples, mpp or 1.0, centred=True, leading=(1.0,) if rgb else ()
        ),
        name=name,
    )
    omero = _omero_rgb(int(levels[0].shape[2])) if rgb and levels[0].dtype == np.uint8 else None
    group.attrs.update(
        multiscale_attributes(multiscale, version, image_label=image_label, omero=omero)
    )


def write_labels(
    root: Path,
    levels: Sequence[da.Array],
    downsamples: Sequence[float],
    *,
    mpp: float | None,
    version: NgffVersion,
    chunks: int,
    progress: Progress | None = None,
    name: str,
    palette: Palette | None,
    overwrite: bool,
) -> Path:
    """Write a label image to ``root/labels/<name>`` and list it in ``root/labels``.

    ``root`` may be an NGFF image of the same version (the labels point back at it
    with ``source.image``) or a new folder. Returns the label image group.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid label name {name!r}")
    fmt = zarr_format(version)
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
    source = "../../" if _has_multiscales(root_group) else None
    if palette is not None:
        image_label = ImageLabel.from_palette(palette, source_image=source)
    else:
        image_label = ImageLabel(source_image=source)
    with atomic_output(target) as partial:
        write_multiscale(
            partial,
            levels,
            downsamples,
            mpp=mpp,
            version=version,
            chunks=chunks,
            progress=progress,
            name=name,
            image_label=image_label,
        )
    names = [n for n in parse_labels(labels_group.attrs.asdict()) if n != name] + [name]
    labels_group.attrs.update(labels_attributes(names, version))
    log.info("wrote labels %s", target)
    return target


def _has_multiscales(group: zarr.Group) -> bool:
    return "multiscales" in ome_attributes(group.attrs.asdict())
