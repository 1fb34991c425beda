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

``layout="pairs"`` writes a flat folder instead (``images/<id>.png``, ``masks/<id>.png`` and
``patches.csv``, see :func:`export_patches`) that common training tools read directly. With no
corrected regions nothing is written and :class:`NoCorrectionsError` is raised.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy import ndimage

from napari_sgnet.errors import OptionError, SlideError, StoreError, UserInputError
from napari_sgnet.geometry import Box, context_box, scale_box
from napari_sgnet.io.exporters._common import Progress, report, staged_output
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD
from napari_sgnet.io.working import WorkingLevel, store_working_level
from napari_sgnet.training.patches import MANIFEST, PatchItem, write_patch_folder

__all__ = [
    "PAIRS_CSV",
    "NoCorrectionsError",
    "edited_regions",
    "export_patches",
    "open_slide",
    "plan_patches",
    "read_slide_at",
    "working_view",
]

log = logging.getLogger(__name__)

MaskMode = Literal["edited", "all"]
Layout = Literal["items", "pairs"]
#: The table of a ``layout="pairs"`` export.
PAIRS_CSV = "patches.csv"


class NoCorrectionsError(UserInputError):
    """The store has no corrected regions, so there are no training patches to export."""

    def __init__(self, store_path: str | Path) -> None:
        self.path = Path(store_path)
        super().__init__(
            f"{self.path}: no corrections to export (the store has no corrected regions; "
            "commit some edits first)"
        )


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
    layout: Layout = "items",
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
    layout : {"items", "pairs"}
        ``"items"`` (default): the patch folder of
        :func:`~napari_sgnet.training.patches.write_patch_folder` (``items/<id>/``, local and
        surrounding patches, ``manifest.json``). ``"pairs"``: a flat folder of local patches,
        ``images/<id>.png`` (RGB uint8 at the working level), ``masks/<id>.png`` (uint8 label
        ids, 0 = no label) and ``patches.csv`` with columns ``id,image,mask,slide,x,y,level,
        mpp`` and one ``count_<class name>`` column per palette class (mask pixels of that
        class); ``image``/``mask`` are relative to ``out``, ``slide`` is an absolute path,
        ``x, y`` the patch's top-left corner in slide level-0 pixels, ``level``/``mpp`` the
        working level (``level`` empty when it is not a slide level).
    overwrite : bool
        Replace an existing export of the same layout at ``out``.
    progress : callable, optional
        ``progress(done, total)`` after each patch.

    Returns
    -------
    Path
        ``out`` (its ``manifest.json`` lists the patches).

    Raises
    ------
    NoCorrectionsError
        The store has no corrected regions (nothing is written).
    StoreError
        If ``out`` exists (without ``overwrite``), the store does not belong to ``slide``, or
        the slide's working level is not the store's level 0 (:func:`working_view`).
    """
    if masks not in ("edited", "all"):
        raise OptionError(f"masks must be 'edited' or 'all', got {masks!r}")
    if layout not in ("items", "pairs"):
        raise OptionError(f"layout must be 'items' or 'pairs', got {layout!r}")
    regions = edited_regions(store)
    if not regions:
        raise NoCorrectionsError(store.path)  # before the slide is opened or anything written
    pyramid = slide if isinstance(slide, Pyramid) else open_slide(slide)
    store.check_slide(pyramid)
    size, factor, model_id = _model_geometry(store, patch_size, context_factor)
    tiles = plan_patches(regions, size, store.width, store.height)
    log.info("%d edited region(s) -> %d candidate patch(es)", len(regions), len(tiles))
    work = working_view(store, pyramid)
    ds = store.base_downsample
    mpp = work.mpp
    level = work.level if work.exact else None
    source = str(pyramid.source) if pyramid.source is not None else pyramid.name
    if layout == "pairs":
        slide_path = str(Path(pyramid.source).resolve()) if pyramid.source is not None else source
        return _export_pairs(
            store, work, tiles, Path(out), slide=slide_path, level=level, masks=masks,
            overwrite=overwrite, progress=progress,
        )  # fmt: skip

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


def _export_pairs(
    store: LabelStore,
    work: WorkingLevel,
    tiles: list[Box],
    out: Path,
    *,
    slide: str,
    level: int | None,
    masks: MaskMode,
    overwrite: bool,
    progress: Progress | None,
) -> Path:
    """The ``layout="pairs"`` folder: flat image/mask PNGs and ``patches.csv``."""
    palette = store.palette
    ds = store.base_downsample
    counts = [f"count_{name}" for name in palette.names]
    header = ["id", "image", "mask", "slide", "x", "y", "level", "mpp", *counts]
    with staged_output(
        out, overwrite=overwrite, kind="dir", replaceable=lambda p: (p / PAIRS_CSV).is_file()
    ) as stage:
        (stage / "images").mkdir(parents=True)
        (stage / "masks").mkdir()
        with open(stage / PAIRS_CSV, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            n = 0
            for i, local in enumerate(tiles):
                report(progress, i + 1, len(tiles))
                mask, edited = _masks(store, local, masks)
                if not edited.any():
                    continue
                item_id = f"{n:06d}"
                n += 1
                image_rel, mask_rel = f"images/{item_id}.png", f"masks/{item_id}.png"
                Image.fromarray(read_slide_at(work, local)).save(stage / image_rel)
                mask = np.ascontiguousarray(mask, dtype=np.uint8)
                Image.fromarray(mask).save(stage / mask_rel)
                per_class = np.bincount(mask.ravel(), minlength=len(palette.names) + 1)
                sx, sy = scale_box(local, ds).as_tuple()[:2]
                writer.writerow([
                    item_id, image_rel, mask_rel, slide, sx, sy,
                    "" if level is None else level, "" if work.mpp is None else f"{work.mpp:.6g}",
                    *(int(c) for c in per_class[1 : len(palette.names) + 1]),
                ])  # fmt: skip
    log.info("wrote %d image/mask pair(s) to %s", n, out)
    return out
