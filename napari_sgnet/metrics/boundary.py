"""Boundary F-score: how well predicted class borders follow the true ones.

Part of :mod:`napari_sgnet.metrics` (pure numpy; scipy's distance transform imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BoundaryScore", "boundary_f", "class_boundaries"]


@dataclass(frozen=True)
class BoundaryScore:
    """Boundary-pixel counts of a truth/prediction pair (additive: pool by adding).

    Attributes
    ----------
    truth_pixels, truth_matched : int
        True boundary pixels, and those with a predicted boundary pixel within the tolerance.
    pred_pixels, pred_matched : int
        Predicted boundary pixels, and those with a true boundary pixel within the tolerance.
    """

    truth_pixels: int = 0
    truth_matched: int = 0
    pred_pixels: int = 0
    pred_matched: int = 0

    def __add__(self, other: BoundaryScore) -> BoundaryScore:
        return BoundaryScore(
            self.truth_pixels + other.truth_pixels,
            self.truth_matched + other.truth_matched,
            self.pred_pixels + other.pred_pixels,
            self.pred_matched + other.pred_matched,
        )

    def _empty(self) -> float | None:
        """1 when neither map has a boundary, 0 when one has none, ``None`` otherwise."""
        if self.truth_pixels == 0 and self.pred_pixels == 0:
            return 1.0
        if self.truth_pixels == 0 or self.pred_pixels == 0:
            return 0.0
        return None

    @property
    def precision(self) -> float:
        """Matched predicted boundary pixels / predicted boundary pixels."""
        e = self._empty()
        return e if e is not None else self.pred_matched / self.pred_pixels

    @property
    def recall(self) -> float:
        """Matched true boundary pixels / true boundary pixels."""
        e = self._empty()
        return e if e is not None else self.truth_matched / self.truth_pixels

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "f1": round(self.f1, 6),
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "truth_pixels": self.truth_pixels,
            "pred_pixels": self.pred_pixels,
        }


def class_boundaries(labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with a 4-neighbour of a different label, both inside ``mask``.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` label ids.
    mask : numpy.ndarray, optional
        ``(H, W)`` bool; pixels outside it are never boundary pixels and never make one
        (the tissue edge is not a class boundary). Default: every pixel.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool boundary map.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    valid = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != labels.shape:
        raise ValueError(f"mask shape {valid.shape} differs from labels {labels.shape}")
    out = np.zeros(labels.shape, dtype=bool)
    h = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    v = (labels[1:] != labels[:-1]) & valid[1:] & valid[:-1]
    out[:, 1:] |= h
    out[:, :-1] |= h
    out[1:] |= v
    out[:-1] |= v
    return out


def _matched(source: np.ndarray, target: np.ndarray, tolerance: float) -> int:
    """Pixels of ``source`` with a ``target`` pixel within ``tolerance`` (Euclidean)."""
    from scipy import ndimage  # only here: importing the metrics stays cheap

    if not source.any() or not target.any():
        return 0
    distance = ndimage.distance_transform_edt(~target)
    return int((distance[source] <= tolerance).sum())


def boundary_f(
    truth: np.ndarray,
    prediction: np.ndarray,
    tolerance: float,
    mask: np.ndarray | None = None,
) -> BoundaryScore:
    """Boundary precision / recall / F of a prediction against the ground truth.

    Parameters
    ----------
    truth, prediction : numpy.ndarray
        ``(H, W)`` label-id maps.
    tolerance : float
        Match distance in pixels: a boundary pixel is matched when the other map has a
        boundary pixel at most this far (Euclidean distance between pixel centres).
    mask : numpy.ndarray, optional
        ``(H, W)`` bool scored pixels (e.g. labelled tissue), see :func:`class_boundaries`.

    Returns
    -------
    BoundaryScore
        Counts; ``.f1``, ``.precision``, ``.recall`` (no boundary in either map: 1; in one
        map only: 0).
    """
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"shape mismatch: truth {truth.shape} vs prediction {prediction.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    bt = class_boundaries(truth, mask)
    bp = class_boundaries(prediction, mask)
    return BoundaryScore(
        truth_pixels=int(bt.sum()),
        truth_matched=_matched(bt, bp, tolerance),
        pred_pixels=int(bp.sum()),
        pred_matched=_matched(bp, bt, tolerance),
    )
