"""Fair held-out figures per slide, for ``napari-sgnet evaluate``.

**Fair figures, per slide** (:func:`score_slide`, :func:`seam_reference`, :func:`summarise`;
``napari-sgnet evaluate``). *Tissue*: :attr:`SlideSource.tissue` when given, else truth > 0.
*Tissue-only* scores tissue pixels with a label (truth > 0). *All-pixel* scores every pixel,
glass (truth 0 off tissue) counting as label :data:`GLASS_TRUTH` (class 1, stroma/background:
the v1 convention, so v1 ground truths with glass labelled 1 and v2 ones with glass 0 mean the
same); unlabelled tissue (truth 0 on tissue) is ignored by both. Boundary F
(:func:`napari_sgnet.metrics.boundary_f`) and seams count over the tissue-only pixels. Every
figure is computed per slide, then summarised as mean and sample sd over slides, and pooled
(counts added over slides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import WorkingLevel
from napari_sgnet.metrics import (
    BoundaryScore,
    ConfusionMatrix,
    SeamCounts,
    boundary_f,
    grid_borders,
    mean_sd,
    seam_counts,
    tile_constant,
)
from napari_sgnet.training.dataset import SlideSource, working_views

__all__ = [
    "GLASS_TRUTH",
    "SeamReference",
    "SlideScore",
    "all_pixel_truth",
    "majority_label",
    "majority_prediction",
    "score_slide",
    "seam_reference",
    "slide_truth",
    "summarise",
]

#: The label glass (truth 0 off tissue) counts as in the all-pixel figures: class 1.
GLASS_TRUTH = 1


def slide_truth(src: SlideSource, mpp: float | None) -> tuple[WorkingLevel, np.ndarray, np.ndarray]:
    """The working image, ground truth and tissue of a slide at ``mpp``.

    Returns
    -------
    image : WorkingLevel
        The image's working level (what the model reads).
    truth : numpy.ndarray
        ``(H, W)`` label ids at the working level.
    tissue : numpy.ndarray
        ``(H, W)`` bool: ``src.tissue`` (reduced like the labels) when given, else truth > 0.
    """
    img, lab = working_views(src.image, src.labels, mpp)
    truth = np.asarray(lab.array)
    if src.tissue is None:
        return img, truth, truth > 0
    tissue = src.tissue
    if tissue.dtype == np.bool_:
        levels = tuple(_as_uint8(level) for level in tissue.levels)
        tissue = Pyramid(levels, tissue.downsamples, tissue.mpp, tissue.source, tissue.name)
    _, view = working_views(src.image, tissue, mpp)
    mask = np.asarray(view.array) > 0
    if mask.shape != truth.shape:
        raise ValueError(f"{src.name}: tissue {mask.shape} and labels {truth.shape} differ")
    return img, truth, mask


def _as_uint8(level: Any) -> Any:
    """A (lazy) level cast to uint8 (a bool tissue mask reduced like label ids)."""
    return level.astype(np.uint8)


def all_pixel_truth(truth: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The all-pixel ground truth: glass (truth 0 off tissue) set to :data:`GLASS_TRUTH`."""
    return np.where((truth == 0) & ~tissue, np.asarray(GLASS_TRUTH, truth.dtype), truth)


@dataclass
class SlideScore:
    """The figures of one prediction of one slide (see the module docstring)."""

    name: str
    tissue: ConfusionMatrix
    all_pixels: ConfusionMatrix
    seams: SeamCounts
    boundary: BoundaryScore

    def figures(self) -> dict[str, float]:
        """The scalar figures (``nan`` where undefined)."""
        return {
            "tissue_miou": self.tissue.miou(),
            "all_miou": self.all_pixels.miou(),
            "tissue_pixel_accuracy": self.tissue.pixel_accuracy(),
            "all_pixel_accuracy": self.all_pixels.pixel_accuracy(),
            "boundary_f1": self.boundary.f1,
            "boundary_precision": self.boundary.precision,
            "boundary_recall": self.boundary.recall,
            "seam_border_rate": self.seams.border_rate,
            "seam_interior_rate": self.seams.interior_rate,
        }


@dataclass(frozen=True)
class SeamReference:
    """A slide's seam references on the scoring grid: the truth's and the tile-constant oracle's."""

    truth: SeamCounts
    oracle: SeamCounts


