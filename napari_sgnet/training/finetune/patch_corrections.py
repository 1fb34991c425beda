"""Exported patch folders as correction sources, grouped into regions for the split."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.geometry import Box
from napari_sgnet.training.finetune.correction_types import (
    CorrectionSet,
    FinetuneError,
    PatchCorrections,
)
from napari_sgnet.training.finetune.splits import Region
from napari_sgnet.training.patches import MANIFEST, PatchFolder, PatchFolderError, read_patch_folder

__all__ = ["load_patch_corrections"]

log = logging.getLogger(__name__)

#: Largest relative difference between the folder's and the model's µm/px.
_MPP_TOLERANCE = 0.25


def load_patch_corrections(
    src: PatchCorrections, index: int, config: ModelConfig, block: int
) -> CorrectionSet:
    if isinstance(src.folder, PatchFolder):
        folder = src.folder
    else:
        path = Path(src.folder)
        if not path.is_dir():
            raise FinetuneError(f"{path}: patch folder does not exist")
        try:
            folder = read_patch_folder(path)
        except PatchFolderError as exc:
            raise FinetuneError(str(exc)) from exc
    if not folder.palette.same_classes(config.palette):
        raise FinetuneError(
            f"{folder.path / MANIFEST}: palette mismatch: the folder's classes are "
            f"{folder.palette.names} but the model predicts {config.palette.names}"
        )
    if folder.mpp is not None and config.mpp is not None:
        if abs(math.log(folder.mpp / config.mpp)) > math.log1p(_MPP_TOLERANCE):
            raise FinetuneError(
                f"{folder.path / MANIFEST}: patches are at {folder.mpp:.3g} µm/px but the model "
                f"works at {config.mpp:.3g} µm/px"
            )
    regions = _patch_regions(folder, index, config, block)
    return CorrectionSet(
        kind="patches",
        path=folder.path,
        regions=regions,
        folder=folder,
        description={
            "kind": "patches",
            "path": str(folder.path),
            "items": len(folder),
            "regions": len(regions),
        },
    )


def _patch_regions(
    folder: PatchFolder, index: int, config: ModelConfig, block: int
) -> list[Region]:
    """Items grouped into regions by slide and ``block`` grid cell of their local box's centre.

    Items without a recorded position form one region each (and a leakage group of their own:
    nothing can be checked about them). Every item is read once here, so a damaged item is
    reported before any training starts.
    """
    want = [config.patch_size] * 2
    cells: dict[tuple[str, int, int, int], list[int]] = {}
    unplaced = 0
    for i, entry in enumerate(folder.entries):
        ctx_want = [config.context_size] * 2
        sizes = (list(entry.get("local_size", want)), list(entry.get("context_size", ctx_want)))
        if sizes != (want, ctx_want):
            raise FinetuneError(
                f"{folder.path / MANIFEST}: item {entry.get('id')} is {sizes[0]} / {sizes[1]} "
                f"px (local / surrounding); the model needs {want} / {ctx_want}"
            )
        box_v = entry.get("local_box")
        if box_v:
            cx, cy = Box(*(int(v) for v in box_v)).center
            group = f"patches:{entry.get('slide', '')}:{entry.get('level')}"
            cells.setdefault((group, int(cy) // block, int(cx) // block, -1), []).append(i)
        else:
            unplaced += 1
            cells[(f"patches:{folder.path}:item:{i}", 0, 0, i)] = [i]
    if unplaced:
        log.warning(
            "%s: %d item(s) record no position on their slide; leakage between them cannot be "
            "checked, each is split on its own",
            folder.path,
            unplaced,
        )
    regions = []
    for (group, _, _, _), items in cells.items():
        masks, boxes = [], []
        for i in items:
            try:
                item = folder[i]
            except PatchFolderError as exc:
                raise FinetuneError(str(exc)) from exc
            masks.append(item.local_mask)
            p = config.patch_size
            boxes.append(item.local_box if item.local_box is not None else Box(0, 0, p, p))
        hull = Box.from_bounds(
            min(b.x for b in boxes),
            min(b.y for b in boxes),
            max(b.x1 for b in boxes),
            max(b.y1 for b in boxes),
        )
        regions.append(Region(index, hull, np.concatenate(masks, axis=0), group, tuple(items)))
    return sorted(regions, key=lambda r: r.key)
