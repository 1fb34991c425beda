"""The on-disk layout of a label store: what its arrays are, how they are made and checked.

One zarr v3 group per slide, an OME-NGFF 0.5 image-label multiscale::

    store.zarr/
      zarr.json        attributes: "ome" (multiscales + image-label) and "sgnet"
      0, 1, 2, ...     uint8 label pyramid; level 0 is the inference level
                       (``base_downsample`` x the slide's level 0), each next level
                       a 2 x 2 mode of the previous one
      confidence       uint8, level 0: max softmax x 255 (255 for edited pixels)
      edited           uint8 0/1, level 0: pixels a person corrected
      done             uint8 per tile of the tiling grid: 0 to do, 1 predicted, 2 glass
      probabilities    optional uint8 (c, y, x), level 0: per-class softmax x 255,
                       rounded to nearest (ties to even, as the confidence); 0 on glass;
                       made when a run asks for it (``predict --probabilities``); edits
                       do not change it
      sgnet_review/    pending edits and reviewed regions (see ``review_state``)

:class:`StoreLayout` holds the fixed facts of one store (palette, downsample, tiling,
level shapes) as recorded in its ``sgnet`` attributes; :func:`create_group` writes a
new, empty store for a layout and :func:`layout_problems` checks an existing one.
The store's ``"ome"`` attributes come from :mod:`napari_sgnet.io.ngff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.io.labelstore.meta import FORMAT_NAME, FORMAT_VERSION, now_iso, slide_identity
from napari_sgnet.io.labelstore.pyramid import level_shapes
from napari_sgnet.io.ngff import (
    ImageLabel,
    label_multiscale,
    multiscale_attributes,
    parse_multiscale,
)
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = [
    "DONE_CHUNK",
    "PROBABILITIES",
    "StoreLayout",
    "add_probabilities",
    "create_group",
    "current_ngff",
    "layout_problems",
    "level0_shape",
    "open_group",
]

#: Chunk side of the done-map (tiles per chunk side).
DONE_CHUNK = 256

#: Name of the optional per-class probabilities array.
PROBABILITIES = "probabilities"


def level0_shape(slide: Pyramid, base_downsample: float) -> tuple[int, int]:
    """Shape of a store's level 0: the slide level at ``base_downsample`` if it exists."""
    for ds, arr in zip(slide.downsamples, slide.levels, strict=False):
        if abs(ds - base_downsample) <= 1e-6 * max(1.0, base_downsample):
            return int(arr.shape[0]), int(arr.shape[1])
    return (
        int(np.ceil(slide.height / base_downsample)),
        int(np.ceil(slide.width / base_downsample)),
    )


