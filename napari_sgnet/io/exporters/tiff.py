"""Label-mask export as a tiled, pyramidal OME-TIFF of grey label ids.

By default the mask is at the slide's level-0 resolution (``tiff_level="slide"``): each
label pixel of the working level is repeated over the slide pixels it covers (nearest),
computed tile by tile as the file is written, so a slide-sized level is never held in
memory. ``tiff_level="working"`` writes the labels' own levels instead (the model's
working resolution and its 2 x 2 modes).

The file: uint8 label ids (``Photometric = minisblack``: the pixel values are the ids,
no colour map), lossless deflate (zlib), ``tile`` x ``tile`` tiles, each next level 2x
coarser. The levels are written twice: as SubIFDs of the one OME image (how OME-TIFF
readers, tifffile and tiffslide find a pyramid) and, from level 1 on, as reduced-
resolution pages of the main IFD chain (how OpenSlide's generic-TIFF reader finds one).
The OME-XML carries ``PhysicalSizeX/Y`` (µm, level 0) when the slide's µm/px is known,
a ``MapAnnotation`` (label id -> class name; 0 is "no label": glass or not predicted)
and a ``CommentAnnotation`` with napari-sgnet's JSON record (the palette with its
colours, placement on the slide, provenance); every level has its TIFF resolution.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from napari_sgnet.errors import OptionError, StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io._write_common import ome_physical_size, tiff_resolution
from napari_sgnet.io.exporters._common import Progress, report, staged_output
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.palette import NO_LABEL_MEANING, Palette, PaletteError

__all__ = [
    "PALETTE_NAMESPACE",
    "RECORD_NAMESPACE",
    "TIFF_LEVELS",
    "export_tiff",
    "read_tiff_record",
]

log = logging.getLogger(__name__)

PALETTE_NAMESPACE = "napari-sgnet/palette"
RECORD_NAMESPACE = "napari-sgnet/labels+json"
#: Resolutions of the mask's level 0: the slide's level 0, or the labels' working level.
TIFF_LEVELS = ("slide", "working")
#: Bytes of label tiles read at once (bounds memory on wide slides).
_READ_BYTES = 16 * 2**20


def _tiles(
    source: LabelSource, level: int, tile: int, on_row: Callable[[], None]
) -> Iterator[np.ndarray]:
    """Row-major, full-size (zero-padded) tiles of one level.

    Each tile row is read in windows of at most :data:`_READ_BYTES`. ``on_row`` is
    called as each row is read: tifffile stops consuming the generator after the last
    tile, so code after the final ``yield`` would never run.
    """
    h, w = source.shape(level)
    per_read = max(1, _READ_BYTES // (tile * tile))
    n_cols = -(-w // tile)
    for y in range(0, h, tile):
        on_row()
        for c0 in range(0, n_cols, per_read):
            c1 = min(n_cols, c0 + per_read)
            band = source.read(Box(c0 * tile, y, (c1 - c0) * tile, tile), level)
            for c in range(c1 - c0):
                yield band[:, c * tile : (c + 1) * tile]


def _resolution(source: LabelSource, level: int) -> dict[str, Any]:
    mpp = source.level_mpp(level)
    return {} if mpp is None else tiff_resolution(mpp)


def _ome_metadata(source: LabelSource, tiff_level: str) -> dict[str, Any]:
    record = {**source.metadata(), "tiff_level": tiff_level}
    metadata: dict[str, Any] = {
        "axes": "YX",
        "Name": source.name,
        "MapAnnotation": {
            "Namespace": PALETTE_NAMESPACE,
            "Value": {
                "0": NO_LABEL_MEANING,
                **{str(i + 1): c.name for i, c in enumerate(source.palette.classes)},
            },
        },
        "CommentAnnotation": {"Namespace": RECORD_NAMESPACE, "Value": json.dumps(record)},
    }
    mpp = source.level_mpp(0)
    if mpp is not None:
        metadata.update(ome_physical_size(mpp))
    return metadata


def export_tiff(
    labels: Any,
    path: str | Path,
    *,
    tile: int = 512,
    tiff_level: Literal["slide", "working"] = "slide",
    overwrite: bool = False,
    progress: Progress | None = None,
    palette: Palette | None = None,
    **source_kwargs: Any,
) -> Path:
    """Write labels as a tiled pyramidal OME-TIFF of uint8 grey label ids.

    Parameters
    ----------
    labels : LabelStore, LabelSource, array-like or list of array-likes
        What to export (see :func:`~napari_sgnet.io.exporters.as_label_source`).
    path : str or Path
        Output file (conventionally ``<name>.labels.ome.tif``).
    tile : int
        Tile side (a multiple of 16).
    tiff_level : {"slide", "working"}
        Level 0 at the slide's level-0 resolution (default; labels repeated by nearest,
        tile by tile), or at the labels' own working resolution.
    overwrite : bool
        Replace an existing file.
    progress : callable, optional
        ``progress(done, total)`` as each tile row is read.
    palette : Palette, optional
        Classes of an array input (default Gleason).
    **source_kwargs
        Placement of an array input (``mpp``, ``base_downsample``, ``offset``, ...).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OptionError
        For a bad ``tile`` or ``tiff_level`` (before anything is written).
    StoreError
        When ``path`` exists (without ``overwrite``) or cannot be written.
    """
    if tile <= 0 or tile % 16:
        raise OptionError(f"TIFF tile side must be a positive multiple of 16, got {tile}")
    if tiff_level not in TIFF_LEVELS:
        raise OptionError(f"tiff_level must be one of {TIFF_LEVELS}, got {tiff_level!r}")
    source = as_label_source(labels, palette, **source_kwargs)
    if tiff_level == "slide":
        source = source.on_slide_grid(min_side=tile)
    rows = [-(-source.shape(k)[0] // tile) for k in range(source.n_levels)]
    total = sum(rows) + sum(rows[1:])  # the reduced levels are written twice
    done = [0]

    def on_row() -> None:
        done[0] += 1
        report(progress, done[0], total)

    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "compression": "zlib",
        "photometric": "minisblack",
        "maxworkers": os.cpu_count() or 1,
    }
    with staged_output(path, overwrite=overwrite, kind="file") as stage:
        with tifffile.TiffWriter(stage, bigtiff=True, ome=True) as tw:
            for k in range(source.n_levels):
                extra: dict[str, Any] = (
                    {"subifds": source.n_levels - 1, "metadata": _ome_metadata(source, tiff_level)}
                    if k == 0
                    else {"subfiletype": 1, "metadata": None}
                )
                tw.write(
                    _tiles(source, k, tile, on_row),
                    shape=source.shape(k),
                    **common,
                    **_resolution(source, k),
                    **extra,
                )
        if source.n_levels > 1:  # the same levels in the main IFD chain, for OpenSlide
            with tifffile.TiffWriter(stage, bigtiff=True, append="force") as tw:
                for k in range(1, source.n_levels):
                    tw.write(
                        _tiles(source, k, tile, on_row),
                        shape=source.shape(k),
                        subfiletype=1,
                        metadata=None,
                        **common,
                        **_resolution(source, k),
                    )
    h, w = source.shape(0)
    log.info("exported %d-level %d x %d label TIFF to %s", source.n_levels, w, h, path)
    return Path(path)


def read_tiff_record(path: str | Path) -> dict[str, Any]:
    """napari-sgnet's JSON record (palette, placement, provenance) from an exported TIFF.

    Raises
    ------
    StoreError
        When the file has no such record or it is malformed.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tf:
            xml = tf.ome_metadata
        if not xml:
            raise StoreError(path, "has no OME-XML metadata (not a napari-sgnet label TIFF)")
        root = ET.fromstring(xml)
    except (OSError, tifffile.TiffFileError, ET.ParseError) as exc:
        raise StoreError(path, f"cannot read TIFF metadata: {exc}") from exc
    for element in root.iter():
        if element.tag.endswith("CommentAnnotation") and element.get("Namespace") == (
            RECORD_NAMESPACE
        ):
            value = next((c.text for c in element if c.tag.endswith("Value")), None)
            try:
                record: dict[str, Any] = json.loads(value or "")
                Palette.from_dict(record["palette"])
            except (json.JSONDecodeError, KeyError, TypeError, PaletteError) as exc:
                raise StoreError(path, f"malformed napari-sgnet record: {exc}") from exc
            return record
    raise StoreError(path, "has no napari-sgnet label record")
