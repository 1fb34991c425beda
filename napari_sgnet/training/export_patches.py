"""Training patches from a person's corrections: the fine-tuning half of the review loop.

Only regions a person edited are exported (the store's ``edited`` mask). Each edited
region's bounding box is tiled with the model's local patch size; every tile that
holds edited pixels becomes one :class:`~napari_sgnet.training.patches.PatchItem`:
the slide's local and surrounding crops at the model's working level (the store's
level 0, read as the engine read it: :func:`working_view`; glass past the slide edge), their
label masks, and a manifest entry with the slide, the box (store level-0 pixels, plus slide
level-0 pixels and the working resolution in ``meta``) and the model id. The folder is
written with :func:`~napari_sgnet.training.patches.write_patch_folder` into a staging folder
moved into place at the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from napari_sgnet.errors import OptionError, SlideError, StoreError
from napari_sgnet.geometry import Box, context_box, scale_box
from napari_sgnet.io.exporters._common import Progress, report, staged_output
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD
from napari_sgnet.io.working import WorkingLevel, store_working_level
from napari_sgnet.training.patches import MANIFEST, PatchItem, write_patch_folder

__all__ = [
    "edited_regions",
    "export_patches",
    "open_slide",
    "plan_patches",
    "read_slide_at",
    "working_view",
]

log = logging.getLogger(__name__)

MaskMode = Literal["edited", "all"]


def open_slide(path: str | Path) -> Pyramid:
    """Open a slide with the project's readers (imported lazily)."""
    try:
        from napari_sgnet.io import open_pyramid  # type: ignore[attr-defined]
    except ImportError:
        try:
            from napari_sgnet.io.readers import open_pyramid  # type: ignore[attr-defined]
        except ImportError as exc:
            raise SlideError(path, "no slide readers are available in this installation") from exc
    return open_pyramid(path)


