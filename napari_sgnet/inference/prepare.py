"""Everything a run needs before the first batch: slide, model, plan, store, work list.

Shared by the single-process engine and the distributed driver, so both make the
same decisions (tiles, glass, resume) and the same checks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.errors import SlideError, StoreError, UnsupportedSlideError
from napari_sgnet.inference.models import ModelSpec, describe_model
from napari_sgnet.inference.plan import TilePlan, WorkItem, make_plan
from napari_sgnet.inference.predictor_base import Predictor
from napari_sgnet.inference.regions import region_box, resolve_regions, tiles_in_regions
from napari_sgnet.inference.request import InferenceRequest, RequestError
from napari_sgnet.inference.tissue import TissueMask, tissue_mask
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.labelstore.meta import now_iso
from napari_sgnet.io.labelstore.outputs import check_output_path
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
    #: Store changes held back until the model has loaded (:meth:`begin`): nothing is written
    #: into an existing store before every check has passed.
    pending: list[Callable[[LabelStore], None]] = field(default_factory=list)
    #: The store was created by this run (removed again when the run cannot start).
    created: bool = False
    #: Provenance of the polygon regions the plan was restricted to (``None``: none).
    regions: dict[str, Any] | None = None

    def begin(self) -> None:
        """Apply the held-back store changes and record the request (the first write)."""
        for change in self.pending:
            change(self.store)
        self.pending = []
        self.request_number = self.store.record_request(self.summary_record())

    def abandon(self) -> None:
        """Undo a run that could not start: put back a replaced store, drop a new one."""
        import shutil

        if self.store.restore_replaced():
            return
        if self.created:
            shutil.rmtree(self.store.path, ignore_errors=True)
            log.info("%s: removed the store this run created (the run did not start)",
                     self.store.path)

    def summary_record(self) -> dict[str, Any]:
        """Fields recorded in the store for this request."""
        r = self.request
        return {
            "started": now_iso(),
            "status": "running",
            "region": list(r.region.as_tuple()) if r.region is not None else None,
            **({"regions": self.regions} if self.regions is not None else {}),
            "model_id": self.spec.info.model_id,
            "device": r.device,
            "precision": r.precision,
            "batch_size": r.batch_size,
            "threads": r.threads,
            "probabilities": self.store.has_probabilities,
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
    store, pending, _ = _open_or_create(request, pyramid, spec, plan)
    for change in pending:
        change(store)
    return store


def _open_or_create(
    request: InferenceRequest, pyramid: Pyramid, spec: ModelSpec, plan: TilePlan
) -> tuple[LabelStore, list[Callable[[LabelStore], None]], bool]:
    """The store, the changes to make to it once the run starts, and whether it is new.

    An existing store is only read here (every check runs first); its changes (a model
    change resets the done-map) are returned, to be applied by :meth:`PreparedRun.begin`.
    """
    path = Path(request.store)
    info = spec.info
    check_output_path(path, slide=pyramid.source, what="label store")
    from napari_sgnet.io.labelstore.atomic import is_unfinished_store

    if path.exists() and not request.overwrite and not is_unfinished_store(path):
        store = LabelStore.open(path, slide=pyramid, palette=info.palette)
        store.validate()
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
        pending: list[Callable[[LabelStore], None]] = []
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
            pending.append(LabelStore.reset_done)
        if previous is None or previous.get("id") != info.model_id:
            record = info.to_dict()
            pending.append(lambda s: s.set_model(record))
        if store.resolution is None:  # a store made before the resolution was recorded
            resolution = plan.view(pyramid).record()
            pending.append(lambda s: s.set_resolution(resolution))
        if request.probabilities and not store.has_probabilities:
            if store.done_map().any():
                raise StoreError(
                    path,
                    "keeps no probabilities and already holds predicted tiles; predict with "
                    "probabilities into a new store, or overwrite this one",
                )
            pending.append(lambda s: s.add_probabilities())
        return store, pending, False
    store = LabelStore.create(
        path,
        slide=pyramid,
        palette=info.palette,
        base_downsample=plan.downsample,
        tile=plan.tile,
        overwrite=request.overwrite,
    )
    try:
        store.set_model(info.to_dict())
        store.set_resolution(plan.view(pyramid).record())
        if request.probabilities:
            store.add_probabilities()
    except BaseException:
        if not store.restore_replaced():
            import shutil

            shutil.rmtree(store.path, ignore_errors=True)
        raise
    return store, [], True


def _check_done_tiles(store: LabelStore, plan: TilePlan | None = None) -> None:
    """Refuse to resume over done tiles whose chunks are damaged (``napari-sgnet check``).

    With ``plan``, only the done tiles of the plan are decoded: those are the tiles the run
    trusts (serves from the store); a viewport run checks its view, not the whole store.
    """
    from napari_sgnet.io.labelstore.verify import verify_store

    tiles = None
    if plan is not None and plan.tiles:
        tiles = np.zeros(store.grid_shape, dtype=bool)
        ys, xs = zip(*plan.tiles, strict=True)
        inside = (np.asarray(ys) < tiles.shape[0]) & (np.asarray(xs) < tiles.shape[1])
        tiles[np.asarray(ys)[inside], np.asarray(xs)[inside]] = True
    report = verify_store(store, done_only=True, tiles=tiles)
    log.info("%s: resume check of done tiles: %d chunks in %.2f s", store.path,
             report.chunks_checked, report.seconds)
    if not report.ok:
        first = report.problems[:1] or [d.describe() for d in report.damaged[:3]]
        raise StoreError(
            store.path,
            f"{len(report.problems) + len(report.damaged)} problem(s) in tiles marked done ("
            + "; ".join(first)
            + f"); run `napari-sgnet check {store.path} --repair` to re-predict them",
        )


def prepare(request: InferenceRequest) -> PreparedRun:
    """Resolve and check a request: open the slide, plan, open the store, find glass.

    Every check (the slide's µm/px against the model's included, see
    :func:`napari_sgnet.io.working.working_level`) runs before the store is opened or created.
    An existing store is not written here at all: its changes wait for
    :meth:`PreparedRun.begin`, which :func:`~napari_sgnet.inference.lifecycle.execute` calls
    once the model has loaded. With ``resume``, the chunks of the tiles marked done are
    decoded first (:func:`~napari_sgnet.io.labelstore.verify.verify_store`); damaged ones
    refuse the run and name ``napari-sgnet check --repair``.

    Raises
    ------
    RequestError, SlideError, StoreError
        Bad request, unreadable slide (:class:`~napari_sgnet.io.working.ScaleError`: no µm/px,
        or coarser than the model), or a store that does not fit.
    """
    pyramid = resolve_slide(request)
    spec = describe_model(request.model)
    if (
        request.probabilities
        and isinstance(spec.obj, Predictor)
        and not hasattr(spec.obj, "predict_probabilities")
    ):
        raise RequestError(
            f"model {spec.info.name}: its predictor ({type(spec.obj).__name__}) gives no "
            "per-class probabilities (no predict_probabilities); run without probabilities"
        )
    regions = resolve_regions(request.regions, pyramid)
    region = request.region if regions is None else region_box(regions, pyramid)
    plan = make_plan(
        pyramid, spec.info, region=region, overlap=request.overlap, order=request.order
    )
    if regions is not None:
        plan = tiles_in_regions(plan, regions, pyramid)
    store, pending, created = _open_or_create(request, pyramid, spec, plan)
    try:
        if not created and request.resume and LabelStore.reset_done not in pending:
            _check_done_tiles(store, plan)
        done = store.done_map()
        if LabelStore.reset_done in pending:
            done[...] = 0
        mask = (
            tissue_mask(pyramid, threshold=request.tissue_threshold) if request.skip_glass else None
        )
    except BaseException:
        PreparedRun(request, pyramid, spec, plan, store, [], 0, None, 0, created=created).abandon()
        raise
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
    provenance = regions.provenance() if regions is not None else None
    run = PreparedRun(
        request, pyramid, spec, plan, store, work, n_cached, fraction, 0, mask,
        pending=pending, created=created, regions=provenance,
    )  # fmt: skip
    log.info(
        "%s: %d tiles at %s (%d done before, %d to do)",
        store.path,
        len(plan.tiles),
        plan.view(pyramid).describe(),
        n_cached,
        len(work),
    )
    return run
