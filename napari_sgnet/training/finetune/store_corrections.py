"""Committed corrections of a label store, cut into regions at the model's working level.

A store's corrections are its level-0 labels where the ``edited`` mask is set (and the label is
not 0). The store's level 0 is the inference level, i.e. the slide level the model runs at;
the store is opened read-only.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import SlideError, StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
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
#: Largest relative difference between the store's and the model's µm/px without a warning.
_MPP_TOLERANCE = 0.25


def _open_store(src: StoreCorrections) -> LabelStore:
    if isinstance(src.store, LabelStore):
        return src.store
    try:
        return LabelStore.open(Path(src.store), mode="r")
    except StoreError as exc:
        raise FinetuneError(str(exc)) from exc


def _open_slide(src: StoreCorrections, store: LabelStore) -> Pyramid:
    slide = src.slide
    if isinstance(slide, Pyramid):
        pyramid = slide
    else:
        if slide is None:
            recorded = store.slide_identity.get("source")
            if not recorded:
                raise FinetuneError(
                    f"{store.path}: the store does not record its slide file; pass the slide "
                    "(--slide / StoreCorrections(store, slide))"
                )
            slide = recorded
        from napari_sgnet.io import open_pyramid

        try:
            pyramid = open_pyramid(Path(slide))
        except SlideError as exc:
            raise FinetuneError(f"slide of {store.path}: {exc}") from exc
    try:
        store.check_slide(pyramid)
    except StoreError as exc:
        raise FinetuneError(str(exc)) from exc
    return pyramid


def _store_level(store: LabelStore, slide: Pyramid, config: ModelConfig) -> int:
    """The slide level matching the store's level 0; checks the model's µm/px."""
    want = (store.width, store.height)
    for i, ds in enumerate(slide.downsamples):
        close = abs(ds - store.base_downsample) <= 1e-3 * store.base_downsample
        if close and slide.level_size(i) == want:
            level = i
            break
    else:
        raise FinetuneError(
            f"{store.path}: the slide {slide.name!r} has no level of downsample "
            f"{store.base_downsample:g} and size {want[0]} x {want[1]} (the store's level 0)"
        )
    expected = slide.level_for_mpp(config.mpp)
    if level != expected:
        raise FinetuneError(
            f"{store.path}: labels are at slide level {level} ({_mpp(slide.level_mpp(level))}) "
            f"but this model runs at level {expected} ({_mpp(slide.level_mpp(expected))}) of "
            f"{slide.name!r}: the store was made for a model of another resolution"
        )
    mpp = slide.level_mpp(level)
    if mpp is not None and config.mpp is not None:
        if abs(math.log(mpp / config.mpp)) > math.log1p(_MPP_TOLERANCE):
            log.warning(
                "%s: the slide has no level at the model's %.3g µm/px; fine-tuning at %.3g "
                "µm/px, where inference runs too", store.path, config.mpp, mpp,
            )
    return level


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
    level = _store_level(store, slide, config)
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
        image=slide,
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