@dataclass(frozen=True)
class StoreLayout:
    """The fixed facts of one label store.

    Parameters
    ----------
    palette : Palette
        Classes of the labels (label id ``k + 1`` is class ``k``).
    base_downsample : float
        Downsample of the store's level 0 relative to the slide's level 0.
    tile : int
        Side of one tile of the done-map's grid, store pixels.
    chunk : int
        Chunk side of every pixel array; divides ``tile``.
    level_shapes : tuple of (int, int)
        ``(h, w)`` of each label level, level 0 first.
    grid_shape : tuple of int
        ``(ny, nx)`` tiles of the done-map.
    """

    palette: Palette
    base_downsample: float
    tile: int
    chunk: int
    level_shapes: tuple[tuple[int, int], ...]
    grid_shape: tuple[int, int]

    @classmethod
    def plan(
        cls, slide: Pyramid, palette: Palette, base_downsample: float, tile: int, chunk: int
    ) -> StoreLayout:
        """The layout of a new store for ``slide`` (checks the tiling)."""
        if tile <= 0 or chunk <= 0 or tile % chunk:
            raise ValueError(f"chunk ({chunk}) must be positive and divide tile ({tile})")
        if base_downsample <= 0:
            raise ValueError(f"base_downsample must be positive, got {base_downsample}")
        h0, w0 = level0_shape(slide, base_downsample)
        shapes = tuple(level_shapes(h0, w0, chunk))
        grid = (-(-h0 // tile), -(-w0 // tile))
        return cls(palette, float(base_downsample), int(tile), int(chunk), shapes, grid)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> StoreLayout:
        """The layout recorded in ``sgnet`` attributes (``KeyError`` etc. when damaged)."""
        shapes = tuple((int(s[0]), int(s[1])) for s in meta["level_shapes"])
        gy, gx = (int(v) for v in meta["grid_shape"])
        return cls(
            palette=Palette.from_dict(meta["palette"]),
            base_downsample=float(meta["base_downsample"]),
            tile=int(meta["tile"]),
            chunk=int(meta["chunk"]),
            level_shapes=shapes,
            grid_shape=(gy, gx),
        )

    def to_meta(self) -> dict[str, Any]:
        """The layout's part of the ``sgnet`` attributes."""
        return {
            "palette": self.palette.to_dict(),
            "base_downsample": self.base_downsample,
            "tile": self.tile,
            "chunk": self.chunk,
            "level_shapes": [list(s) for s in self.level_shapes],
            "grid_shape": list(self.grid_shape),
        }

    def ngff_attributes(self, name: str, mpp: float | None) -> dict[str, Any]:
        """The ``"ome"`` attributes: an NGFF 0.5 image-label over the slide's level 0."""
        factors = [self.base_downsample * 2**k for k in range(len(self.level_shapes))]
        return multiscale_attributes(
            label_multiscale(name, factors, mpp),
            "0.5",
            image_label=ImageLabel.from_palette(self.palette),
        )


def _new_array(group: zarr.Group, name: str, shape: tuple[int, int], chunk: int) -> None:
    chunks = (min(chunk, shape[0]), min(chunk, shape[1]))
    group.create_array(
        name, shape=shape, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=("y", "x")
    )


def add_probabilities(group: zarr.Group, layout: StoreLayout) -> zarr.Array:
    """Create the optional ``probabilities`` array, ``(classes, h, w)`` uint8 at level 0,
    chunked ``(classes, chunk, chunk)`` like the labels (so a tile's write covers whole chunks
    and a crash leaves each chunk old or new); returns it (the existing one if present)."""
    existing = group.get(PROBABILITIES)
    if isinstance(existing, zarr.Array):
        return existing
    k = layout.palette.num_classes
    h, w = layout.level_shapes[0]
    return group.create_array(
        PROBABILITIES,
        shape=(k, h, w),
        chunks=(k, min(layout.chunk, h), min(layout.chunk, w)),
        dtype="uint8",
        fill_value=0,
        dimension_names=("c", "y", "x"),
    )


def open_group(path: Path, mode: str) -> zarr.Group:
    """Open the zarr group of an existing store (``mode`` ``"r"`` or ``"r+"``).

    Raises
    ------
    StoreError
        When ``path`` is missing or not a zarr group.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not path.exists():
        raise StoreError(path, "label store does not exist")
    try:
        return zarr.open_group(path, mode=mode)
    except zarr.errors.GroupNotFoundError as exc:
        raise StoreError(path, "is not a napari-sgnet label store (no zarr group)") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(path, f"cannot open label store: {exc}") from exc


def create_group(
    path: Path, layout: StoreLayout, slide: Pyramid, final_path: Path | None = None
) -> zarr.Group:
    """Write a new, empty store for ``slide`` at ``path`` (which must not exist).

    The attributes are written last: a folder without them is not a store and is never
    trusted, so a crash during creation leaves nothing that opens as one. ``final_path`` is
    where the store will live when ``path`` is a temporary sibling (the slide's path
    relative to the store is recorded for it).
    """
    from napari_sgnet.io.labelstore.slide_ref import slide_reference

    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": now_iso(),
        "slide": {**slide_identity(slide), **slide_reference(slide.source, final_path or path)},
        **layout.to_meta(),
        "model": None,
        "requests": [],
        "n_requests": 0,
        "commits": [],
    }
    group = zarr.open_group(path, mode="w-")
    for k, shape in enumerate(layout.level_shapes):
        _new_array(group, str(k), shape, layout.chunk)
    _new_array(group, "confidence", layout.level_shapes[0], layout.chunk)
    _new_array(group, "edited", layout.level_shapes[0], layout.chunk)
    _new_array(group, "done", layout.grid_shape, DONE_CHUNK)
    ome = layout.ngff_attributes(f"{slide.name} labels", slide.mpp)
    group.update_attributes({**ome, "sgnet": meta})
    return group


def current_ngff(layout: StoreLayout, attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The ``"ome"`` attributes this napari-sgnet writes for a store, when they differ
    from those in ``attrs`` (a store written by an earlier version); ``None`` when equal.

    Only metadata is rebuilt (the multiscale's name and the slide's µm/px are kept), so
    an older store comes to validate as NGFF without its pixels or ``sgnet`` record changing.
    """
    sgnet = attrs.get("sgnet") or {}
    slide = sgnet.get("slide") or {}
    try:
        name = parse_multiscale(attrs).name
    except ValueError:
        name = None
    mpp = slide.get("mpp")
    built = layout.ngff_attributes(
        name or f"{slide.get('name') or 'slide'} labels",
        float(mpp) if mpp is not None else None,
    )
    return None if attrs.get("ome") == built["ome"] else built


def layout_problems(layout: StoreLayout, group: zarr.Group, *, deep: bool = False) -> list[str]:
    """Every way the arrays and NGFF attributes of ``group`` differ from ``layout``.

    ``deep`` also scans the done-map values and the label ids (when nothing else is wrong).
    """
    problems = []
    h, w = layout.level_shapes[0]
    expected = level_shapes(h, w, layout.chunk)
    if expected != list(layout.level_shapes):
        problems.append(f"level shapes {list(layout.level_shapes)} != expected {expected}")
    for k, shape in enumerate(layout.level_shapes):
        arr = group.get(str(k))
        if not isinstance(arr, zarr.Array) or arr.shape != shape or arr.dtype != np.uint8:
            got = f"{arr.shape} {arr.dtype}" if isinstance(arr, zarr.Array) else "missing"
            problems.append(f"level {k} is {got}, expected {shape} uint8")
    for name in ("confidence", "edited"):
        arr = group.get(name)
        if not isinstance(arr, zarr.Array) or arr.shape != (h, w):
            got = arr.shape if isinstance(arr, zarr.Array) else "missing"
            problems.append(f"{name} is {got}, expected {(h, w)}")
    probs = group.get(PROBABILITIES)
    if probs is not None:  # optional; when present it must fit
        want = (layout.palette.num_classes, h, w)
        if not isinstance(probs, zarr.Array) or probs.shape != want or probs.dtype != np.uint8:
            got = f"{probs.shape} {probs.dtype}" if isinstance(probs, zarr.Array) else "a group"
            problems.append(f"{PROBABILITIES} is {got}, expected {want} uint8")
    grid = (-(-h // layout.tile), -(-w // layout.tile))
    done = group.get("done")
    if not isinstance(done, zarr.Array) or done.shape != grid or layout.grid_shape != grid:
        got = done.shape if isinstance(done, zarr.Array) else "missing"
        problems.append(f"done-map is {got}, expected {grid}")
    if layout.tile % layout.chunk:
        problems.append(f"chunk {layout.chunk} does not divide tile {layout.tile}")
    try:
        paths = [d.path for d in parse_multiscale(group.attrs.asdict()).datasets]
    except ValueError:
        paths = []
    if paths != [str(k) for k in range(len(layout.level_shapes))]:
        problems.append("OME-NGFF multiscales datasets do not list the label levels")
    if deep and not problems:
        done = np.asarray(group["done"][...])
        if not np.isin(done, (0, 1, 2)).all():
            problems.append(f"done-map holds values {np.unique(done).tolist()}")
        n = len(layout.level_shapes)
        top = max(int(np.asarray(group[str(k)][...]).max()) for k in range(n))
        if top > layout.palette.num_classes:
            problems.append(f"label id {top} exceeds {layout.palette.num_classes} classes")
    return problems
