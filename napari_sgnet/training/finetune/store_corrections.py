"""Committed corrections of a label store, cut into regions at the model's working level.

A store's corrections are its level-0 labels where the ``edited`` mask is set (and the label is
not 0). The store's level 0 is the inference level, i.e. the slide's working level at the model's
µm/px (a pyramid level, or the nearest finer level area-averaged on the fly, as the engine
reads it); the store is opened read-only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import SlideError, StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import ScaleError, working_level
from napari_sgnet.training.finetune.correction_types import (
    CorrectionSet,
    FinetuneError,
    StoreCorrections,
)
from napari_sgnet.training.finetune.splits import Region, merge_boxes, regions_from_mask

__all__ = ["load_store_corrections"]

log = logging.getLogger(__name__)

#: Corrections are scanned in windows of this many chunks a side when a store lists no commits.
_SCAN_CHUNKS = 16


def _open_store(src: StoreCorrections) -> LabelStore:
    if isinstance(src.store, LabelStore):
        return src.store
    try:
        return LabelStore.open(Path(src.store), mode="r")
    except StoreError as exc:
        raise FinetuneError(str(exc)) from exc


def _open_slide(src: StoreCorrections, store: LabelStore) -> Pyramid:
    """The store's slide: ``src.slide`` when given, else where the store recorded it
    (absolute path, then relative to the store, then beside it), checked to be the same
    slide (:func:`napari_sgnet.io.labelstore.slide_ref.find_slide`)."""
    from napari_sgnet.io.labelstore.slide_ref import find_slide

    try:
        return find_slide(store, src.slide)
    except SlideError as exc:  # StoreError too: missing, unreadable or another slide
        raise FinetuneError(str(exc)) from exc


def _store_level(store: LabelStore, slide: Pyramid, config: ModelConfig) -> tuple[Pyramid, int]:
    """``(pyramid, level)`` of the slide's working level, the grid of the store's level 0.

    The working level is the engine's (:func:`napari_sgnet.io.working.working_level`): a slide
    level at the model's µm/px, or the nearest finer level area-averaged on the fly.
    """
    try:
        work = working_level(slide, config.mpp, require_mpp=False)
    except ScaleError as exc:
        raise FinetuneError(str(exc)) from exc
    want = (store.width, store.height)
    close = abs(work.downsample - store.base_downsample) <= 1e-3 * store.base_downsample
    if not close or work.size != want:
        raise FinetuneError(
            f"{store.path}: labels are at {_store_where(store, slide)} "
            f"({_mpp(_store_mpp(store, slide))}, {want[0]} x {want[1]} px) but this model runs "
            f"at {work.describe()} of {slide.name!r} ({work.width} x {work.height} px): the "
            "store was made for a model of another resolution"
        )
    if not work.exact:
        log.info("%s: fine-tuning at %s", store.path, work.describe())
    return work.as_pyramid()


def _store_where(store: LabelStore, slide: Pyramid) -> str:
    """``slide level k`` when a slide level is the store's level 0, else its downsample."""
    for i, ds in enumerate(slide.downsamples):
        close = abs(ds - store.base_downsample) <= 1e-3 * store.base_downsample
        if close and slide.level_size(i) == (store.width, store.height):
            return f"slide level {i}"
    return f"downsample {store.base_downsample:g}"


def _store_mpp(store: LabelStore, slide: Pyramid) -> float | None:
    return None if slide.mpp is None else slide.mpp * store.base_downsample


def _mpp(value: float | None) -> str:
    return "unknown µm/px" if value is None else f"{value:.3g} µm/px"


def _edited_boxes(store: LabelStore) -> list[Box]:
    """Boxes that hold every edited pixel: the commits' boxes, or a scan when none is listed."""
    boxes = []
    for commit in store.commits:
        try:
            boxes.append(Box(*(int(v) for v in commit["box"])).clip(store.width, store.height))
        except (KeyError, TypeError, ValueError):
            log.warning("%s: ignoring a commit record without a valid box", store.path)
    if boxes:
        return merge_boxes(boxes)
    side = _SCAN_CHUNKS * store.chunk
    found = []
    for y in range(0, store.height, side):
        for x in range(0, store.width, side):
            box = Box(x, y, side, side).clip(store.width, store.height)
            if store.read_edited(box).any():
                found.append(box)
    return merge_boxes(found)


def load_store_corrections(
    src: StoreCorrections, index: int, config: ModelConfig, block: int, min_pixels: int
) -> CorrectionSet:
    store = _open_store(src)
    if not store.palette.same_classes(config.palette):
        raise FinetuneError(
            f"{store.path}: palette mismatch: the store's classes are {store.palette.names} but "
            f"the model predicts {config.palette.names}"
        )
    slide = _open_slide(src, store)
    image, level = _store_level(store, slide, config)
    identity = store.slide_identity
    group = f"slide:{identity.get('fingerprint')}:{identity.get('width')}x{identity.get('height')}"
    regions: list[Region] = []
    for box in _edited_boxes(store):
        edited = store.read_edited(box).astype(bool)
        if not edited.any():
            continue
        labels = np.where(edited, store.read_labels(box), 0).astype(np.uint8)
        regions.extend(regions_from_mask(labels, box, block, index, group, min_pixels))
    log.info("%s: %d corrected region(s)", store.path, len(regions))
    return CorrectionSet(
        kind="store",
        path=store.path,
        regions=regions,
        image=image,
        level=level,
        description={
            "kind": "store",
            "path": str(store.path),
            "slide": identity.get("name"),
            "slide_source": identity.get("source"),
            "slide_fingerprint": identity.get("fingerprint"),
            "commits": len(store.commits),
            "regions": len(regions),
            "pixels": int(sum(r.pixels for r in regions)),
        },
    )
