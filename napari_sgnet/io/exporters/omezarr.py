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

import numcodecs
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.io.exporters._common import (
    Progress,
    is_zarr_group,
    iter_blocks,
    report,
    staged_output,
)
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.io.labelstore.base import LabelStoreBase
from napari_sgnet.palette import ClassInfo, Palette, PaletteError

__all__ = ["NGFF_VERSIONS", "export_omezarr", "ngff_label_attributes", "read_omezarr_labels"]

log = logging.getLogger(__name__)

NGFF_VERSIONS = ("0.4", "0.5")
#: Key of napari-sgnet's own record in the group attributes.
SGNET_KEY = "napari_sgnet"


def _datasets(source: LabelSource) -> list[dict[str, Any]]:
    unit = source.mpp if source.mpp is not None else 1.0
    out = []
    for k in range(source.n_levels):
        f = source.slide_scale(k)
        # Pixel centres: level-k pixel i is centred on slide pixel offset + i * f + (f - 1) / 2.
        ty = (source.offset[1] + (f - 1.0) / 2.0) * unit
        tx = (source.offset[0] + (f - 1.0) / 2.0) * unit
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [f * unit, f * unit]}]
        if tx != 0 or ty != 0:
            transforms.append({"type": "translation", "translation": [ty, tx]})
        out.append({"path": str(k), "coordinateTransformations": transforms})
    return out


def ngff_label_attributes(source: LabelSource, version: str = "0.5") -> dict[str, Any]:
    """The group attributes of an OME-NGFF image-label multiscale for ``source``.

    Parameters
    ----------
    source : LabelSource
        The labels (levels, palette, placement).
    version : {"0.4", "0.5"}
        NGFF version: 0.5 nests everything under ``"ome"``.
    """
    if version not in NGFF_VERSIONS:
        raise ValueError(f"NGFF version must be one of {NGFF_VERSIONS}, got {version!r}")
    axis: dict[str, Any] = {"type": "space"}
    if source.mpp is not None:
        axis["unit"] = "micrometer"
    multiscale: dict[str, Any] = {
        "name": source.name,
        "axes": [{"name": "y", **axis}, {"name": "x", **axis}],
        "datasets": _datasets(source),
        "type": "mode",
        "metadata": {"method": "2x2 mode preferring non-zero labels, ties to smaller id"},
    }
    colors: list[dict[str, Any]] = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    # Every colour has a matching property entry (validators require the same label values).
    properties: list[dict[str, Any]] = [{"label-value": 0, "class": "no label"}]
    for i, cls in enumerate(source.palette.classes):
        colors.append({"label-value": i + 1, "rgba": [*cls.color, 255]})
        properties.append({"label-value": i + 1, "class": cls.name, "color": cls.hex()})
    image_label: dict[str, Any] = {"colors": colors, "properties": properties}
    if version == "0.4":
        multiscale["version"] = "0.4"
        image_label["version"] = "0.4"
        return {"multiscales": [multiscale], "image-label": image_label}
    return {"ome": {"version": "0.5", "multiscales": [multiscale], "image-label": image_label}}


def _replaceable(path: Path) -> bool:
    """Only an OME-Zarr group that is not a label store may be replaced by an export."""
    return is_zarr_group(path) and not LabelStoreBase.is_store(path)


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
    if ngff not in NGFF_VERSIONS:
        raise ValueError(f"NGFF version must be one of {NGFF_VERSIONS}, got {ngff!r}")
    source = as_label_source(labels, palette, **{"chunk": chunk, **source_kwargs})
    block = max(chunk, block // chunk * chunk)
    protect = [Path(source.provenance["store"])] if "store" in source.provenance else []
    plans = [(k, iter_blocks(*source.shape(k), block)) for k in range(source.n_levels)]
    total = sum(len(boxes) for _, boxes in plans)
    done = 0
    with staged_output(
        path, overwrite=overwrite, kind="dir", replaceable=_replaceable, protect=protect
    ) as stage:
        group = zarr.open_group(stage, mode="w-", zarr_format=2 if ngff == "0.4" else 3)
        for k, boxes in plans:
            h, w = source.shape(k)
            arr = _create_level(group, str(k), (h, w), chunk, ngff)
            for box in boxes:
                arr[box.slices()] = source.read(box, k)
                done += 1
                report(progress, done, total)
        attrs = ngff_label_attributes(source, ngff)
        attrs[SGNET_KEY] = source.metadata()
        group.update_attributes(attrs)
    log.info("exported %d label levels to %s (NGFF %s)", source.n_levels, path, ngff)
    return Path(path)


def _create_level(
    group: zarr.Group, name: str, shape: tuple[int, int], chunk: int, ngff: str
) -> zarr.Array:
    chunks = (min(chunk, shape[0]), min(chunk, shape[1]))
    if ngff == "0.4":
        return group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype="uint8",
            fill_value=0,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=("y", "x")
    )


def _palette_from_image_label(image_label: dict[str, Any]) -> Palette:
    colors = {c.get("label-value"): c.get("rgba") for c in image_label.get("colors", [])}
    names = {p.get("label-value"): p.get("class") for p in image_label.get("properties", [])}
    ids = sorted(v for v in set(colors) | set(names) if isinstance(v, int) and v > 0)
    if not ids or ids != list(range(1, len(ids) + 1)):
        raise PaletteError(f"label values {ids} are not 1..n")
    classes = tuple(
        ClassInfo(
            str(names.get(i) or f"label {i}"),
            tuple(int(v) for v in (colors.get(i) or [128, 128, 128])[:3]),  # type: ignore[arg-type]
        )
        for i in ids
    )
    return Palette("imported", classes)


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
        attrs = group.attrs.asdict()
        ome = attrs.get("ome", attrs)
        multiscale = ome["multiscales"][0]
        image_label = ome["image-label"]
        paths = [d["path"] for d in multiscale["datasets"]]
        scales = [
            next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
            for d in multiscale["datasets"]
        ]
        levels = tuple(group[p] for p in paths)
    except (KeyError, IndexError, TypeError, StopIteration, FileNotFoundError) as exc:
        raise StoreError(path, f"not an OME-Zarr label image: {exc!r}") from exc
    except (OSError, ValueError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(path, f"cannot open OME-Zarr labels: {exc}") from exc
    downsamples = tuple(float(s[-1]) / float(scales[0][-1]) for s in scales)
    record = attrs.get(SGNET_KEY) or {}
    try:
        if "palette" in record:
            palette = Palette.from_dict(record["palette"])
        else:
            palette = _palette_from_image_label(image_label)
    except PaletteError as exc:
        raise StoreError(path, f"bad label palette: {exc}") from exc
    if record:
        base, mpp = float(record["base_downsample"]), record.get("mpp")
        offset = tuple(record.get("offset") or (0.0, 0.0))
        size = record.get("slide_size")
    else:
        has_unit = any(a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict))
        base = 1.0 if has_unit else float(scales[0][-1])
        mpp = float(scales[0][-1]) if has_unit else None
        offset, size = (0.0, 0.0), None
    return LabelSource(
        levels=levels,
        downsamples=downsamples,
        palette=palette,
        base_downsample=base,
        mpp=mpp,
        offset=(float(offset[0]), float(offset[1])),
        slide_size=(int(size[0]), int(size[1])) if size else None,
        name=str(multiscale.get("name") or path.stem),
        provenance=dict(record.get("provenance") or {"source": str(path)}),
    )
