"""OME-Zarr label export: an OME-NGFF image-label multiscale group (NGFF 0.4 or 0.5).

The output is one label image group, the layout that lives at
``image.ome.zarr/labels/<name>/`` inside an OME-Zarr image (it can be moved there
as is, or opened on its own): a uint8 pyramid ``0, 1, ...`` with per-level scale in
µm (slide pixels when the µm/px is unknown), the palette as ``image-label.colors``,
class names as ``image-label.properties``, and napari-sgnet's own record under the
``napari_sgnet`` attribute. NGFF 0.5 is zarr v3 (attributes under ``"ome"``);
NGFF 0.4 is zarr v2 with ``/`` chunk keys.

With ``image=`` (the slide) the output is instead an OME-Zarr *image* of the slide
(its pyramid, streamed chunk by chunk, axes ``c, y, x`` in µm) with the labels at
``labels/<label_name>/`` (``image-label.source.image`` ``"../../"``) listed in the
``labels`` group, so OME-Zarr viewers open slide and labels together. The label image
then has one level per image level, on that level's pixel grid (nearest label, read
lazily window by window), as the NGFF validators require.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import zarr

from napari_sgnet.errors import OptionError, StoreError
from napari_sgnet.io._write_common import (
    array_options,
    is_zarr_group,
    write_multiscale,
    zarr_format,
)
from napari_sgnet.io.exporters._common import Progress, iter_blocks, report, staged_output
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.ngff import (
    NGFF_VERSIONS,
    ImageLabel,
    Multiscale,
    check_version,
    label_multiscale,
    labels_attributes,
    multiscale_attributes,
    parse_image_label,
    parse_multiscale,
)
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import length_to_um
from napari_sgnet.palette import Palette, PaletteError

__all__ = ["NGFF_VERSIONS", "export_omezarr", "ngff_label_attributes", "read_omezarr_labels"]

log = logging.getLogger(__name__)

#: Key of napari-sgnet's own record in the group attributes.
SGNET_KEY = "napari_sgnet"
#: Name of the label image written inside an OME-Zarr image of the slide.
DEFAULT_LABEL_NAME = "sgnet"


def ngff_label_attributes(
    source: LabelSource, version: str = "0.5", *, source_image: str | None = None
) -> dict[str, Any]:
    """The group attributes of an OME-NGFF image-label multiscale for ``source``.

    Parameters
    ----------
    source : LabelSource
        The labels (levels, palette, placement).
    version : {"0.4", "0.5"}
        NGFF version: 0.5 nests everything under ``"ome"``.
    source_image : str, optional
        ``image-label.source.image``: the relative path of the image the labels belong
        to (``"../../"`` for labels inside an image's ``labels`` group).

    Returns
    -------
    dict
        Built by :func:`napari_sgnet.io.ngff.multiscale_attributes`.
    """
    factors = [source.slide_scale(k) for k in range(source.n_levels)]
    multiscale = label_multiscale(source.name, factors, source.mpp, offset=source.offset)
    image_label = ImageLabel.from_palette(source.palette, source_image=source_image)
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
    image: Any = None,
    label_name: str = DEFAULT_LABEL_NAME,
    **source_kwargs: Any,
) -> Path:
    """Write labels as an OME-Zarr image-label group, or into an OME-Zarr image of the slide.

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
    image : Pyramid, str or Path, optional
        The slide the labels belong to: write ``path`` as an OME-Zarr image of it with
        the labels at ``labels/<label_name>`` (checked first: the slide's size and µm/px
        must be the labels' slide's).
    label_name : str
        Name of the label image inside the OME-Zarr image (with ``image``).
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
    UserInputError
        When ``image`` is not the slide of the labels (or ``label_name`` is not a name).
    """
    version = check_version(ngff)
    source = as_label_source(labels, palette, **{"chunk": chunk, **source_kwargs})
    block = max(chunk, block // chunk * chunk)
    protect = [Path(source.provenance["store"])] if "store" in source.provenance else []
    slide = None if image is None else _check_slide(image, source, label_name)
    if slide is not None:  # labels inside an image: one label level per image level
        source = source.resampled(
            list(slide.downsamples),
            [(int(a.shape[0]), int(a.shape[1])) for a in slide.levels],
            origin=(0.0, 0.0),
        )
    plans = [(k, iter_blocks(*source.shape(k), block)) for k in range(source.n_levels)]
    image_steps = 0 if slide is None else sum(-(-lvl.shape[0] // chunk) for lvl in slide.levels)
    total = sum(len(boxes) for _, boxes in plans) + image_steps
    done = 0

    def image_band(_pixels: int) -> None:
        nonlocal done
        done += 1
        report(progress, done, total)

    with staged_output(
        path, overwrite=overwrite, kind="dir", replaceable=_replaceable, protect=protect
    ) as stage:
        if slide is None:
            group = zarr.open_group(stage, mode="w-", zarr_format=zarr_format(version))
        else:
            write_multiscale(
                stage,
                list(slide.levels),
                list(slide.downsamples),
                mpp=slide.mpp,
                version=version,
                chunks=chunk,
                progress=image_band,
                name=slide.name,
            )
            root = zarr.open_group(stage, mode="r+")
            listing = root.create_group("labels")
            listing.update_attributes(labels_attributes([label_name], version))
            group = listing.create_group(label_name)
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
        attrs = ngff_label_attributes(
            source, version, source_image=None if slide is None else "../../"
        )
        attrs[SGNET_KEY] = source.metadata()
        group.update_attributes(attrs)
    where = "" if slide is None else f" inside an image of {slide.name} (labels/{label_name})"
    log.info("exported %d label levels to %s%s (NGFF %s)", source.n_levels, path, where, version)
    return Path(path)


def _check_slide(image: Any, source: LabelSource, label_name: str) -> Pyramid:
    """The slide to write with the labels, checked against the labels' slide."""
    from napari_sgnet.io.readers import open_pyramid

    if not label_name or "/" in label_name or label_name.startswith("."):
        raise OptionError(f"invalid label image name {label_name!r}")
    slide = image if isinstance(image, Pyramid) else open_pyramid(image)
    where = slide.source or slide.name
    if source.slide_size is not None and source.slide_size != (slide.width, slide.height):
        w, h = source.slide_size
        raise OptionError(
            f"{where}: the slide is {slide.width} x {slide.height} px but the labels were "
            f"made for a {w} x {h} px slide; pass the slide the labels belong to"
        )
    if source.mpp is not None and slide.mpp is not None:
        if not math.isclose(source.mpp, slide.mpp, rel_tol=1e-3):
            raise OptionError(
                f"{where}: the slide has {slide.mpp} µm/px but the labels were made at "
                f"{source.mpp} µm/px; pass the slide the labels belong to"
            )
    elif source.mpp is not None:
        slide = slide.with_mpp(source.mpp)
    return slide


def _foreign_placement(
    multiscale: Multiscale, x_step: float
) -> tuple[float, float | None, tuple[float, float]]:
    """``(base_downsample, mpp, offset)`` of a label image napari-sgnet did not write.

    With a length unit on x, level 0 is taken as the slide's level 0 (``mpp`` its scale in
    µm); without one, the scale counts slide pixels. Level 0's translation (the placement
    of its first pixel centre, NGFF) gives the offset of its top-left corner.
    """
    unit = next((a.unit for a in multiscale.axes if a.name == "x"), None)
    mpp = length_to_um(x_step, unit)
    base, step = (1.0, x_step) if mpp is not None else (x_step, 1.0)
    translation = multiscale.datasets[0].translation
    offset = (0.0, 0.0)
    if translation is not None and len(translation) >= 2 and step > 0:
        ty, tx = translation[-2], translation[-1]
        offset = (tx / step - (base - 1.0) / 2.0, ty / step - (base - 1.0) / 2.0)
    return base, mpp, offset


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
        base, mpp, offset = _foreign_placement(multiscale, x_scale[0])
        size = None
    try:
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
    except ValueError as exc:  # e.g. a float label level: name the file
        raise StoreError(path, f"not usable as labels: {exc}") from exc
