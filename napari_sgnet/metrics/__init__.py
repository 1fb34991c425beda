"""Segmentation quality figures, pure numpy: confusion matrix, IoU, accuracy, seam consistency.

Everything here works on **label ids** (``0`` = no label, class ``k`` = label ``k + 1``) and
accumulates streamingly: feed tiles or chunks one at a time and read the figures at the end.

Definitions
-----------
Confusion matrix
    ``(K + 1) x (K + 1)`` counts indexed ``[ground-truth label, predicted label]``. Pixels whose
    ground truth is 0 are ignored (never counted). A prediction of 0 on a labelled pixel (the model
    did not predict there) counts as a miss for the true class and a false positive for no class.
Per-class IoU
    ``TP / (TP + FP + FN)`` for each class; ``nan`` when the class occurs in neither the ground
    truth nor the prediction (its union is empty).
mIoU
    Mean of the per-class IoU over the classes **present in the ground truth or the prediction**
    (the classes whose IoU is not ``nan``). A class absent from both carries no information and is
    left out; a class predicted but absent from the ground truth counts with IoU 0.
Pixel accuracy
    Correct labelled pixels / labelled pixels.
Seam consistency
    Over pairs of 4-adjacent pixels (horizontal and vertical neighbours) whose predictions are both
    valid (non-zero, and inside the optional mask): ``border_rate`` is the fraction of pairs that
    **straddle a tile border** whose labels differ; ``interior_rate`` is the same fraction for pairs
    that do not straddle a border. ``ratio = border_rate / interior_rate``: 1 means borders look
    like anywhere else (no seams); larger values mean the tiling shows (labels change at tile
    borders more often than the image content explains). ``excess = border_rate - interior_rate``.
Boundary F-score
    Class boundaries of a label map: pixels inside the mask with a 4-neighbour inside the mask
    of a different label. A predicted boundary pixel is *matched* when a true boundary pixel lies
    within ``tolerance`` pixels (Euclidean, by a distance transform), and vice versa;
    precision = matched predicted / predicted boundary pixels, recall = matched true / true
    boundary pixels, F = their harmonic mean. No boundary in either map: P = R = F = 1; in one
    map only: P = R = F = 0 (:class:`BoundaryScore`).
Tile-constant oracle
    Every tile of the grid filled with the majority ground-truth label of its scored pixels
    (:func:`tile_constant`): the best a predictor constant per tile can do; its seam figure is the
    reference for "constant per tile".
Mean and spread
    :func:`mean_sd`: mean and sample standard deviation (``ddof=1``) of per-slide figures,
    ``nan`` values left out; the sd of a single value is ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sgnet.metrics.boundary import BoundaryScore, boundary_f, class_boundaries

__all__ = [
    "BoundaryScore",
    "ConfusionMatrix",
    "SeamCounts",
    "boundary_f",
    "class_boundaries",
    "grid_borders",
    "mean_sd",
    "seam_counts",
    "tile_constant",
]


@dataclass
class ConfusionMatrix:
    """A streaming confusion matrix over label ids ``0..num_classes``.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K`` (label ids ``1..K``).
    names : sequence of str, optional
        Class names for reports (class ``k`` names label ``k + 1``).
    """

    num_classes: int
    names: Sequence[str] | None = None
    matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.names is not None and len(self.names) != self.num_classes:
            raise ValueError(f"{len(self.names)} class names for {self.num_classes} classes")
        n = self.num_classes + 1
        self.matrix = np.zeros((n, n), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> ConfusionMatrix:
        """Add one tile or chunk; ``target`` pixels equal to 0 are ignored.

        Parameters
        ----------
        target, prediction : numpy.ndarray
            Integer label-id arrays of the same shape.

        Returns
        -------
        ConfusionMatrix
            ``self``, for chaining.
        """
        target = np.asarray(target)
        prediction = np.asarray(prediction)
        if target.shape != prediction.shape:
            raise ValueError(
                f"shape mismatch: target {target.shape} vs prediction {prediction.shape}"
            )
        n = self.num_classes + 1
        t = target.ravel().astype(np.int64, copy=False)
        p = prediction.ravel().astype(np.int64, copy=False)
        keep = t != 0
        if not keep.all():
            t, p = t[keep], p[keep]
        if t.size == 0:
            return self
        if t.max() >= n or p.max() >= n or t.min() < 0 or p.min() < 0:
            raise ValueError(f"label ids must lie in 0..{self.num_classes}")
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from another slide or worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self.matrix += other.matrix
        return self

    @property
    def total(self) -> int:
        """Number of labelled pixels counted."""
        return int(self.matrix[1:].sum())

    def _tp_fp_fn(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.matrix
        tp = np.diag(m)[1:].astype(np.float64)
        fp = m[1:, 1:].sum(axis=0) - tp  # predicted k on a labelled pixel of another class
        fn = m[1:, :].sum(axis=1) - tp  # true k predicted as anything else, 0 included
        return tp, fp.astype(np.float64), fn.astype(np.float64)

    def iou(self) -> np.ndarray:
        """Per-class IoU, shape ``(K,)``; ``nan`` for classes in neither GT nor prediction."""
        tp, fp, fn = self._tp_fp_fn()
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in the ground truth or the prediction."""
        iou = self.iou()
        present = ~np.isnan(iou)
        return float(iou[present].mean()) if present.any() else math.nan

    def pixel_accuracy(self) -> float:
        """Correct labelled pixels / labelled pixels (``nan`` when nothing was counted)."""
        total = self.total
        return float(np.trace(self.matrix[1:, 1:]) / total) if total else math.nan

    def class_names(self) -> list[str]:
        """Class names, or ``class 1..K`` (label ids) without names."""
        if self.names is not None:
            return list(self.names)
        return [f"class {k + 1}" for k in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (``nan`` written as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 6)

        return {
            "miou": clean(self.miou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "iou": {n: clean(v) for n, v in zip(self.class_names(), self.iou(), strict=True)},
            "pixels": self.total,
        }


@dataclass(frozen=True)
class SeamCounts:
    """Adjacent-pixel pair counts across and away from tile borders (additive).

    Attributes
    ----------
    border_pairs, border_diff : int
        Valid pairs straddling a tile border, and how many of them have different labels.
    interior_pairs, interior_diff : int
        The same for pairs not straddling a border.
    """

    border_pairs: int = 0
    border_diff: int = 0
    interior_pairs: int = 0
    interior_diff: int = 0

    def __add__(self, other: SeamCounts) -> SeamCounts:
        return SeamCounts(
            self.border_pairs + other.border_pairs,
            self.border_diff + other.border_diff,
            self.interior_pairs + other.interior_pairs,
            self.interior_diff + other.interior_diff,
        )

    @property
    def border_rate(self) -> float:
        """Fraction of border-straddling pairs whose labels differ."""
        return self.border_diff / self.border_pairs if self.border_pairs else math.nan

    @property
    def interior_rate(self) -> float:
        """Fraction of non-border pairs whose labels differ."""
        return self.interior_diff / self.interior_pairs if self.interior_pairs else math.nan

    @property
    def ratio(self) -> float:
        """``border_rate / interior_rate``: 1 = no seams, > 1 = visible tiling."""
        b, i = self.border_rate, self.interior_rate
        if math.isnan(b) or math.isnan(i):
            return math.nan
        if i == 0:
            return 1.0 if b == 0 else math.inf
        return b / i

    @property
    def excess(self) -> float:
        """``border_rate - interior_rate``: the extra label changes the borders add."""
        return self.border_rate - self.interior_rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (``nan`` written as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else (v if math.isinf(v) else round(float(v), 6))

        return {
            "border_rate": clean(self.border_rate),
            "interior_rate": clean(self.interior_rate),
            "ratio": clean(self.ratio),
            "excess": clean(self.excess),
            "border_pairs": self.border_pairs,
            "interior_pairs": self.interior_pairs,
        }


def grid_borders(length: int, step: int, offset: int = 0) -> np.ndarray:
    """Positions of tile borders of a regular grid along one axis.

    A border at position ``b`` separates pixel ``b - 1`` from pixel ``b``.

    Parameters
    ----------
    length : int
        Number of pixels along the axis.
    step : int
        Tile side (the stride of the written tiles).
    offset : int
        Position of the grid's first tile edge (0 for grids anchored at the origin).

    Returns
    -------
    numpy.ndarray
        Sorted border positions strictly inside ``(0, length)``.
    """
    if step <= 0:
        raise ValueError(f"tile step must be positive, got {step}")
    start = offset % step or step
    return np.arange(start, length, step, dtype=np.int64)


def _axis_counts(
    labels: np.ndarray, valid: np.ndarray, borders: np.ndarray, axis: int
) -> tuple[int, int, int, int]:
    """Pair counts between index ``i`` and ``i + 1`` along ``axis``."""
    n = labels.shape[axis]
    if n < 2:
        return 0, 0, 0, 0
    if axis == 1:
        a, b, va, vb = labels[:, :-1], labels[:, 1:], valid[:, :-1], valid[:, 1:]
    else:
        a, b, va, vb = labels[:-1], labels[1:], valid[:-1], valid[1:]
    ok = va & vb
    diff = (a != b) & ok
    pairs_per_line = ok.sum(axis=1 - axis)  # per pair index along `axis`
    diff_per_line = diff.sum(axis=1 - axis)
    on_border = np.zeros(n - 1, dtype=bool)
    b_idx = np.asarray(borders, dtype=np.int64)
    b_idx = b_idx[(b_idx >= 1) & (b_idx <= n - 1)] - 1  # border b: pair (b - 1, b)
    on_border[b_idx] = True
    return (
        int(pairs_per_line[on_border].sum()),
        int(diff_per_line[on_border].sum()),
        int(pairs_per_line[~on_border].sum()),
        int(diff_per_line[~on_border].sum()),
    )


def seam_counts(
    labels: np.ndarray,
    col_borders: Sequence[int] | np.ndarray,
    row_borders: Sequence[int] | np.ndarray,
    mask: np.ndarray | None = None,
) -> SeamCounts:
    """Count label disagreements of adjacent pixels across and away from tile borders.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` predicted label ids; 0 means "not predicted" and is never counted.
    col_borders, row_borders : sequence of int
        Tile-border positions in this array's columns / rows (see :func:`grid_borders`); a border
        at ``b`` lies between index ``b - 1`` and ``b``.
    mask : numpy.ndarray, optional
        ``(H, W)`` bool; only pairs with both pixels inside the mask count (e.g. labelled tissue).

    Returns
    -------
    SeamCounts
        Additive counts: sum them over disjoint windows to stream (pairs straddling two
        windows are then not counted, so prefer whole working-level maps or row bands).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    valid = labels != 0
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"mask shape {mask.shape} differs from labels {labels.shape}")
        valid &= mask.astype(bool)
    h = _axis_counts(labels, valid, np.asarray(col_borders), axis=1)
    v = _axis_counts(labels, valid, np.asarray(row_borders), axis=0)
    return SeamCounts(h[0] + v[0], h[1] + v[1], h[2] + v[2], h[3] + v[3])


def tile_constant(truth: np.ndarray, tile: int, mask: np.ndarray | None = None) -> np.ndarray:
    """The tile-constant oracle: each tile filled with the majority truth label of its pixels.

    Parameters
    ----------
    truth : numpy.ndarray
        ``(H, W)`` label ids (0 = no label, never a majority).
    tile : int
        Tile side of a grid anchored at ``(0, 0)`` (edge tiles are cut to the map).
    mask : numpy.ndarray, optional
        ``(H, W)`` bool; only pixels inside it vote (e.g. tissue).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` map of ``truth``'s dtype; a tile without voting pixels is 0. Ties go to
        the smaller label id.
    """
    truth = np.asarray(truth)
    if truth.ndim != 2:
        raise ValueError(f"truth must be 2-D, got shape {truth.shape}")
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    votes = truth != 0
    if mask is not None:
        votes &= np.asarray(mask, dtype=bool)
    out = np.zeros_like(truth)
    h, w = truth.shape
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            t = truth[y : y + tile, x : x + tile][votes[y : y + tile, x : x + tile]]
            if t.size:
                out[y : y + tile, x : x + tile] = np.bincount(t.astype(np.int64)).argmax()
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``, ``nan`` left out.

    Returns
    -------
    mean, sd : float
        ``nan`` mean without values; ``nan`` sd with fewer than two.
    """
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan
