"""The working level: a slide seen at the model's µm/px, whatever levels its pyramid has.

:func:`working_level` picks the level to read (:func:`napari_sgnet.geometry.source_level_for_mpp`):
a level within 1% of the model's µm/px is read as it is (no resampling, so outputs stay
byte-identical); otherwise the nearest finer level is read and reduced on the fly
(:mod:`napari_sgnet.io.resample`: area mean for images, mode/nearest for labels). Inference,
evaluation, training and fine-tuning all read through a :class:`WorkingLevel`, so a window at
a given working box is the same pixels for all of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from napari_sgnet.errors import SlideError
from napari_sgnet.geometry import MPP_TOLERANCE, Box, source_level_for_mpp
from napari_sgnet.io.pyramid import Pyramid, read_window
from napari_sgnet.io.resample import ResampledLevel, integer_factor

__all__ = [
    "OVERRIDE_DISAGREEMENT",
    "ScaleError",
    "WorkingLevel",
    "describe_resolution",
    "mpp_override_warning",
    "store_working_level",
    "working_level",
]

log = logging.getLogger(__name__)

#: An ``--mpp`` override further than this factor from the file's own µm/px is warned about.
OVERRIDE_DISAGREEMENT = 2.0
#: Chunk side of the lazy (dask) form of a resampled level.
_CHUNK = 256


class ScaleError(SlideError):
    """The slide cannot be seen at the model's µm/px (unknown, or coarser than the model)."""


def _slide_path(pyramid: Pyramid) -> str:
    return str(pyramid.source) if pyramid.source is not None else pyramid.name


