"""Label-mask export as a tiled, pyramidal OME-TIFF.

uint8 label ids, lossless deflate (zlib), 256 x 256 tiles, the coarser levels as
SubIFDs (the label pyramid: 2 x 2 modes, never means). The palette travels twice:
as the TIFF colour map (``Photometric = palette``, so viewers show class colours
while the pixel values stay the label ids) and in the OME-XML as a ``MapAnnotation``
(label id -> class name; 0 is "no label": glass or not predicted) plus a
``CommentAnnotation`` holding napari-sgnet's JSON record (palette, placement on the slide,
provenance). Physical pixel size (µm) is set per level when the slide's µm/px is known.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io._write_common import ome_physical_size, tiff_resolution
from napari_sgnet.io.exporters._common import Progress, report, staged_output
from napari_sgnet.io.exporters.source import LabelSource, as_label_source
from napari_sgnet.palette import NO_LABEL_MEANING, Palette, PaletteError

__all__ = ["PALETTE_NAMESPACE", "RECORD_NAMESPACE", "export_tiff", "read_tiff_record"]

log = logging.getLogger(__name__)

PALETTE_NAMESPACE = "napari-sgnet/palette"
RECORD_NAMESPACE = "napari-sgnet/labels+json"


def tiff_colormap(palette: Palette) -> np.ndarray:
    """The ``(3, 256)`` uint16 TIFF colour map of a palette (label 0 black)."""
    cmap = np.zeros((3, 256), dtype=np.uint16)
    for i, cls in enumerate(palette.classes):
        cmap[:, i + 1] = np.asarray(cls.color, dtype=np.uint16) * 257
    return cmap


def _tiles(source: LabelSource, level: int, tile: int, on_row: Any) -> Iterator[np.ndarray]:
    """Row-major, full-size (edge-padded) tiles of one level, one tile row read at a time.

    ``on_row`` is called as each row is read: tifffile stops consuming the generator
    after the last tile, so code after the final ``yield`` would never run.
    """
    h, w = source.shape(level)
    for y in range(0, h, tile):
        band = source.read(Box(0, y, -(-w // tile) * tile, tile), level)
        on_row()
        for x in range(0, w, tile):
            yield band[:, x : x + tile]


def _resolution(source: LabelSource, level: int) -> dict[str, Any]:
    mpp = source.level_mpp(level)
    return {} if mpp is None else tiff_resolution(mpp)


def export_tiff(
    labels: Any,
    path: str | Path,
    *,
    tile: int = 256,
    overwrite: bool = False,
    progress: Progress | None = None,
    palette: Palette | None = None,
    **source_kwargs: Any,
) -> Path:
    """Write labels as a tiled pyramidal OME-TIFF of uint8 label ids.

    Parameters
    ----------
    labels : LabelStore, LabelSource, array-like or list of array-likes
        What to export (see :func:`~napari_sgnet.io.exporters.as_label_source`).
    path : str or Path
        Output file (conventionally ``<name>.ome.tif``).
    tile : int
        Tile side (a multiple of 16).
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
    """
    if tile <= 0 or tile % 16:
        raise ValueError(f"TIFF tile side must be a positive multiple of 16, got {tile}")
    source = as_label_source(labels, palette, **source_kwargs)
    cmap = tiff_colormap(source.palette)
    total = sum(-(-source.shape(k)[0] // tile) for k in range(source.n_levels))
    done = [0]

    def on_row() -> None:
        done[0] += 1
        report(progress, done[0], total)

    mpp = source.level_mpp(0)
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
        "CommentAnnotation": {
            "Namespace": RECORD_NAMESPACE,
            "Value": json.dumps(source.metadata()),
        },
    }
    if mpp is not None:
        metadata.update(ome_physical_size(mpp))
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "compression": "zlib",
        "photometric": "palette",
        "colormap": cmap,
    }
    with staged_output(path, overwrite=overwrite, kind="file") as stage:
        with tifffile.TiffWriter(stage, bigtiff=True, ome=True) as tw:
            for k in range(source.n_levels):
                extra: dict[str, Any] = (
                    {"subifds": source.n_levels - 1, "metadata": metadata}
                    if k == 0
                    else {"subfiletype": 1}
                )
                tw.write(
                    _tiles(source, k, tile, on_row),
                    shape=source.shape(k),
                    **common,
                    **_resolution(source, k),
                    **extra,
                )
    log.info("exported %d-level label TIFF to %s", source.n_levels, path)
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