def edited_regions(store: LabelStore, block_chunks: int = 8) -> list[Box]:
    """Bounding boxes (store level-0 pixels) of the connected edited areas.

    The ``edited`` mask is scanned in blocks of ``block_chunks`` x ``block_chunks``
    chunks; chunk cells holding edits are grouped 8-connectedly and each group's box
    is the exact union of its edited pixels. Row-major order of the top-left corner.
    """
    cell = store.chunk
    ny, nx = -(-store.height // cell), -(-store.width // cell)
    bounds = np.full((ny, nx, 4), -1, dtype=np.int64)  # x0, y0, x1, y1 per cell
    step = cell * block_chunks
    for by in range(0, store.height, step):
        for bx in range(0, store.width, step):
            block = Box(bx, by, step, step).clip(store.width, store.height)
            edited = store.read_edited(block).astype(bool)
            if not edited.any():
                continue
            for cy in range(0, block.h, cell):
                for cx in range(0, block.w, cell):
                    sub = edited[cy : cy + cell, cx : cx + cell]
                    rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
                    if rows.size:
                        x0, y0 = block.x + cx, block.y + cy
                        bounds[(block.y + cy) // cell, (block.x + cx) // cell] = (
                            x0 + cols[0],
                            y0 + rows[0],
                            x0 + cols[-1] + 1,
                            y0 + rows[-1] + 1,
                        )
    groups, n = ndimage.label(bounds[..., 0] >= 0, structure=np.ones((3, 3), dtype=bool))
    regions = []
    for index in range(1, n + 1):
        b = bounds[groups == index]
        regions.append(Box.from_bounds(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
    return sorted(regions, key=lambda r: (r.y, r.x))


def _axis_tiles(start: int, length: int, patch: int, size: int) -> list[int]:
    """Tile origins covering ``[start, start + length)``, centred on it, kept inside ``size``."""
    n = max(1, -(-length // patch))
    first = start + (length - n * patch) // 2
    origins = [first + i * patch for i in range(n)]
    if size >= patch:
        origins = [min(max(o, 0), size - patch) for o in origins]
    return sorted(set(origins))


def plan_patches(regions: list[Box], patch_size: int, width: int, height: int) -> list[Box]:
    """Local patches (``patch_size`` a side) tiling each region's box, deduplicated.

    Tiles are centred on each region and shifted inside the store when it is large
    enough; overlapping regions may share identical tiles, which are kept once.
    """
    seen: dict[tuple[int, int], Box] = {}
    for r in regions:
        for y in _axis_tiles(r.y, r.h, patch_size, height):
            for x in _axis_tiles(r.x, r.w, patch_size, width):
                seen.setdefault((y, x), Box(x, y, patch_size, patch_size))
    return [seen[k] for k in sorted(seen)]


def working_view(store: LabelStore, slide: Pyramid) -> WorkingLevel:
    """The slide's working level that is ``store``'s level 0: the pixels the model saw.

    Read through :func:`~napari_sgnet.io.working.store_working_level` (the engine's reader,
    from the store's recorded resolution, else its downsample).

    Raises
    ------
    StoreError
        The slide's working level is not the store's level-0 grid.
    """
    work = store_working_level(slide, store.resolution, store.base_downsample)
    ds = store.base_downsample
    if work.size != (store.width, store.height) or not math.isclose(
        work.downsample, ds, rel_tol=1e-3
    ):
        raise StoreError(
            store.path,
            f"its level 0 ({store.width} x {store.height} px, downsample {ds:g}) is not "
            f"{work.describe()} of {slide.name!r} ({work.width} x {work.height} px)",
        )
    return work


def read_slide_at(work: WorkingLevel, box: Box) -> np.ndarray:
    """RGB crop of the working level (``box`` in its pixels), glass past the edge."""
    return _rgb(work.read(box, pad_value=GLASS_PAD))


def _rgb(data: np.ndarray) -> np.ndarray:
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    return np.ascontiguousarray(data[..., :3], dtype=np.uint8)


def _masks(store: LabelStore, box: Box, mode: MaskMode) -> tuple[np.ndarray, np.ndarray]:
    labels = store.read_labels(box)
    edited = store.read_edited(box)
    if mode == "edited":
        labels = np.where(edited > 0, labels, 0).astype(np.uint8)
    return labels, edited


def _model_geometry(
    store: LabelStore, patch_size: int | None, context_factor: float | None
) -> tuple[int, float, str | None]:
    model: dict[str, Any] = store.model or {}
    size = patch_size or model.get("patch_size")
    if not size:
        raise OptionError(f"{store.path}: the store records no model patch size; pass patch_size")
    factor = context_factor or model.get("context_factor") or 2.0
    return int(size), float(factor), model.get("id")


def export_patches(
    store: LabelStore,
    slide: Pyramid | str | Path,
    out: str | Path,
    *,
    patch_size: int | None = None,
    context_factor: float | None = None,
    masks: MaskMode = "edited",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Export training patches around a store's edited regions.

    Parameters
    ----------
    store : LabelStore
        Labels with a person's corrections.
    slide : Pyramid or path
        The slide the store was made for (checked).
    out : str or Path
        Output patch folder.
    patch_size, context_factor : optional
        Local patch side (store level-0 pixels) and surrounding-patch factor; default
        to the model recorded in the store (factor 2 when it has no context branch).
    masks : {"edited", "all"}
        ``"edited"``: only corrected pixels carry labels (others 0, ignored in training);
        ``"all"``: the store's labels everywhere in the patch.
    overwrite : bool
        Replace an existing patch folder at ``out``.
    progress : callable, optional
        ``progress(done, total)`` after each patch.

    Returns
    -------
    Path
        ``out`` (its ``manifest.json`` lists the patches).

    Raises
    ------
    StoreError
        If ``out`` exists (without ``overwrite``), the store does not belong to ``slide``, or
        the slide's working level is not the store's level 0 (:func:`working_view`).
    """
    if masks not in ("edited", "all"):
        raise OptionError(f"masks must be 'edited' or 'all', got {masks!r}")
    pyramid = slide if isinstance(slide, Pyramid) else open_slide(slide)
    store.check_slide(pyramid)
    size, factor, model_id = _model_geometry(store, patch_size, context_factor)
    regions = edited_regions(store)
    tiles = plan_patches(regions, size, store.width, store.height)
    log.info("%d edited region(s) -> %d candidate patch(es)", len(regions), len(tiles))
    work = working_view(store, pyramid)
    ds = store.base_downsample
    mpp = work.mpp
    level = work.level if work.exact else None
    source = str(pyramid.source) if pyramid.source is not None else pyramid.name

    def items() -> Iterator[PatchItem]:
        for i, local in enumerate(tiles):
            report(progress, i + 1, len(tiles))
            local_mask, edited = _masks(store, local, masks)
            if not edited.any():
                continue
            ctx = context_box(local, factor)
            context_mask, _ = _masks(store, ctx, masks)
            offset = local.relative_to(ctx)
            yield PatchItem(
                local=read_slide_at(work, local),
                context=read_slide_at(work, ctx),
                local_mask=local_mask,
                context_mask=context_mask,
                offset=(offset.x, offset.y),
                slide=source,
                level=level,
                mpp=mpp,
                local_box=local,
                model_id=model_id,
                meta={
                    "slide_box": list(scale_box(local, ds).as_tuple()),
                    "base_downsample": ds,
                    "resolution": work.record(),
                    "edited_fraction": round(float(edited.mean()), 6),
                    "masks": masks,
                    "store": str(store.path),
                },
            )

    out = Path(out)
    with staged_output(
        out, overwrite=overwrite, kind="dir", replaceable=lambda p: (p / MANIFEST).is_file()
    ) as stage:
        write_patch_folder(
            stage, items(), store.palette, mpp=mpp, patch_size=size, context_factor=factor
        )
    return out