@dataclass(frozen=True)
class WorkingLevel:
    """A pyramid level as the model sees it: read as it is, or reduced by ``factor``.

    Attributes
    ----------
    pyramid : Pyramid
        The slide (or a label pyramid).
    level : int
        The source level read.
    factor : float
        Source-level pixels per working pixel (``1.0``: the level itself).
    labels : bool
        A label pyramid: reduced by mode/nearest, never by the mean.
    """

    pyramid: Pyramid
    level: int
    factor: float = 1.0
    labels: bool = False

    @property
    def exact(self) -> bool:
        """True when the level is read as it is (no resampling)."""
        return self.factor == 1.0

    @property
    def downsample(self) -> float:
        """Slide level-0 pixels per working pixel."""
        return float(self.pyramid.downsamples[self.level]) * self.factor

    @property
    def mpp(self) -> float | None:
        """µm/px of the working level, when the slide's is known."""
        src = self.pyramid.level_mpp(self.level)
        return None if src is None else src * self.factor

    @property
    def source_mpp(self) -> float | None:
        """µm/px of the source level read."""
        return self.pyramid.level_mpp(self.level)

    @property
    def method(self) -> str:
        """``"none"``, ``"area"`` (images), ``"mode"`` or ``"nearest"`` (labels)."""
        if self.exact:
            return "none"
        if not self.labels:
            return "area"
        return "mode" if integer_factor(self.factor) is not None else "nearest"

    @cached_property
    def array(self) -> Any:
        """The working level as an array-like: the level itself, or a :class:`ResampledLevel`."""
        source = self.pyramid.levels[self.level]
        if self.exact:
            return source
        w, h = self.size
        return ResampledLevel(source, self.factor, self.labels, shape=(h, w))

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the working level.

        A resampled level is ``ceil(level-0 size / downsample)``, the size a label store
        gives its level 0 at that downsample.
        """
        if self.exact:
            return self.pyramid.level_size(self.level)
        ds = self.downsample
        return int(np.ceil(self.pyramid.width / ds)), int(np.ceil(self.pyramid.height / ds))

    @property
    def width(self) -> int:
        """Columns of the working level."""
        return self.size[0]

    @property
    def height(self) -> int:
        """Rows of the working level."""
        return self.size[1]

    def read(self, box: Box, pad_value: int = 0) -> np.ndarray:
        """A window of the working level, padded with ``pad_value`` past its edge."""
        if self.exact:
            return self.pyramid.read(box, self.level, pad_value=pad_value)
        return read_window(self.array, box, pad_value=pad_value)

    def as_pyramid(self) -> tuple[Pyramid, int]:
        """``(pyramid, level)`` whose level is the working level.

        The pyramid itself when the level is read as it is; else a one-level pyramid over a
        lazy (dask) form of the reduced level, chunked so that each chunk reads only its own
        source window.
        """
        if self.exact:
            return self.pyramid, self.level
        source = self.pyramid.levels[self.level]
        token = tokenize(getattr(source, "name", None) or source, self.factor, self.labels)
        chunks = (_CHUNK, _CHUNK, *self.array.shape[2:])
        lazy = da.from_array(  # type: ignore[no-untyped-call]
            self.array, chunks=chunks, name=f"sgnet-resampled-{token}", asarray=False
        )
        meta = {**self.pyramid.metadata, "working": self.record()}
        return Pyramid((lazy,), (1.0,), self.mpp, self.pyramid.source, self.pyramid.name, meta), 0

    def record(self) -> dict[str, Any]:
        """What a label store records about the resolution it was made at."""
        return {
            "mpp": self.mpp,
            "downsample": self.downsample,
            "source_level": self.level,
            "source_mpp": self.source_mpp,
            "source_downsample": float(self.pyramid.downsamples[self.level]),
            "factor": self.factor,
            "resampling": self.method,
        }

    def describe(self) -> str:
        """One line, e.g. ``4 µm/px (slide level 1 at 2 µm/px, area-averaged 2x)``."""
        return describe_resolution(self.record())


def describe_resolution(record: dict[str, Any]) -> str:
    """One line for a :meth:`WorkingLevel.record` (as a label store keeps it)."""
    mpp, src = record.get("mpp"), record.get("source_mpp")
    text = "unknown µm/px" if mpp is None else f"{mpp:.4g} µm/px"
    at = "" if src is None else f" at {src:.4g} µm/px"
    method, factor = record.get("resampling", "none"), float(record.get("factor", 1.0))
    verb = {"area": "area-averaged", "mode": "mode of", "nearest": "nearest of"}.get(method)
    how = "read as it is" if verb is None else f"{verb} {factor:.4g}x"
    return f"{text} (slide level {record.get('source_level', 0)}{at}, {how})"


def working_level(
    pyramid: Pyramid,
    target_mpp: float | None,
    *,
    labels: bool = False,
    require_mpp: bool = True,
    rel_tol: float = MPP_TOLERANCE,
) -> WorkingLevel:
    """The working level of ``pyramid`` for a model at ``target_mpp``.

    Parameters
    ----------
    pyramid : Pyramid
        The slide (or a label pyramid with ``labels=True``).
    target_mpp : float or None
        The model's µm/px; ``None``: level 0 as it is.
    labels : bool
        Reduce by mode/nearest instead of the area mean.
    require_mpp : bool
        Refuse a slide without µm/px (else its level 0 is used as it is).
    rel_tol : float
        A level this close (relative) to ``target_mpp`` is read as it is.

    Raises
    ------
    ScaleError
        The slide has no µm/px (and ``require_mpp``), or its finest level is coarser than
        ``target_mpp`` by more than ``rel_tol``.
    """
    if target_mpp is None:
        return WorkingLevel(pyramid, 0, 1.0, labels)
    if pyramid.mpp is None:
        if require_mpp:
            raise ScaleError(
                _slide_path(pyramid),
                f"the slide does not say its µm per pixel, and the model runs at "
                f"{target_mpp:g} µm/px; pass the slide's level-0 µm/px (--mpp)",
            )
        return WorkingLevel(pyramid, 0, 1.0, labels)
    level, factor = source_level_for_mpp(pyramid.downsamples, pyramid.mpp, target_mpp, rel_tol)
    if factor < 1.0:
        raise ScaleError(
            _slide_path(pyramid),
            f"the slide's finest level is {pyramid.mpp:g} µm/px, coarser than the "
            f"{target_mpp:g} µm/px the model needs (upsampling would invent detail); use a "
            "finer scan or a model trained at a coarser resolution",
        )
    return _reduced(pyramid, level, factor, labels)


def _reduced(pyramid: Pyramid, level: int, factor: float, labels: bool) -> WorkingLevel:
    """``level`` reduced by ``factor``, a factor within 1e-6 of an integer taken as it."""
    k = integer_factor(factor)
    return WorkingLevel(pyramid, level, float(k) if k is not None else factor, labels)


def store_working_level(
    pyramid: Pyramid, resolution: Mapping[str, Any] | None, downsample: float
) -> WorkingLevel:
    """The working level of ``pyramid`` that a label store's level 0 was made at.

    The source level and factor the store's resolution record names
    (:meth:`WorkingLevel.record`, kept as ``LabelStore.resolution``): the very reads the
    engine made, whatever µm/px the slide says now. A store without the record (made before
    it was kept, or created directly) is at ``downsample`` (``LabelStore.base_downsample``):
    the coarsest level not coarser than it, reduced by the rest.

    Callers check that the result's :attr:`~WorkingLevel.size` is the store's level-0 size.
    """
    record = resolution or {}
    level = record.get("source_level")
    if isinstance(level, int) and 0 <= level < pyramid.n_levels:
        return _reduced(pyramid, level, float(record.get("factor", 1.0)), False)
    level = pyramid.level_for_downsample(downsample)
    return _reduced(pyramid, level, downsample / float(pyramid.downsamples[level]), False)


def mpp_override_warning(pyramid: Pyramid) -> str | None:
    """A warning when an ``--mpp`` override disagrees with the file's own µm/px by > 2x.

    The readers record the file's value as ``metadata["file_mpp"]`` when overridden.
    """
    if pyramid.metadata.get("mpp_source") != "override":
        return None
    file_mpp, mpp = pyramid.metadata.get("file_mpp"), pyramid.mpp
    if not isinstance(file_mpp, (int, float)) or file_mpp <= 0 or mpp is None:
        return None
    if abs(math.log(mpp / file_mpp)) <= math.log(OVERRIDE_DISAGREEMENT) + 1e-12:
        return None
    return (
        f"{_slide_path(pyramid)}: the µm/px override {mpp:g} disagrees with the file's own "
        f"{file_mpp:g} µm/px by {max(mpp, file_mpp) / min(mpp, file_mpp):.3g}x; using {mpp:g}"
    )
