"""What to run (:class:`InferenceRequest`) and what the engine reports (:class:`ProgressEvent`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.ood import OODResult
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["DEVICES", "PRECISIONS", "InferenceRequest", "ProgressEvent", "RequestError"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
ORDERS = ("raster", "center")


class RequestError(UserInputError):
    """An inference request is invalid (bad region, overlap, device, ...)."""


def _as_box(region: Any) -> Box | None:
    if region is None or isinstance(region, Box):
        return region
    try:
        x, y, w, h = (int(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"region must be a Box or (x, y, w, h), got {region!r}") from exc
    if w <= 0 or h <= 0:
        raise RequestError(f"region must have a positive size, got {w} x {h}")
    return Box(x, y, w, h)


@dataclass(frozen=True)
class InferenceRequest:
    """One inference job: which slide, which model, where, how, into which store.

    Parameters
    ----------
    slide : str, Path or Pyramid
        The slide file (opened with the project's readers) or an open pyramid.
    store : str or Path
        The label store folder; created when missing.
    model : str, Path, nn.Module, Predictor or None
        A checkpoint folder, a loaded model (with ``.config``), a :class:`Predictor`,
        or ``None`` for the bundled default model.
    region : Box or (x, y, w, h), optional
        Region in slide level-0 pixels; ``None`` for the whole slide. Every tile that
        meets the region is predicted whole.
    device : {"auto", "cpu", "cuda", "mps"} or "cuda:N"
        Where the model runs; ``"auto"`` picks CUDA, then MPS, then CPU.
    batch_size : int
        Tiles per forward pass.
    overlap : int
        Pixels (at the inference level) cropped from each side of every predicted
        patch; tiles are ``patch - 2 * overlap`` wide. 0 is the paper's setting.
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` uses bf16 autocast on CUDA devices that support it, else fp32.
    skip_glass : bool
        Detect tissue on a low-resolution level and do not run the model on glass.
    tissue_threshold : float, optional
        Saturation threshold (0-1) for tissue; ``None`` uses the glass's own saturation
        plus a margin (see :mod:`napari_sgnet.inference.tissue`).
    glass_label : int or None
        ``None`` (default): glass (glass tiles, and the tissue mask's glass pixels of
        predicted tiles) gets label 0, "no label", confidence 0. An int writes that label
        with confidence 255 instead (for a palette with an explicit background class).
    resume : bool
        Skip tiles the store's done-map marks as finished by the same model. When
        the store holds another model's predictions, ``True`` re-predicts everything
        with the new model (keeping edits) and ``False`` refuses.
    overwrite : bool
        Delete an existing store (including edits) and start afresh.
    repredict_other_model : bool
        With ``resume``: whether a store holding another model's predictions is re-predicted
        (``True``) or refused (``False``: the CLI's default, which ``--resume`` lifts).
    order : {"raster", "center"}
        Tile order: row by row, or nearest to the region's centre first (viewports).
    mpp : float, optional
        Override the slide's level-0 µm/px.
    prefetch : int
        Batches read ahead of the model on background threads.
    readers : int
        Threads reading and decoding windows.
    commit_interval : float
        Seconds between commits of finished tiles (coarser levels + done-map), i.e.
        how often a viewer sees new tiles; the first batch and the last are always
        committed at once. 0 commits after every batch.
    regions : str, Path or Annotations, optional
        Polygons (a QuPath GeoJSON file, slide level-0 pixels; classes ignored): only the
        tiles they cover are predicted, each whole (see :mod:`napari_sgnet.inference.regions`).
        Not together with ``region``.
    probabilities : bool
        Keep the per-class probabilities (softmax x 255, uint8) in the store's optional
        ``probabilities`` array (a new store, or one with no tile done yet; a store that
        keeps them is always written with them). Needs a predictor with
        ``predict_probabilities`` (every checkpoint's has one).
    threads : int, optional
        torch CPU threads of the forward pass. ``None``: this process's default (the
        distributed driver hands its own count to every worker). The float result of a
        CPU convolution depends on the thread count, so runs that must agree byte for byte
        use the same ``threads`` (and ``batch_size``, device and precision; see
        docs/inference.md, "Determinism").
    """

    slide: str | Path | Pyramid
    store: str | Path
    model: Any = None
    region: Box | tuple[int, int, int, int] | None = None
    device: str = "auto"
    batch_size: int = 8
    overlap: int = 0
    precision: str = "auto"
    skip_glass: bool = True
    tissue_threshold: float | None = None
    glass_label: int | None = None
    resume: bool = True
    overwrite: bool = False
    repredict_other_model: bool = True
    order: str = "raster"
    mpp: float | None = None
    prefetch: int = 2
    readers: int = 2
    commit_interval: float = 0.5
    regions: Any = field(default=None, compare=False)
    threads: int | None = None
    probabilities: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", _as_box(self.region))
        if self.region is not None and self.regions is not None:
            raise RequestError("give a rectangular region or polygon regions, not both")
        if isinstance(self.regions, (str, os.PathLike)):
            object.__setattr__(self, "regions", Path(self.regions))
        object.__setattr__(self, "store", Path(self.store))
        if isinstance(self.slide, (str, os.PathLike)):
            object.__setattr__(self, "slide", Path(self.slide))
        elif not isinstance(self.slide, Pyramid):
            kind = type(self.slide).__name__
            raise RequestError(f"slide must be a path or a Pyramid, got {kind}")
        base = self.device.split(":", 1)[0]
        if base not in DEVICES or (":" in self.device and base != "cuda"):
            raise RequestError(f"device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise RequestError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.order not in ORDERS:
            raise RequestError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.batch_size < 1:
            raise RequestError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.overlap < 0:
            raise RequestError(f"overlap must be >= 0, got {self.overlap}")
        if self.commit_interval < 0:
            raise RequestError(f"commit_interval must be >= 0, got {self.commit_interval}")
        if self.threads is not None and self.threads < 1:
            raise RequestError(f"threads must be >= 1, got {self.threads}")
        if self.prefetch < 1 or self.readers < 1:
            raise RequestError("prefetch and readers must be >= 1")
        if self.glass_label is not None and not 0 <= self.glass_label <= 255:
            raise RequestError(f"glass_label must be 0-255 or None, got {self.glass_label}")
        if self.tissue_threshold is not None and not 0 <= self.tissue_threshold <= 1:
            raise RequestError(f"tissue_threshold must be in [0, 1], got {self.tissue_threshold}")
        if self.mpp is not None and self.mpp <= 0:
            raise RequestError(f"mpp must be positive, got {self.mpp}")

    def replace(self, **changes: Any) -> InferenceRequest:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of a run; the last event of a run is its summary.

    Pixel counts are at the inference level (the model's resolution).

    Attributes
    ----------
    stage : {"started", "progress", "completed", "cancelled"}
    tiles_done : int
        Tiles finished by this run (predicted + glass).
    tiles_total : int
        Tiles this run has to do (excluding those already done).
    tiles_predicted, tiles_glass, tiles_cached : int
        Run through the model; written as glass; skipped because already done.
    megapixels : float
        Area of the finished tiles, in millions of inference-level pixels.
    elapsed_s : float
        Seconds since the run started.
    boxes : tuple of Box
        Slide level-0 boxes whose labels changed since the previous event.
    store : Path
        The label store.
    level, downsample : int, float
        Slide pyramid level the model runs at, and its downsample.
    tissue_fraction : float or None
        Fraction of the requested tiles that hold tissue (``None`` without detection).
    ood : OODResult or None
        The out-of-distribution check of the tiles predicted so far
        (:mod:`napari_sgnet.inference.ood`); ``None`` when the executor does not judge.
    """

    stage: str
    tiles_done: int
    tiles_total: int
    tiles_predicted: int
    tiles_glass: int
    tiles_cached: int
    megapixels: float
    elapsed_s: float
    store: Path
    level: int
    downsample: float
    tissue_fraction: float | None = None
    boxes: tuple[Box, ...] = field(default=())
    ood: OODResult | None = None

    @property
    def fraction(self) -> float:
        """Share of this run's tiles finished (1.0 for an empty run)."""
        return 1.0 if self.tiles_total == 0 else self.tiles_done / self.tiles_total

    @property
    def mpix_per_s(self) -> float:
        """Throughput in inference-level megapixels per second."""
        return self.megapixels / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds to finish, ``None`` before the first tile."""
        if self.tiles_done == 0:
            return None
        return self.elapsed_s / self.tiles_done * (self.tiles_total - self.tiles_done)

    @property
    def finished(self) -> bool:
        """True for the last event of a run."""
        return self.stage in ("completed", "cancelled")
