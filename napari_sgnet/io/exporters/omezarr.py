"""OME-Zarr label export: an OME-NGFF image-label multiscale group (NGFF 0.4 or 0.5).

The output is one label image group, the layout that lives at
``image.ome.zarr/labels/<name>/`` inside an OME-Zarr image (it can be moved there
as is, or opened on its own): a uint8 pyramid ``0, 1, ...`` with per-level scale in
µm (slide pixels when the µm/px is unknown), the palette as ``image-label.colors``,
class names as ``image-label.properties``, and napari-sgnet's own record under the
``napari_sgnet`` attribute. NGFF 0.5 is zarr v3 (attributes under ``"ome"``);
NGFF 0.4 is zarr v2 with ``/`` chunk keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.io._write_common import array_options, is_zarr_group, zarr_format
from napari_sgnet.io.exporters._common import Progress, iter_blocks, report, staged_output
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.ngff import (
    NGFF_VERSIONS,
    ImageLabel,
    check_version,
    label_multiscale,
    multiscale_attributes,
    parse_image_label,
    parse_multiscale,
)
from napari_sgnet.palette import Palette, PaletteError

__all__ = ["NGFF_VERSIONS", "export_omezarr", "ngff_label_attributes", "read_omezarr_labels"]

log = logging.getLogger(__name__)

#: Key of napari-sgnet's own record in the group attributes.
SGNET_KEY = "napari_sgnet"


def ngff_label_attributes(source: LabelSource, version: str = "0.5") -> dict[str, Any]:
    """The group attributes of an OME-NGFF image-label multiscale for ``source``.

    Parameters
    ----------
    source : LabelSource
        The labels (levels, palette, placement).
    version : {"0.4", "0.5"}
        NGFF version: 0.5 nests everything under ``"ome"``.

    Returns
    -------
    dict
        Built by :func:`napari_sgnet.io.ngff.multiscale_attributes`.
    """
    factors = [source.slide_scale(k) for k in range(source.n_levels)]
    multiscale = label_multiscale(source.name, factors, source.mpp, offset=source.offset)
    image_label = ImageLabel.from_palette(source.palette)
    return multiscale_attributes(multiscale, version, image_label=image_label)


def _replaceable(path: Path) -> bool:
    """Only an OME-Zarr group that is not a label store may be replaced by an export."""
    return is_zarr_group(path) and not LabelStore.is_store(path)


def export_omezarr(
    labels: Any,
    path: str | Path,
    *,
    ngff: Literal["0.4", "0.5"] = "0.5",
    chunk: int = 512,
    block: int = 2048,
    overwrite: bool = False,
    progress: Progress | None = None,
    palette: Palette | None = None,
    **source_kwargs: Any,
) -> Path:
    """Write labels as an OME-Zarr image-label multiscale group.

    Parameters
    ----------
    labels : LabelStore, LabelSource, array-like or list of array-likes
        What to export (see :func:`~napari_sgnet.io.exporters.as_label_source`).
    path : str or Path
        Output folder (conventionally ``<name>.ome.zarr``).
    ngff : {"0.4", "0.5"}
        NGFF version (0.5: zarr v3; 0.4: zarr v2).
    chunk : int
        Chunk side of the written arrays.
    block : int
        Side of the blocks read and written at a time (rounded to whole chunks); bounds memory.
    overwrite : bool
        Replace an existing OME-Zarr group at ``path`` (never a label store or other folder).
    progress : callable, optional
        ``progress(done, total)`` after each block.
    palette : Palette, optional
        Classes of an array input (default Gleason).
    **source_kwargs
        Placement of an array input (``mpp``, ``base_downsample``, ``offset``, ``name``...).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    StoreError
        If ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """
    version = check_version(ngff)
    source = as_label_source(labels, palette, **{"chunk": chunk, **source_kwargs})
    block = max(chunk, block // chunk * chunk)
    protect = [Path(source.provenance["store"])] if "store" in source.provenance else []
    plans = [(k, iter_blocks(*source.shape(k), block)) for k in range(source.n_levels)]
    total = sum(len(boxes) for _, boxes in plans)
    done = 0
    with staged_output(
        path, overwrite=overwrite, kind="dir", replaceable=_replaceable, protect=protect
    ) as stage:
        group = zarr.open_group(stage, mode="w-", zarr_format=zarr_format(version))
        for k, boxes in plans:
            h, w = source.shape(k)
            arr = group.create_array(
                str(k),
                shape=(h, w),
                chunks=(min(chunk, h), min(chunk, w)),
                dtype="uint8",
                fill_value=0,
                **array_options(version, ("y", "x")),
            )
            for box in boxes:
                arr[box.slices()] = source.read(box, k)
                done += 1
                report(progress, done, total)
        attrs = ngff_label_attributes(source, version)
        attrs[SGNET_KEY] = source.metadata()
        group.update_attributes(attrs)
    log.info("exported %d label levels to %s (NGFF %s)", source.n_levels, path, version)
    return Path(path)


def read_omezarr_labels(path: str | Path) -> LabelSource:
    """Open an OME-Zarr image-label group (0.4 or 0.5) as a lazy :class:`LabelSource`.

    Palette and placement come from napari-sgnet's own record when present, otherwise
    from ``image-label`` colours/properties and the level-0 scale.

    Raises
    ------
    StoreError
        When ``path`` is not an OME-Zarr label image.
    """
    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r")
        attrs: dict[str, Any] = group.attrs.asdict()
        multiscale = parse_multiscale(attrs)
        image_label = parse_image_label(attrs)
        if image_label is None:
            raise ValueError("no 'image-label' metadata")
        scales = [multiscale.level_scale(k) for k in range(len(multiscale.datasets))]
        if any(s is None for s in scales):
            raise ValueError("a dataset has no scale for its axes")
        levels = tuple(group[d.path] for d in multiscale.datasets)
    except (OSError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(path, f"cannot open OME-Zarr labels: {exc}") from exc
    except (KeyError, ValueError) as exc:
        raise StoreError(path, f"not an OME-Zarr label image: {exc}") from exc
    x_scale = [float(s[-1]) for s in scales if s is not None]
    downsamples = tuple(x / x_scale[0] for x in x_scale)
    record = attrs.get(SGNET_KEY) or {}
    try:
        if "palette" in record:
            palette = Palette.from_dict(record["palette"])
        else:
            palette = image_label.to_palette()
    except PaletteError as exc:
        raise StoreError(path, f"bad label palette: {exc}") from exc
    if record:
        base, mpp = float(record["base_downsample"]), record.get("mpp")
        offset = tuple(record.get("offset") or (0.0, 0.0))
        size = record.get("slide_size")
    else:
        has_unit = any(a.unit for a in multiscale.axes)
        base = 1.0 if has_unit else x_scale[0]
        mpp = x_scale[0] if has_unit else None
        offset, size = (0.0, 0.0), None
    return LabelSource(
        levels=levels,
        downsamples=downsamples,
        palette=palette,
        base_downsample=base,
        mpp=mpp,
        offset=(float(offset[0]), float(offset[1])),
        slide_size=(int(size[0]), int(size[1])) if size else None,
        name=str(multiscale.name or path.stem),
        provenance=dict(record.get("provenance") or {"source": str(path)}),
    )
