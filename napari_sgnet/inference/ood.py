"""The out-of-distribution check: how far tiles are from the model's training tiles (no torch).

A tile is described twice (see :class:`~napari_sgnet.config.OODReference`):

- **colour**: mean and standard deviation of the optical density ``-log10((I + 1) / 256)``
  of its tissue pixels, per RGB channel (6 values). Its distance is the Mahalanobis
  distance to the training tiles' mean under their full covariance, divided by
  ``sqrt(6)`` (so a typical training tile is at about 1);
- **features**: the spatial mean of the model's decoder features (one value per channel,
  taken by :mod:`napari_sgnet.inference.ood_tap` while the model predicts). Its distance
  is the root-mean-square z-score against the training tiles' per-channel mean and
  standard deviation.

Only tiles whose pixels are at least :data:`MIN_TISSUE` tissue are judged (the training
sampler's rule), tissue being :func:`tissue_pixels` (``max(RGB) - min(RGB) >
TISSUE_SATURATION``, the pixels the training sampler counts as tissue).
A slide or a view is judged by the **median** distance of its judged tiles: it is out of
distribution when the median exceeds the threshold, i.e. more than half its tiles are
beyond what 99% of held-out in-distribution tiles reach (the calibration rule). A model
without statistics, or a region without tissue tiles, gives "cannot judge", never a pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sgnet.config import OODReference

__all__ = [
    "CANNOT_JUDGE",
    "IN_DISTRIBUTION",
    "OUT_OF_DISTRIBUTION",
    "OODMonitor",
    "OODResult",
    "cannot_judge",
    "colour_descriptors",
    "colour_distances",
    "feature_distances",
    "judge",
    "tissue_pixels",
]

#: A tile is judged when at least this share of its pixels is tissue.
MIN_TISSUE = 0.5
IN_DISTRIBUTION = "in distribution"
OUT_OF_DISTRIBUTION = "out of distribution"
CANNOT_JUDGE = "cannot judge"
#: Pixels with ``max(RGB) - min(RGB)`` above this are tissue (:func:`tissue_pixels`).
TISSUE_SATURATION = 25


def tissue_pixels(rgb: np.ndarray, min_saturation: int = TISSUE_SATURATION) -> np.ndarray:
    """Stained tissue is saturated, glass is not: ``max(RGB) - min(RGB) > min_saturation``.

    Pixel by pixel, on uint8 RGB of any leading shape (a tile, a batch of tiles): the rule
    of the training sampler (``training.dataset``) and of the colour descriptors here. The
    slide-level glass decision is :func:`napari_sgnet.inference.tissue.tissue_mask`.
    """
    rgb = rgb[..., :3]
    return (rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)) > min_saturation


def colour_descriptors(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour descriptors of a batch of tiles.

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(B, H, W, 3+)`` uint8 RGB.

    Returns
    -------
    descriptors : numpy.ndarray
        ``(B, 6)`` float64: optical-density mean (R, G, B) then standard deviation of the
        tissue pixels; NaN rows for tiles that are not judged.
    usable : numpy.ndarray
        ``(B,)`` bool, True where at least :data:`MIN_TISSUE` of the tile is tissue.
    """
    rgb = np.asarray(tiles)[..., :3]
    if rgb.ndim == 3:
        rgb = rgb[None]
    tissue = tissue_pixels(rgb).astype(np.float64)
    count = tissue.sum(axis=(1, 2))
    usable = count >= MIN_TISSUE * tissue[0].size if len(rgb) else np.zeros(0, bool)
    od = -np.log10((rgb.astype(np.float64) + 1.0) / 256.0)
    w = tissue[..., None]
    n = np.maximum(count, 1.0)[:, None]
    mean = (od * w).sum(axis=(1, 2)) / n
    var = ((od - mean[:, None, None, :]) ** 2 * w).sum(axis=(1, 2)) / n
    desc = np.concatenate([mean, np.sqrt(var)], axis=1)
    desc[~usable] = np.nan
    return desc, usable


def colour_distances(desc: np.ndarray, ref: OODReference) -> np.ndarray:
    """Mahalanobis distance / sqrt(dims) of colour descriptors to the reference."""
    mean = np.asarray(ref.colour_mean)
    prec = np.linalg.pinv(np.asarray(ref.colour_cov, dtype=np.float64))
    d = np.asarray(desc, dtype=np.float64) - mean
    m2 = np.einsum("bi,ij,bj->b", d, prec, d)
    return np.asarray(np.sqrt(np.maximum(m2, 0.0) / len(mean)))


def feature_distances(features: np.ndarray, ref: OODReference) -> np.ndarray:
    """Root-mean-square z-score of pooled features against the reference (NaN without stats)."""
    feats = np.asarray(features, dtype=np.float64)
    if ref.feature_mean is None or ref.feature_std is None:
        return np.full(len(feats), np.nan)
    z = (feats - np.asarray(ref.feature_mean)) / np.asarray(ref.feature_std)
    return np.asarray(np.sqrt(np.mean(z**2, axis=1)))


