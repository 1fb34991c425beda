"""Held-out evaluation with a simple tiled predictor (validation during training, ``evaluate``).

Protocol (the inference engine's with overlap 0): tile the working level with non-overlapping
``tile x tile`` windows on a grid anchored at ``(0, 0)``; feed each window as the local patch
with a centred surrounding patch ``alpha`` times larger (glass-padded past the edge); keep the
argmax. Scores: confusion matrix against the ground truth (label 0 ignored) and seam counts on
the tile grid over labelled pixels (see :mod:`napari_sgnet.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.geometry import Box, chunk_aligned_tiles
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD, read_local_and_context
from napari_sgnet.metrics import ConfusionMatrix, SeamCounts, grid_borders, seam_counts
from napari_sgnet.model.runtime import autocast, normalise
from napari_sgnet.training.dataset import SlideSource, in_memory_level, working_level

__all__ = ["EvalResult", "evaluate_model", "predict_level", "score_prediction"]


@torch.no_grad()
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
        Segmentation model (``forward(local, context, local_box_in_context)``).
    config : ModelConfig
        The model's config (context factor, normalisation, µm/px, context use).
    image : Pyramid
        RGB slide.
    level : int, optional
        Level to predict; default the level closest to ``config.mpp``.
    tile : int, optional
        Tile side; default ``config.patch_size``. Must be a multiple of 32.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
        Where the model runs.
    amp_dtype : torch.dtype, optional
        Autocast dtype (``None`` = float32).
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after each batch.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 label ids at ``level`` (class ``k`` -> ``k + 1``).
    """
    tile = tile or config.patch_size
    if tile % 32:
        raise ValueError(f"tile size must be a multiple of 32, got {tile}")
    level = image.level_for_mpp(config.mpp) if level is None else level
    src, src_level = in_memory_level(image, level)
    width, height = image.level_size(level)
    out = np.zeros((height, width), dtype=np.uint8)
    tiles = chunk_aligned_tiles(width, height, tile)
    device = torch.device(device)
    model.eval()
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size]
        locals_, contexts = [], []
        for t in batch:
            box = Box(t.x, t.y, tile, tile)
            local, context, _ = read_local_and_context(
                src, src_level, box, config.context_factor, pad_value=GLASS_PAD
            )
            locals_.append(local[..., :3])
            contexts.append(context[..., :3])
        x = normalise(_to_tensor(locals_, device), config)
        c = normalise(_to_tensor(contexts, device), config) if config.use_context else None
        with autocast(device, amp_dtype):
            logits = model(x, c)["logits"]
        pred = (logits.argmax(dim=1) + 1).to(torch.uint8).cpu().numpy()
        for t, p in zip(batch, pred, strict=True):
            out[t.y : t.y1, t.x : t.x1] = p[: t.h, : t.w]
        if progress is not None:
            progress(min(start + batch_size, len(tiles)), len(tiles))
    return out


def _to_tensor(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(device)


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
    """Score a model on slides with ground truth under the non-overlapping tiling protocol."""
    tile = tile or config.patch_size
    result = EvalResult(ConfusionMatrix(config.num_classes, config.palette.names), SeamCounts())
    for src in sources:
        level, lab_level = working_level(src.image, src.labels, config.mpp)
        pred = predict_level(model, config, src.image, level, tile, batch_size, device, amp_dtype)
        truth = np.asarray(src.labels.levels[lab_level])
        result.merge(score_prediction(pred, truth, config, tile))
    return result
