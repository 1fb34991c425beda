"""Probabilities export: a label store's per-class probabilities as an OME-Zarr image.

The output is one OME-NGFF 0.5 image group (zarr v3) with axes ``c, y, x``: channel ``k``
is class ``k`` of the store's palette (the channel label in ``omero.channels`` is the class
name, its colour the class colour), values are uint8 softmax x 255 as kept by the store
(``predict --probabilities``), the spatial scale is in µm (slide pixels when the µm/px is
unknown) and each level's translation puts its pixel centres where the level-0 pixels they
cover have theirs, exactly like the label export. Coarser levels are 2 x 2 means (rounded
to nearest) of the level below, down to one chunk. napari-sgnet's record (palette,
placement, provenance) is under the ``napari_sgnet`` attribute.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io._write_common import array_options, is_zarr_group, zarr_format
from napari_sgnet.io.exporters._common import Progress, iter_blocks, report, staged_output
from napari_sgnet.io.exporters.source import as_label_source
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.ngff import (
    Multiscale,
    check_version,
    level_datasets,
    multiscale_attributes,
    spatial_axes,
)

__all__ = ["export_probabilities", "probability_levels"]

log = logging.getLogger(__name__)

#: Key of napari-sgnet's own record in the group attributes.
SGNET_KEY = "napari_sgnet"


def probability_levels(height: int, width: int, chunk: int) -> list[tuple[int, int]]:
    """``(h, w)`` of each level: halved (rounded up) until a level fits in one chunk."""
    shapes = [(height, width)]
    while max(shapes[-1]) > chunk:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def _mean2x2(block: np.ndarray) -> np.ndarray:
    """2 x 2 mean of a ``(c, h, w)`` uint8 block (odd edges repeat), rounded to nearest."""
    _, h, w = block.shape
    padded = np.pad(block, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge").astype(np.uint16)
    total = padded[:, 0::2, 0::2] + padded[:, 1::2, 0::2] + padded[:, 0::2, 1::2]
    total += padded[:, 1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def _replaceable(path: Path) -> bool:
    return is_zarr_group(path) and not LabelStore.is_store(path)


def export_probabilities(
    store: Any,
    path: str | Path,
    *,
    chunk: int = 512,
    block: int = 2048,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a store's per-class probabilities as an OME-Zarr (NGFF 0.5) image.

    Parameters
    ----------
    store : LabelStore
        A store that keeps probabilities (made with ``predict --probabilities``).
    path : str or Path
        Output folder (conventionally ``<slide>.probabilities.ome.zarr``).
    chunk : int
        Chunk side (y, x) of the written arrays; a chunk holds every channel.
    block : int
        Side of the blocks read and written at a time (rounded to whole chunks).
    overwrite : bool
        Replace an existing OME-Zarr group at ``path`` (never a label store).
    progress : callable, optional
        ``progress(done, total)`` after each block.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    StoreError
        When ``store`` is not a label store or keeps no probabilities, or ``path`` exists
        (without ``overwrite``) or cannot be written.
    """
    if not isinstance(store, LabelStore):
        raise StoreError(Path(str(path)), "probabilities are exported from a label store")
    if not store.has_probabilities:
        raise StoreError(
            store.path,
            "keeps no per-class probabilities; predict with --probabilities into a new store "
            "(or --overwrite) to keep them",
        )
    version = check_version("0.5")
    source = as_label_source(store)
    probs = store.probabilities_as_dask()
    k = int(probs.shape[0])
    block = max(chunk, block // chunk * chunk)
    shapes = probability_levels(int(probs.shape[1]), int(probs.shape[2]), chunk)
    plans = [iter_blocks(h, w, block) for h, w in shapes]
    total = sum(len(p) for p in plans)
    done = 0
    palette = store.palette
    with staged_output(
        path, overwrite=overwrite, kind="dir", replaceable=_replaceable, protect=[store.path]
    ) as stage:
        group = zarr.open_group(stage, mode="w-", zarr_format=zarr_format(version))
        arrays: list[zarr.Array[Any]] = []
        for level, ((h, w), boxes) in enumerate(zip(shapes, plans, strict=True)):
            arr = group.create_array(
                str(level),
                shape=(k, h, w),
                chunks=(k, min(chunk, h), min(chunk, w)),
                dtype="uint8",
                fill_value=0,
                **array_options(version, ("c", "y", "x")),
            )
            for box in boxes:
                if level == 0:
                    data = store.read_probabilities(box)
                else:
                    below = arrays[-1]
                    src = Box(2 * box.x, 2 * box.y, 2 * box.w, 2 * box.h).clip(
                        below.shape[2], below.shape[1]
                    )
                    data = _mean2x2(np.asarray(below[(slice(None), *src.slices())]))
                    data = data[:, : box.h, : box.w]
                arr[(slice(None), *box.slices())] = data
                done += 1
                report(progress, done, total)
            arrays.append(arr)
        factors = [source.slide_scale(0) * 2**level for level in range(len(shapes))]
        mpp = source.mpp
        multiscale = Multiscale(
            axes=spatial_axes("micrometer" if mpp is not None else None, channel=True),
            datasets=level_datasets(
                factors,
                mpp if mpp is not None else 1.0,
                centred=True,
                offset=source.offset,
                leading=(1.0,),
            ),
            name=f"{source.name} probabilities",
            type="mean",
        )
        omero = {
            "channels": [
                {
                    "label": cls.name,
                    "color": "".join(f"{v:02X}" for v in cls.color[:3]),
                    "active": True,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for cls in palette.classes
            ],
            "rdefs": {"model": "color"},
        }
        attrs = multiscale_attributes(multiscale, version, omero=omero)
        attrs[SGNET_KEY] = {
            **source.metadata(),
            "format": "napari-sgnet-probabilities",
            "values": "softmax x 255, uint8, rounded to nearest (ties to even); 0 on glass",
            "channels": [cls.name for cls in palette.classes],
        }
        group.update_attributes(attrs)
    log.info("exported %d probability channels x %d levels to %s", k, len(shapes), path)
    return Path(path)