@dataclass(frozen=True)
class OODResult:
    """The verdict of the out-of-distribution check on a slide, a view or a run.

    Attributes
    ----------
    status : {"in distribution", "out of distribution", "cannot judge"}
    scope : str
        ``"slide"``, ``"view"`` or ``"region"``: what was judged.
    colour, feature : float or None
        Median tile distances (``None`` when not measured).
    colour_threshold, feature_threshold : float or None
        The model's calibrated thresholds.
    tiles : int
        Tiles judged.
    reason : str
        Why the check cannot judge, or what it skipped.
    """

    status: str
    scope: str = "slide"
    colour: float | None = None
    feature: float | None = None
    colour_threshold: float | None = None
    feature_threshold: float | None = None
    tiles: int = 0
    reason: str = ""

    @property
    def out_of_distribution(self) -> bool:
        """True when the check triggered."""
        return self.status == OUT_OF_DISTRIBUTION

    @property
    def judged(self) -> bool:
        """True unless the check could not judge."""
        return self.status != CANNOT_JUDGE

    def details(self) -> str:
        """The distances and thresholds, e.g. ``colour distance 3.10 (threshold 1.20)``."""
        parts = []
        for name, value, thr in (
            ("colour", self.colour, self.colour_threshold),
            ("feature", self.feature, self.feature_threshold),
        ):
            if value is not None and thr is not None:
                parts.append(f"{name} distance {value:.2f} (threshold {thr:.2f})")
        return ", ".join(parts)

    def message(self) -> str:
        """One line for the CLI, the dock and the logs."""
        if self.status == CANNOT_JUDGE:
            return f"out-of-distribution check: cannot judge the {self.scope}: {self.reason}"
        extra = f"; {self.reason}" if self.reason else ""
        if self.out_of_distribution:
            return (
                f"warning: the {self.scope} is out of distribution for this model "
                f"({self.details()}; {self.tiles} tiles){extra}; its labels may be unreliable"
            )
        return (
            f"out-of-distribution check: the {self.scope} is within the training distribution "
            f"({self.details()}; {self.tiles} tiles){extra}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (label store, exports, ``--json``)."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 4)

        return {
            "status": self.status,
            "scope": self.scope,
            "colour": r(self.colour),
            "feature": r(self.feature),
            "colour_threshold": r(self.colour_threshold),
            "feature_threshold": r(self.feature_threshold),
            "tiles": int(self.tiles),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def cannot_judge(reason: str, scope: str = "slide") -> OODResult:
    """The result when the check has nothing to judge with (or nothing to judge)."""
    return OODResult(CANNOT_JUDGE, scope=scope, reason=reason)


def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def judge(
    reference: OODReference | None,
    colour: np.ndarray,
    feature: np.ndarray | None = None,
    *,
    scope: str = "slide",
    note: str = "",
) -> OODResult:
    """Judge tiles by their distances.

    Parameters
    ----------
    reference : OODReference or None
        The model's statistics (``None``: cannot judge).
    colour : numpy.ndarray
        Colour distances of the judged tiles.
    feature : numpy.ndarray, optional
        Feature distances of the same tiles (NaN or ``None`` where not measured).
    scope : str
        What the tiles are (``"slide"``, ``"view"``, ``"region"``).
    note : str
        Added to the result's ``reason`` (e.g. why features were skipped).
    """
    if reference is None:
        return cannot_judge(
            "the model has no training statistics (add them with napari-sgnet calibrate-ood)",
            scope,
        )
    if reference.colour_threshold is None:
        return cannot_judge("the model's statistics have no calibrated threshold", scope)
    colour = np.asarray(colour, dtype=np.float64)
    if colour.size == 0:
        return cannot_judge(f"no tile is at least {MIN_TISSUE:.0%} tissue", scope)
    c = _median(colour)
    f = _median(np.asarray(feature, dtype=np.float64)) if feature is not None else None
    f_thr = reference.feature_threshold if f is not None else None
    ood = (c is not None and c > reference.colour_threshold) or (
        f is not None and f_thr is not None and f > f_thr
    )
    return OODResult(
        OUT_OF_DISTRIBUTION if ood else IN_DISTRIBUTION,
        scope=scope,
        colour=c,
        feature=f if f_thr is not None else None,
        colour_threshold=reference.colour_threshold,
        feature_threshold=f_thr,
        tiles=int(colour.size),
        reason=note,
    )


class OODMonitor:
    """Collects the tile distances of a run (thread-safe) and judges them on demand.

    Parameters
    ----------
    reference : OODReference or None
        The model's statistics.
    scope : str
        What the run covers (``"slide"`` or ``"view"``).
    use_features : bool
        Judge feature distances too (False when the statistics belong to other weights).
    note : str
        Reported with the result (e.g. why features are not judged).
    """

    def __init__(
        self,
        reference: OODReference | None,
        scope: str = "slide",
        *,
        use_features: bool = True,
        note: str = "",
    ) -> None:
        self.reference = reference
        self.scope = scope
        self.use_features = use_features and reference is not None and (
            reference.feature_mean is not None
        )
        self.note = note
        self._colour: list[np.ndarray] = []
        self._feature: list[np.ndarray] = []
        self._lock = threading.Lock()

    def add(self, tiles: np.ndarray, features: np.ndarray | None = None) -> None:
        """Add a batch: ``(B, H, W, 3)`` uint8 tiles and their ``(B, C)`` pooled features."""
        if self.reference is None:
            return
        desc, usable = colour_descriptors(tiles)
        if not usable.any():
            return
        col = colour_distances(desc[usable], self.reference)
        if self.use_features and features is not None:
            feat = feature_distances(np.asarray(features)[usable], self.reference)
        else:
            feat = np.full(col.shape, np.nan)
        with self._lock:
            self._colour.append(col)
            self._feature.append(feat)

    @property
    def tiles(self) -> int:
        """Tiles judged so far."""
        with self._lock:
            return int(sum(len(c) for c in self._colour))

    def result(self) -> OODResult:
        """The verdict over every tile added so far."""
        with self._lock:
            col = np.concatenate(self._colour) if self._colour else np.zeros(0)
            feat = np.concatenate(self._feature) if self._feature else np.zeros(0)
        features = feat if self.use_features else None
        return judge(self.reference, col, features, scope=self.scope, note=self.note)
