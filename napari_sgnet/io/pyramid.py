"""The lazy multiscale image: levels largest first, downsample factors, µm/px."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box

__all__ = ["Pyramid", "read_window"]


@dataclass(frozen=True)
class Pyramid:
    """A lazy image pyramid.

    Parameters
    ----------
    levels : tuple of dask.array.Array
        Level arrays, largest first, each ``(H, W)`` or ``(H, W, C)``.
    downsamples : tuple of float
        Downsample factor of each level relative to level 0 (``1.0`` first).
    mpp : float or None
        Physical pixel size of level 0 in µm/px, when known.
    source : Path or None
        The file or folder the pyramid was opened from.
    name : str
        Display name (file stem by default).
    metadata : dict
        Format-specific extras (vendor, objective power, ...).
    """

    levels: tuple[da.Array, ...]
    downsamples: tuple[float, ...]
    mpp: float | None = None
    source: Path | None = None
    name: str = "image"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a pyramid needs at least one level")
        if len(self.levels) != len(self.downsamples):
            raise ValueError("levels and downsamples differ in length")
        if abs(self.downsamples[0] - 1.0) > 1e-6:
            raise ValueError("level 0 must have downsample 1.0")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0."""
        return tuple(self.levels[0].shape)

    @property
    def height(self) -> int:
        """Rows of level 0."""
        return int(self.levels[0].shape[0])

    @property
    def width(self) -> int:
        """Columns of level 0."""
        return int(self.levels[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype."""
        return self.levels[0].dtype

    @property
    def is_rgb(self) -> bool:
        """True for 3- or 4-channel colour images (channel last)."""
        return self.levels[0].ndim == 3 and self.levels[0].shape[-1] in (3, 4)

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.levels)

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of a level."""
        arr = self.levels[level]
        return int(arr.shape[1]), int(arr.shape[0])

    def level_mpp(self, level: int) -> float | None:
        """µm/px of a level, when the base µm/px is known."""
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def level_for_downsample(self, downsample: float) -> int:
        """Index of the coarsest level whose downsample does not exceed ``downsample``
        (level 0 when every level's does): the level to read and reduce from."""
        best = 0
        for i, ds in enumerate(self.downsamples):
            if ds <= downsample * (1 + 1e-6) and ds >= self.downsamples[best]:
                best = i
        return best

    def read(self, box: Box, level: int = 0, pad_value: int = 0) -> np.ndarray:
        """Read a window of a level, padded with ``pad_value`` past the image edge.

        Parameters
        ----------
        box : Box
            Window in the pixels of ``level``; may extend past the image.
        level : int
            Pyramid level.
        pad_value : int
            Value for pixels outside the image.

        Returns
        -------
        numpy.ndarray
            ``(box.h, box.w[, C])`` array.
        """
        return read_window(self.levels[level], box, pad_value=pad_value)

    def with_mpp(self, mpp: float | None) -> Pyramid:
        """The same pyramid with an overridden level-0 µm/px.

        ``metadata`` records the override as the readers do (``mpp_source`` ``"override"``,
        ``file_mpp`` the value it replaces), so a disagreement can be warned about.
        """
        meta = dict(self.metadata)
        if mpp is not None and meta.get("mpp_source") != "override":
            meta.update(mpp_source="override", file_mpp=self.mpp)
        return Pyramid(self.levels, self.downsamples, mpp, self.source, self.name, meta)

    def summary(self) -> str:
        """A human-readable multi-line description."""
        lines = [
            f"{self.name}: {self.width} x {self.height} px, {self.n_levels} level(s), "
            f"dtype {self.dtype}, {'RGB' if self.is_rgb else 'grey/multichannel'}",
            f"  µm/px: {self.mpp if self.mpp is not None else 'unknown'}",
        ]
        for i, (arr, ds) in enumerate(zip(self.levels, self.downsamples, strict=True)):
            chunks = "x".join(str(c[0]) for c in arr.chunks[:2])
            lines.append(
                f"  level {i}: {arr.shape[1]} x {arr.shape[0]}  downsample {ds:g}  chunks {chunks}"
            )
        if self.source is not None:
            lines.append(f"  source: {self.source}")
        return "\n".join(lines)


def read_window(array: Any, box: Box, pad_value: int = 0) -> np.ndarray:
    """Read ``box`` from a 2-D (+channels) array-like, padding outside the array.

    Works for dask arrays, zarr arrays and numpy arrays alike.
    """
    h, w = int(array.shape[0]), int(array.shape[1])
    out_shape = (box.h, box.w, *tuple(array.shape[2:]))
    inside = box.clip(w, h)
    if inside == box:
        data = array[box.y : box.y1, box.x : box.x1]
        return np.asarray(data.compute() if hasattr(data, "compute") else data)
    out = np.full(out_shape, pad_value, dtype=array.dtype)
    if not inside.is_empty:
        data = array[inside.y : inside.y1, inside.x : inside.x1]
        data = np.asarray(data.compute() if hasattr(data, "compute") else data)
        rel = inside.relative_to(box)
        out[rel.y : rel.y1, rel.x : rel.x1] = data
    return out
