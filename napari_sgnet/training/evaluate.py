"""Held-out evaluation through the inference tile loop (validation during training, ``evaluate``).

Protocol (the inference engine's with overlap 0): tile the working level (the slide at the
model's µm/px, area-averaged on the fly when the pyramid has no level there) with non-overlapping
``tile x tile`` windows on a grid anchored at ``(0, 0)``; feed each window as the local patch
with a centred surrounding patch ``alpha`` times larger (glass-padded past the edge); keep the
argmax as label ids (class ``k`` -> ``k + 1``). Scores: confusion matrix against the ground
truth (label 0 ignored) and seam counts on the tile grid over labelled pixels (see
:mod:`napari_sgnet.metrics`). The tiles run through
:func:`napari_sgnet.inference.loop.run_tiles` with a
:class:`~napari_sgnet.inference.predictor.TorchPredictor` (the one model runtime), into an
:class:`~napari_sgnet.inference.sinks.ArraySink` (:func:`predict_level`) or a
:class:`~napari_sgnet.inference.sinks.ScoreSink` (:func:`evaluate_model`).
The fair per-slide figures of ``napari-sgnet evaluate`` are in :mod:`.scoring`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.inference.loop import TileSink, run_tiles
from napari_sgnet.inference.plan import TilePlan, grid_plan
from napari_sgnet.inference.predictor import TorchPredictor
from napari_sgnet.inference.sinks import ArraySink, ScoreSink
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import working_level
from napari_sgnet.metrics import (
    ConfusionMatrix,
    SeamCounts,
    grid_borders,
    seam_counts,
)
from napari_sgnet.training.dataset import SlideSource, in_memory_level, working_views

__all__ = [
    "EvalResult",
    "eval_plan",
    "eval_predictor",
    "evaluate_model",
    "predict_level",
    "score_prediction",
]

def precision_of(amp_dtype: torch.dtype | None) -> str:
    """The predictor precision (``"fp32"``/``"bf16"``) of an autocast dtype.

    Raises
    ------
    ValueError
        For an autocast dtype the model runtime does not offer.
    """
    if amp_dtype is None:
        return "fp32"
    if amp_dtype == torch.bfloat16:
        return "bf16"
    raise ValueError(f"unsupported autocast dtype {amp_dtype}; use None (fp32) or torch.bfloat16")


def eval_predictor(
    model: nn.Module, device: torch.device | str, amp_dtype: torch.dtype | None
) -> TorchPredictor:
    """A :class:`TorchPredictor` over ``model`` as evaluation runs it.

    The module is put in eval mode on ``device`` but keeps its memory format (evaluation
    during training must not change the weights' layout). The caller restores train mode.
    """
    return TorchPredictor(
        model, device=str(device), precision=precision_of(amp_dtype), channels_last=False
    )


def eval_plan(config: ModelConfig, width: int, height: int, level: int, tile: int) -> TilePlan:
    """The non-overlapping ``tile``-px plan of a ``width x height`` level for ``config``.

    Raises
    ------
    ValueError
        If ``tile`` is not a multiple of 32.
    """
    if tile % 32:
        raise ValueError(f"tile size must be a multiple of 32, got {tile}")
    factor = float(config.context_factor) if config.needs_context else None
    return grid_plan(width, height, patch=tile, context_factor=factor, level=level)


def _run_level(
    model: nn.Module,
    image: Pyramid,
    plan: TilePlan,
    sink: TileSink,
    batch_size: int,
    device: torch.device | str,
    amp_dtype: torch.dtype | None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    predictor = eval_predictor(model, device, amp_dtype)
    total, done = len(plan.tiles), 0
    work = [(idx, False) for idx in plan.tiles]
    for batch in run_tiles(image, plan, predictor, sink, work, batch_size=batch_size):
        done += len(batch)
        if progress is not None:
            progress(done, total)


def predict_level(
    model: nn.Module,
    config: ModelConfig,
    image: Pyramid,
    level: int | None = None,
    tile: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Predict a whole pyramid level with non-overlapping tiles and centred contexts.

    Parameters
    ----------
    model : nn.Module
        Segmentation model with ``.config`` (``forward(local, context=...)``).
    config : ModelConfig
        The model's config (context factor, µm/px, context use).
    image : Pyramid
        RGB slide.
    level : int, optional
        Level of ``image`` to predict as it is; default the working level at ``config.mpp``
        (area-averaged from the nearest finer level when the pyramid has none there, as the
        engine reads it).
    tile : int, optional
        Tile side; default ``config.patch_size``. Must be a multiple of 32.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
        Where the model runs.
    amp_dtype : torch.dtype, optional
        Autocast dtype (``None`` = float32, or ``torch.bfloat16``).
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after each batch.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 label ids at ``level`` (class ``k`` -> ``k + 1``).
    """
    tile = tile or config.patch_size
    if level is None:
        image, level = working_level(image, config.mpp).as_pyramid()
    width, height = image.level_size(level)
    src, src_level = in_memory_level(image, level)
    plan = eval_plan(config, width, height, src_level, tile)
    sink = ArraySink(plan)
    _run_level(model, src, plan, sink, batch_size, device, amp_dtype, progress)
    return sink.labels


@dataclass
class EvalResult:
    """Scores of one model on one or more slides."""

    confusion: ConfusionMatrix
    seams: SeamCounts

    def merge(self, other: EvalResult) -> EvalResult:
        """Pool another slide's counts into this result."""
        self.confusion.merge(other.confusion)
        self.seams = self.seams + other.seams
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: mIoU, accuracy, per-class IoU, seam figures."""
        return {**self.confusion.to_dict(), "seams": self.seams.to_dict()}


def score_prediction(
    prediction: np.ndarray, truth: np.ndarray, config: ModelConfig, tile: int
) -> EvalResult:
    """Confusion matrix and seam counts (grid of side ``tile``, over labelled pixels)."""
    cm = ConfusionMatrix(config.num_classes, config.palette.names).update(truth, prediction)
    h, w = prediction.shape
    seams = seam_counts(prediction, grid_borders(w, tile), grid_borders(h, tile), mask=truth != 0)
    return EvalResult(cm, seams)


def evaluate_model(
    model: nn.Module,
    config: ModelConfig,
    sources: Sequence[SlideSource],
    tile: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Score a model on slides with ground truth under the non-overlapping tiling protocol.

    The predictions are scored as the tiles arrive (:class:`ScoreSink`); the numbers equal
    :func:`score_prediction` of :func:`predict_level`'s map.

    Parameters
    ----------
    model, config, tile, batch_size, device, amp_dtype
        As for :func:`predict_level`.
    sources : sequence of SlideSource
        Slides with ground-truth label pyramids (pooled).

    Returns
    -------
    EvalResult
        Confusion matrix and seam counts over every slide.
    """
    tile = tile or config.patch_size
    result = EvalResult(ConfusionMatrix(config.num_classes, config.palette.names), SeamCounts())
    for src in sources:
        img, lab = working_views(src.image, src.labels, config.mpp)
        width, height = img.size
        image, image_level = in_memory_level(*img.as_pyramid())
        plan = eval_plan(config, width, height, image_level, tile)
        truth = np.asarray(lab.array)
        sink = ScoreSink(plan, truth, result.confusion, seams=True)
        _run_level(model, image, plan, sink, batch_size, device, amp_dtype)
        result.seams = result.seams + sink.seams
    return result
