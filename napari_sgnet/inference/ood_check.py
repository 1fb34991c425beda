"""Running the out-of-distribution check: per run (the tiles just predicted) and per slide.

:func:`watch` wraps a run's predictor so every batch it predicts also feeds an
:class:`~napari_sgnet.inference.ood.OODMonitor` (colour of the windows, pooled decoder
features from :mod:`~napari_sgnet.inference.ood_tap`): the per-view check costs no extra
forward pass. :func:`check_slide` judges a slide on an evenly spread sample of its tissue
tiles (:data:`SLIDE_TILES` at the model's level), the cheap per-slide check. Nothing here
imports torch at module level.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from napari_sgnet.config import ModelConfig, OODReference
from napari_sgnet.geometry import Box, scale_box
from napari_sgnet.inference.models import ModelSpec, describe_model, get_predictor
from napari_sgnet.inference.ood import MIN_TISSUE, OODMonitor, OODResult, cannot_judge
from napari_sgnet.inference.plan import TileIndex, TilePlan, make_plan
from napari_sgnet.inference.predictor_base import ModelInfo, Predictor
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.inference.tissue import TissueMask, tissue_mask
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.registry.layout import CONFIG_NAME

__all__ = [
    "SLIDE_TILES",
    "WatchedPredictor",
    "check_slide",
    "monitor_for",
    "predict_with_features",
    "reference_of",
    "slide_tiles",
    "watch",
]

log = logging.getLogger(__name__)

#: Tissue tiles the per-slide check reads and predicts.
SLIDE_TILES = 16


def predict_with_features(
    predictor: Predictor, local: np.ndarray, context: np.ndarray | None, crop: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``predictor.predict`` plus the ``(B, C)`` pooled decoder features (``None`` when the
    predictor is not a torch model with a general branch)."""
    module = getattr(predictor, "module", None)
    if module is None:
        labels, conf = predictor.predict(local, context, crop=crop)
        return labels, conf, None
    from napari_sgnet.inference import ood_tap

    if not ood_tap.install(module):
        labels, conf = predictor.predict(local, context, crop=crop)
        return labels, conf, None
    with ood_tap.collect() as sink:
        labels, conf = predictor.predict(local, context, crop=crop)
    feats = np.concatenate(sink) if sink else None
    if feats is not None and len(feats) != len(local):
        feats = None
    return labels, conf, feats


class WatchedPredictor:
    """A :class:`~napari_sgnet.inference.predictor_base.Predictor` that feeds a monitor.

    Parameters
    ----------
    inner : Predictor
        The predictor doing the work.
    monitor : OODMonitor
        Receives every batch's windows and features.
    """

    def __init__(self, inner: Predictor, monitor: OODMonitor) -> None:
        self.inner = inner
        self.monitor = monitor
        self.info: ModelInfo = inner.info

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`napari_sgnet.inference.predictor_base.Predictor.predict`."""
        return self.predict_padded(local, context, crop, len(local))

    def predict_padded(
        self,
        local: np.ndarray,
        context: np.ndarray | None,
        crop: int,
        n: int,
        probabilities: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Predict a batch whose rows ``n:`` are padding (:func:`~napari_sgnet.inference.loop.
        pad_batch`): all rows run, only the first ``n`` are judged. With ``probabilities``
        the inner predictor's ``predict_probabilities`` runs and its probabilities come back
        third (else ``None``)."""
        inner = _KeepProbabilities(self.inner) if probabilities else self.inner
        labels, conf, feats = predict_with_features(inner, local, context, crop)
        self.monitor.add(local[:n], None if feats is None else feats[:n])
        return labels, conf, getattr(inner, "kept", None)


