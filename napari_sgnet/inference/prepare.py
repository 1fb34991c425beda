"""Everything a run needs before the first batch: slide, model, plan, store, work list.

Shared by the single-process engine and the distributed driver, so both make the
same decisions (tiles, glass, resume) and the same checks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.errors import SlideError, StoreError, UnsupportedSlideError
from napari_sgnet.inference.models import ModelSpec, describe_model
from napari_sgnet.inference.plan import TilePlan, WorkItem, make_plan
from napari_sgnet.inference.request import InferenceRequest
from napari_sgnet.inference.tissue import TissueMask, tissue_mask
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.labelstore.meta import now_iso
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import mpp_override_warning

__all__ = ["PreparedRun", "WorkItem", "open_slide", "prepare", "prepare_store"]

log = logging.getLogger(__name__)


def open_slide(path: str | Path, mpp: float | None = None) -> Pyramid:
    """Open a slide file with the project's readers (lazily imported)."""
    try:
        from napari_sgnet.io import open_pyramid  # type: ignore[attr-defined]
    except ImportError:
        try:
            from napari_sgnet.io.readers import open_pyramid
        except ImportError as exc:
            raise SlideError(path, "no slide readers are available in this installation") from exc
    return open_pyramid(path, mpp=mpp)


def resolve_slide(request: InferenceRequest) -> Pyramid:
    """The request's slide as a pyramid, with the µm/px override applied.

    An override more than 2x from the file's own µm/px is logged as a warning (not refused:
    files do carry wrong values).
    """
    slide = request.slide
    if isinstance(slide, Pyramid):
        pyramid = slide.with_mpp(request.mpp) if request.mpp is not None else slide
    else:
        pyramid = open_slide(slide, mpp=request.mpp)
    warning = mpp_override_warning(pyramid)
    if warning is not None:
        log.warning("%s", warning)
    dtype = np.dtype(pyramid.dtype)
    if dtype not in (np.uint8, np.uint16) and dtype.kind != "f":
        raise UnsupportedSlideError(
            pyramid.source or pyramid.name,
            f"has pixel type {dtype}; a model reads 8- or 16-bit unsigned or float slides "
            "(convert it, e.g. with vips or bfconvert)",
        )
    return pyramid


@dataclass
class PreparedRun:
    """A checked request, ready to execute."""

    request: InferenceRequest
    pyramid: Pyramid
    spec: ModelSpec
    plan: TilePlan
    store: LabelStore
    work: list[WorkItem]
    n_cached: int
    tissue_fraction: float | None
    request_number: int
    #: The slide's tissue mask (``None`` without glass detection): sinks keep glass unlabelled.
    tissue: TissueMask | None = None

    def summary_record(self) -> dict[str, Any]:
        """Fields recorded in the store for this request."""
        r = self.request
        return {
            "started": now_iso(),
            "status": "running",
            "region": list(r.region.as_tuple()) if r.region is not None else None,
            "model_id": self.spec.info.model_id,
            "device": r.device,
            "precision": r.precision,
            "batch_size": r.batch_size,
            "overlap": r.overlap,
            "skip_glass": r.skip_glass,
            "tiles": len(self.plan.tiles),
            "cached": self.n_cached,
            "resolution": self.plan.view(self.pyramid).record(),
        }


def prepare_store(
    request: InferenceRequest, pyramid: Pyramid, spec: ModelSpec, plan: TilePlan
) -> LabelStore:
    """Open (checking it matches) or create the request's store, and record the model.

    Raises
    ------
    StoreError
        Store for another slide, palette or tiling; or holding another model's
        predictions when neither ``resume`` nor ``overwrite`` is set.
    """
    path = Path(request.store)
    info = spec.info
    if path.exists() and not request.overwrite:
        store = LabelStore.open(path, slide=pyramid, palette=info.palette)
        if store.tile != plan.tile or not math.isclose(
            store.base_downsample, plan.downsample, rel_tol=1e-6
        ):
            raise StoreError(
                path,
                f"was tiled with {store.tile}-px tiles at downsample {store.base_downsample:g}; "
                f"this request needs {plan.tile}-px tiles (patch {plan.patch}, overlap "
                f"{plan.overlap}) at downsample {plan.downsample:g}; use another store or "
                "overwrite",
            )
        previous = store.model
        if previous is not None and previous.get("id") != info.model_id:
            if not (request.resume and request.repredict_other_model):
                raise StoreError(
                    path,
                    f"holds predictions of model {previous.get('id')}; pass resume to re-predict "
                    f"with {info.model_id} (edits are kept) or overwrite to start afresh",
                )
            log.info(
                "%s: model changed (%s -> %s); every tile will be recomputed",
                path,
                previous.get("id"),
                info.model_id,
            )
            store.reset_done()
        if previous is None or previous.get("id") != info.model_id:
            store.set_model(info.to_dict())
        if store.resolution is None:  # a store made before the resolution was recorded
            store.set_resolution(plan.view(pyramid).record())
        return store
    store = LabelStore.create(
        path,
        slide=pyramid,
        palette=info.palette,
        base_downsample=plan.downsample,
        tile=plan.tile,
        overwrite=request.overwrite,
    )
    store.set_model(info.to_dict())
    store.set_resolution(plan.view(pyramid).record())
    return store


def prepare(request: InferenceRequest) -> PreparedRun:
    """Resolve and check a request: open the slide, plan, open the store, find glass.

    Every check (the slide's µm/px against the model's included, see
    :func:`napari_sgnet.io.working.working_level`) runs before the store is opened or created.

    Raises
    ------
    RequestError, SlideError, StoreError
        Bad request, unreadable slide (:class:`~napari_sgnet.io.working.ScaleError`: no µm/px,
        or coarser than the model), or a store that does not fit.
    """
    pyramid = resolve_slide(request)
    spec = describe_model(request.model)
    plan = make_plan(
        pyramid, spec.info, region=request.region, overlap=request.overlap, order=request.order
    )
    store = prepare_store(request, pyramid, spec, plan)
    done = store.done_map()
    mask = tissue_mask(pyramid, threshold=request.tissue_threshold) if request.skip_glass else None
    work: list[WorkItem] = []
    n_cached = n_tissue = 0
    for idx in plan.tiles:
        glass = mask is not None and not mask.any_tissue(plan.to_slide(plan.tile_box(idx)))
        n_tissue += not glass
        if request.resume and done[idx]:
            n_cached += 1
            continue
        work.append((idx, glass))
    fraction = n_tissue / len(plan.tiles) if mask is not None and plan.tiles else None
    run = PreparedRun(request, pyramid, spec, plan, store, work, n_cached, fraction, 0, mask)
    run.request_number = store.record_request(run.summary_record())
    log.info(
        "%s: %d tiles at %s (%d done before, %d to do)",
        store.path,
        len(plan.tiles),
        plan.view(pyramid).describe(),
        n_cached,
        len(work),
    )
    return run