def _grid(shape: tuple[int, ...], tile: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return grid_borders(w, tile), grid_borders(h, tile)


def score_slide(
    name: str,
    prediction: np.ndarray,
    truth: np.ndarray,
    tissue: np.ndarray,
    config: ModelConfig,
    tile: int,
    tolerance_px: float,
) -> SlideScore:
    """Tissue-only and all-pixel confusion, seams and boundary F of one slide's prediction.

    Parameters
    ----------
    name : str
        The slide's name.
    prediction, truth : numpy.ndarray
        ``(H, W)`` predicted and true label ids at the working level.
    tissue : numpy.ndarray
        ``(H, W)`` bool tissue (see :func:`slide_truth`).
    config : ModelConfig
        Gives the classes.
    tile : int
        The tile step of the prediction's grid (anchored at ``(0, 0)``).
    tolerance_px : float
        Boundary match tolerance in working-level pixels.
    """
    if prediction.shape != truth.shape or tissue.shape != truth.shape:
        raise ValueError(
            f"{name}: prediction {prediction.shape}, truth {truth.shape} and tissue "
            f"{tissue.shape} differ"
        )
    names = config.palette.names
    scored = tissue & (truth > 0)
    cm_tissue = ConfusionMatrix(config.num_classes, names).update(
        np.where(scored, truth, 0), prediction
    )
    cm_all = ConfusionMatrix(config.num_classes, names).update(
        all_pixel_truth(truth, tissue), prediction
    )
    cols, rows = _grid(prediction.shape, tile)
    seams = seam_counts(prediction, cols, rows, mask=scored)
    boundary = boundary_f(truth, prediction, tolerance_px, mask=scored)
    return SlideScore(name, cm_tissue, cm_all, seams, boundary)


def seam_reference(truth: np.ndarray, tissue: np.ndarray, tile: int) -> SeamReference:
    """Seam counts of the truth itself and of the tile-constant oracle on the ``tile`` grid."""
    scored = tissue & (truth > 0)
    cols, rows = _grid(truth.shape, tile)
    oracle = tile_constant(truth, tile, scored)
    return SeamReference(
        seam_counts(np.where(scored, truth, 0), cols, rows, mask=scored),
        seam_counts(oracle, cols, rows, mask=scored),
    )


def majority_label(truths: Sequence[np.ndarray], tissues: Sequence[np.ndarray]) -> int:
    """The most frequent label over the labelled tissue pixels of every slide (pooled)."""
    counts = np.zeros(256, dtype=np.int64)
    for truth, tissue in zip(truths, tissues, strict=True):
        counts += np.bincount(truth[tissue & (truth > 0)].astype(np.int64), minlength=256)[:256]
    counts[0] = 0
    return int(counts.argmax()) if counts.any() else GLASS_TRUTH


def majority_prediction(tissue: np.ndarray, label: int) -> np.ndarray:
    """The majority-class predictor: ``label`` on tissue, :data:`GLASS_TRUTH` on glass."""
    return np.where(tissue, np.uint8(label), np.uint8(GLASS_TRUTH))


def _clean(v: float) -> float | None:
    return None if v is None or math.isnan(v) else (v if math.isinf(v) else round(float(v), 6))


def _confusion_dict(cm: ConfusionMatrix) -> dict[str, Any]:
    return {
        **cm.to_dict(),
        "confusion": {"labels": ["no label", *cm.class_names()], "counts": cm.matrix.tolist()},
    }


def _position(model: float, truth: float, oracle: float) -> float:
    """Where ``model`` sits between ``truth`` (0) and ``oracle`` (1)."""
    if any(math.isnan(v) for v in (model, truth, oracle)) or oracle == truth:
        return math.nan
    return (model - truth) / (oracle - truth)


def summarise(scores: Sequence[SlideScore], references: Sequence[SeamReference]) -> dict[str, Any]:
    """Per-slide figures, their mean and sd over slides, and the pooled figures.

    Parameters
    ----------
    scores : sequence of SlideScore
        One per slide.
    references : sequence of SeamReference
        The slides' seam references, in the same order.

    Returns
    -------
    dict
        ``per_slide`` (list of figures and per-class tissue IoU per slide), ``mean`` and
        ``sd`` (over slides, of every per-slide figure and per-class IoU), ``pooled``
        (tissue / all-pixel confusion summaries with counts, boundary, seams, seam
        references). ``seam_position`` = (model - truth) / (oracle - truth) of the seam
        border rate: 0 = seams like the truth's, 1 = like a tile-constant output.
    """
    if len(scores) != len(references) or not scores:
        raise ValueError("one seam reference per scored slide, and at least one slide")
    per_slide: list[dict[str, Any]] = []
    for s, ref in zip(scores, references, strict=True):
        fig = s.figures()
        fig["seam_truth_border_rate"] = ref.truth.border_rate
        fig["seam_oracle_border_rate"] = ref.oracle.border_rate
        fig["seam_position"] = _position(
            fig["seam_border_rate"], ref.truth.border_rate, ref.oracle.border_rate
        )
        iou = dict(zip(s.tissue.class_names(), s.tissue.iou().tolist(), strict=True))
        per_slide.append({"slide": s.name, **fig, "iou": iou})
    keys = [k for k in per_slide[0] if k not in ("slide", "iou")]
    mean: dict[str, Any] = {}
    sd: dict[str, Any] = {}
    for k in keys:
        mean[k], sd[k] = (_clean(v) for v in mean_sd([p[k] for p in per_slide]))
    classes = list(per_slide[0]["iou"])
    mean["iou"], sd["iou"] = {}, {}
    for c in classes:
        mean["iou"][c], sd["iou"][c] = (
            _clean(v) for v in mean_sd([p["iou"][c] for p in per_slide])
        )
    tissue = ConfusionMatrix(scores[0].tissue.num_classes, scores[0].tissue.names)
    all_pixels = ConfusionMatrix(scores[0].tissue.num_classes, scores[0].tissue.names)
    seams, truth_seams, oracle_seams = SeamCounts(), SeamCounts(), SeamCounts()
    boundary = BoundaryScore()
    for s, ref in zip(scores, references, strict=True):
        tissue.merge(s.tissue)
        all_pixels.merge(s.all_pixels)
        seams, boundary = seams + s.seams, boundary + s.boundary
        truth_seams, oracle_seams = truth_seams + ref.truth, oracle_seams + ref.oracle
    pooled = {
        "tissue": _confusion_dict(tissue),
        "all_pixels": _confusion_dict(all_pixels),
        "boundary": boundary.to_dict(),
        "seams": seams.to_dict(),
        "seams_truth": truth_seams.to_dict(),
        "seams_oracle": oracle_seams.to_dict(),
        "seam_position": _clean(
            _position(seams.border_rate, truth_seams.border_rate, oracle_seams.border_rate)
        ),
    }
    for p in per_slide:
        for k in keys:
            p[k] = _clean(p[k])
        p["iou"] = {c: _clean(v) for c, v in p["iou"].items()}
    return {
        "per_slide": per_slide,
        "mean": mean,
        "sd": sd,
        "pooled": pooled,
        "n_slides": len(scores),
    }