class _KeepProbabilities:
    """A predictor whose ``predict`` runs the inner ``predict_probabilities`` and keeps the
    probabilities in :attr:`kept` (so the feature tap sees one ordinary forward pass)."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.info = inner.info
        self.module = getattr(inner, "module", None)
        self.kept: np.ndarray | None = None

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        labels, conf, self.kept = self.inner.predict_probabilities(  # type: ignore[attr-defined]
            local, context, crop
        )
        return labels, conf


def reference_of(spec: ModelSpec) -> OODReference | None:
    """The training statistics of a described model (``None`` when it has none)."""
    if spec.path is not None:
        return ModelConfig.load(spec.path / CONFIG_NAME).ood
    obj = spec.obj
    config = getattr(obj, "config", None) or getattr(getattr(obj, "module", None), "config", None)
    ood = getattr(config, "ood", None)
    return ood if isinstance(ood, OODReference) else None


def monitor_for(spec: ModelSpec, scope: str = "slide") -> OODMonitor:
    """A monitor for ``spec``; feature statistics are used only for the weights they came from."""
    reference = reference_of(spec)
    digest = spec.info.model_id.rsplit(":", 1)[-1]
    own = reference is not None and (not reference.weights or reference.weights == digest)
    note = "" if own or reference is None else (
        "feature statistics belong to other weights: colour only"
    )
    return OODMonitor(reference, scope, use_features=own, note=note)


def watch(
    predictor: Predictor, spec: ModelSpec, scope: str = "slide"
) -> tuple[WatchedPredictor, OODMonitor]:
    """Wrap a run's predictor so the tiles it predicts are judged (see :class:`OODMonitor`)."""
    monitor = monitor_for(spec, scope)
    return WatchedPredictor(predictor, monitor), monitor


def _tissue_share(mask: TissueMask | None, box: Box) -> float:
    """Share of a slide level-0 box the tissue mask covers (1 without a mask)."""
    if mask is None:
        return 1.0
    h, w = mask.mask.shape
    sub = scale_box(box, 1.0 / mask.downsample).clip(w, h)
    return 0.0 if sub.is_empty else float(mask.mask[sub.slices()].mean())


def slide_tiles(
    slide: Pyramid, info: ModelInfo, n_tiles: int, tissue_threshold: float | None = None
) -> tuple[TilePlan, list[TileIndex]]:
    """The model's tile plan of ``slide`` and up to ``n_tiles`` of its tissue tiles, spread
    evenly in raster order (the same tiles every time)."""
    plan = make_plan(slide, info)
    mask = tissue_mask(slide, threshold=tissue_threshold)
    cover = {idx: _tissue_share(mask, plan.to_slide(plan.tile_box(idx))) for idx in plan.tiles}
    tiles = [idx for idx in plan.tiles if cover[idx] >= MIN_TISSUE]  # mostly tissue first
    tiles = tiles or [idx for idx in plan.tiles if cover[idx] > 0]
    if not tiles:
        return plan, []
    picks = np.unique(np.linspace(0, len(tiles) - 1, min(n_tiles, len(tiles))).round())
    return plan, [tiles[int(i)] for i in picks]


def check_slide(
    slide: Pyramid,
    model: Any = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    n_tiles: int = SLIDE_TILES,
    tissue_threshold: float | None = None,
    batch_size: int = 8,
) -> OODResult:
    """Judge a slide on ``n_tiles`` tissue tiles spread evenly over it (the per-slide check).

    Parameters
    ----------
    slide : Pyramid
        The slide (with its µm/px).
    model : optional
        Anything :func:`~napari_sgnet.inference.models.describe_model` takes.
    device, precision : str
        Where and how the model runs (the process's cached predictor is reused).
    n_tiles : int
        Tiles read and predicted.
    tissue_threshold : float, optional
        Saturation threshold of the tissue mask that picks the tiles.
    batch_size : int
        Tiles per forward pass.

    Returns
    -------
    OODResult
        ``"cannot judge"`` for a model without statistics or a slide without tissue tiles.
    """
    spec = describe_model(model)
    monitor = monitor_for(spec, "slide")
    if monitor.reference is None:
        return monitor.result()
    plan, chosen = slide_tiles(slide, spec.info, n_tiles, tissue_threshold)
    if not chosen:
        return cannot_judge("no tissue found on the slide")
    watched = WatchedPredictor(get_predictor(spec, device, precision), monitor)
    for start in range(0, len(chosen), batch_size):
        local, context = read_batch(slide, plan, chosen[start : start + batch_size])
        watched.predict(local, context)
    result = monitor.result()
    log.info("%s: %s", slide.name, result.message())
    return result
