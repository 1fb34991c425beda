"""Label sources: one read interface over a LabelStore or an in-memory label pyramid.

Every exporter takes a :class:`LabelSource`, so writing a LabelStore from the CLI and
writing a napari Labels layer from the viewer go through the same code. A source
knows where its pixels lie on the slide: level ``k`` pixel ``(i, j)`` covers slide
level-0 pixels ``offset + (j, i) * slide_scale(k)`` to ``... + slide_scale(k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.pyramid import level_shapes, mode_downsample2
from napari_sgnet.io.labelstore.store import LabelStore
from napari_sgnet.io.pyramid import read_window
from napari_sgnet.palette import GLEASON, Palette

__all__ = ["LabelSource", "NearestLevel", "as_label_source", "mode_pyramid", "to_uint8_labels"]

#: Chunk side of the lazily built pyramid of an in-memory label image.
DEFAULT_CHUNK = 512


def to_uint8_labels(block: np.ndarray) -> np.ndarray:
    """Return ``block`` as uint8 label ids, raising ``ValueError`` for ids outside 0-255."""
    block = np.asarray(block)
    if block.dtype == np.uint8:
        return block
    if block.dtype == bool:
        return block.astype(np.uint8)
    if not np.issubdtype(block.dtype, np.integer):
        raise ValueError(f"label images must hold integer ids, got dtype {block.dtype}")
    if block.size and (int(block.min()) < 0 or int(block.max()) > 255):
        raise ValueError(
            f"label ids must lie in 0..255 to be exported, found {int(block.min())}.."
            f"{int(block.max())}"
        )
    return block.astype(np.uint8)


def _mode_block(block: np.ndarray) -> np.ndarray:
    return mode_downsample2(to_uint8_labels(block))


def mode_pyramid(level0: Any, chunk: int = DEFAULT_CHUNK) -> list[da.Array]:
    """Lazy coarser levels of a label image: repeated 2 x 2 modes (never means).

    Identical to a LabelStore's own pyramid: each level is ``ceil(previous / 2)`` and
    levels stop once the image fits one ``chunk``. Chunks are even-sized, so every
    2 x 2 block lies inside one chunk and the blockwise mode is exact.

    Returns
    -------
    list of dask.array.Array
        Level 0 (as uint8) first.
    """
    if chunk <= 0 or chunk % 2:
        raise ValueError(f"chunk must be a positive even number, got {chunk}")
    base = level0 if isinstance(level0, da.Array) else da.from_array(level0, chunks=chunk)
    levels = [base.rechunk((chunk, chunk)).map_blocks(to_uint8_labels, dtype=np.uint8)]
    for _ in level_shapes(int(base.shape[0]), int(base.shape[1]), chunk)[1:]:
        prev = levels[-1].rechunk((chunk, chunk))
        out_chunks = tuple(tuple((c + 1) // 2 for c in axis) for axis in prev.chunks)
        levels.append(prev.map_blocks(_mode_block, dtype=np.uint8, chunks=out_chunks))
    return levels


def _snap_downsample(ratio: float) -> float:
    """Snap a shape ratio (e.g. 401 / 201) to the power of two it stands for."""
    if ratio <= 0:
        raise ValueError(f"invalid downsample {ratio}")
    p = round(math.log2(ratio))
    return float(2**p) if abs(math.log2(ratio) - p) < 0.05 else float(ratio)


@dataclass(frozen=True)
class LabelSource:
    """A label pyramid to export, with its placement on the slide.

    Parameters
    ----------
    levels : tuple of array-like
        2-D label images (numpy, zarr or dask; integer ids 0..255), finest first.
    downsamples : tuple of float
        Downsample of each level relative to ``levels[0]`` (``1.0`` first).
    palette : Palette
        Classes of the label ids (id ``k + 1`` is class ``k``).
    base_downsample : float
        Downsample of ``levels[0]`` relative to the slide's level 0.
    mpp : float or None
        µm/px of the slide's level 0, when known.
    offset : tuple of float
        ``(x, y)`` of ``levels[0]``'s top-left pixel corner in slide level-0 pixels.
    slide_size : tuple of int or None
        ``(width, height)`` of the slide's level 0; exported coordinates are clipped to it.
    name : str
        Name recorded in the outputs.
    provenance : dict
        JSON-serialisable record of where the labels come from (store, model, commits).
    """

    levels: tuple[Any, ...]
    downsamples: tuple[float, ...]
    palette: Palette = GLEASON
    base_downsample: float = 1.0
    mpp: float | None = None
    offset: tuple[float, float] = (0.0, 0.0)
    slide_size: tuple[int, int] | None = None
    name: str = "labels"
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.levels or len(self.levels) != len(self.downsamples):
            raise ValueError("a label source needs levels with one downsample each")
        if abs(self.downsamples[0] - 1.0) > 1e-6:
            raise ValueError("level 0 of a label source must have downsample 1")
        for k, arr in enumerate(self.levels):
            if len(arr.shape) != 2:
                raise ValueError(f"label level {k} must be 2-D, got shape {tuple(arr.shape)}")
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
                raise ValueError(f"label level {k} has non-integer dtype {arr.dtype}")
        if self.base_downsample <= 0:
            raise ValueError(f"base_downsample must be positive, got {self.base_downsample}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_store(cls, store: LabelStore) -> LabelSource:
        """The label pyramid of a :class:`~napari_sgnet.io.labelstore.store.LabelStore` (lazy)."""
        ident = store.slide_identity
        size = (ident.get("width"), ident.get("height"))
        model = store.model
        return cls(
            levels=tuple(store.levels_as_dask()),
            downsamples=tuple(float(2**k) for k in range(store.n_levels)),
            palette=store.palette,
            base_downsample=store.base_downsample,
            mpp=ident.get("mpp"),
            slide_size=(int(size[0]), int(size[1])) if None not in size else None,
            name=str(ident.get("name") or store.path.stem),
            provenance={
                "store": str(store.path),
                "slide": ident,
                "model": model,
                "commits": len(store.commits),
                "ood": next((r["ood"] for r in reversed(store.requests) if r.get("ood")), None),
            },
        )

    @classmethod
    def from_array(
        cls,
        data: Any,
        palette: Palette = GLEASON,
        *,
        mpp: float | None = None,
        base_downsample: float = 1.0,
        offset: tuple[float, float] = (0.0, 0.0),
        slide_size: tuple[int, int] | None = None,
        name: str = "labels",
        chunk: int = DEFAULT_CHUNK,
        provenance: dict[str, Any] | None = None,
    ) -> LabelSource:
        """A source from one label image or a multiscale list (finest first).

        A single image gets a lazy mode pyramid (:func:`mode_pyramid`); a list keeps
        its levels, with downsamples taken from the shape ratios.
        """
        if isinstance(data, (list, tuple)):
            levels = tuple(data)
            h0, w0 = (int(v) for v in levels[0].shape[-2:])
            downs = tuple(
                _snap_downsample(max(h0 / int(a.shape[-2]), w0 / int(a.shape[-1]))) for a in levels
            )
        else:
            levels = tuple(mode_pyramid(data, chunk))
            levels = (data, *levels[1:])
            downs = tuple(float(2**k) for k in range(len(levels)))
        return cls(
            levels=levels,
            downsamples=downs,
            palette=palette,
            base_downsample=float(base_downsample),
            mpp=mpp,
            offset=(float(offset[0]), float(offset[1])),
            slide_size=slide_size,
            name=name,
            provenance=dict(provenance or {}),
        )

    # ------------------------------------------------------------------ geometry
    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.levels)

    def shape(self, level: int = 0) -> tuple[int, int]:
        """``(height, width)`` of a level."""
        h, w = self.levels[level].shape
        return int(h), int(w)

    def slide_scale(self, level: int = 0) -> float:
        """Slide level-0 pixels per pixel of ``level``."""
        return self.base_downsample * self.downsamples[level]

    def level_mpp(self, level: int = 0) -> float | None:
        """µm/px of ``level``, when the slide's µm/px is known."""
        return None if self.mpp is None else self.mpp * self.slide_scale(level)

    def finest_level_within(self, max_pixels: int) -> int:
        """The finest level with at most ``max_pixels`` pixels (the coarsest if none is)."""
        for k in range(self.n_levels):
            h, w = self.shape(k)
            if h * w <= max_pixels:
                return k
        return self.n_levels - 1

    def read(self, box: Box, level: int = 0) -> np.ndarray:
        """uint8 labels in ``box`` (pixels of ``level``), 0 past the edge."""
        return to_uint8_labels(read_window(self.levels[level], box, pad_value=0))

    def resampled(
        self,
        factors: Sequence[float],
        shapes: Sequence[tuple[int, int]],
        origin: tuple[float, float] | None = None,
    ) -> LabelSource:
        """The same labels on another grid of slide pixels, sampled lazily by nearest label.

        Parameters
        ----------
        factors : sequence of float
            Slide level-0 pixels per pixel of each new level, finest first (``1.0``: the
            slide's own resolution).
        shapes : sequence of (int, int)
            ``(h, w)`` of each new level.
        origin : tuple of float, optional
            ``(x, y)`` of the new grid's top-left corner in slide level-0 pixels
            (default: this source's offset).

        Returns
        -------
        LabelSource
            Levels of :class:`NearestLevel`; nothing is read until a window is.
        """
        if not factors or len(factors) != len(shapes):
            raise ValueError("a resampled source needs one shape per factor")
        origin = self.offset if origin is None else (float(origin[0]), float(origin[1]))
        f0 = float(factors[0])
        return replace(
            self,
            levels=tuple(
                NearestLevel(self, float(f), (int(h), int(w)), origin)
                for f, (h, w) in zip(factors, shapes, strict=True)
            ),
            downsamples=tuple(float(f) / f0 for f in factors),
            base_downsample=f0,
            offset=origin,
            provenance={
                **self.provenance,
                "resampled_from": {
                    "base_downsample": self.base_downsample,
                    "offset": list(self.offset),
                },
            },
        )

    def slide_extent(self) -> tuple[int, int]:
        """``(h, w)`` in slide level-0 pixels that level 0 covers (clipped to the slide)."""
        h, w = self.shape(0)
        out_h = math.ceil(h * self.base_downsample - 1e-6)
        out_w = math.ceil(w * self.base_downsample - 1e-6)
        if self.slide_size is not None:
            sw, sh = self.slide_size
            out_w = max(1, min(out_w, sw - math.floor(self.offset[0])))
            out_h = max(1, min(out_h, sh - math.floor(self.offset[1])))
        return out_h, out_w

    def on_slide_grid(self, min_side: int) -> LabelSource:
        """The labels at the slide's level-0 resolution, with 2x coarser levels (nearest)
        down to the first that fits ``min_side`` x ``min_side``."""
        h, w = self.slide_extent()
        factors, shapes = [1.0], [(h, w)]
        while max(shapes[-1]) > min_side:
            f = factors[-1] * 2.0
            factors.append(f)
            shapes.append((math.ceil(h / f), math.ceil(w / f)))
        return self.resampled(factors, shapes)

    def metadata(self) -> dict[str, Any]:
        """The JSON record every export carries (palette, placement, provenance)."""
        return {
            "format": "napari-sgnet-labels",
            "version": 1,
            "name": self.name,
            "palette": self.palette.to_dict(),
            "base_downsample": self.base_downsample,
            "mpp": self.mpp,
            "offset": list(self.offset),
            "slide_size": list(self.slide_size) if self.slide_size else None,
            "provenance": self.provenance,
        }


class NearestLevel:
    """A lazy 2-D label level on another grid of slide pixels (nearest label, uint8).

    New pixel ``(i, j)`` has its centre at slide level-0 point
    ``origin + ((j + 0.5) * factor, (i + 0.5) * factor)`` and takes the label of the
    pixel covering that point in the finest level of ``source`` no finer than
    ``factor`` (level 0 when all are coarser: upsampling). Only the window asked for
    is read (``array[y0:y1, x0:x1]``), so a slide-sized level is never held in memory.
    """

    def __init__(
        self,
        source: LabelSource,
        factor: float,
        shape: tuple[int, int],
        origin: tuple[float, float],
    ) -> None:
        if factor <= 0:
            raise ValueError(f"factor must be positive, got {factor}")
        self.source, self.factor, self.origin = source, float(factor), origin
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(np.uint8)
        self.ndim = 2
        finer = [k for k in range(source.n_levels) if source.slide_scale(k) <= factor * 1.000001]
        self.level = max(finer) if finer else 0

    def _indices(self, start: int, stop: int, axis: int) -> np.ndarray:
        """Source pixel indices along ``axis`` (0: y, 1: x) of new pixels ``start..stop``."""
        o_new, o_src = self.origin[1 - axis], self.source.offset[1 - axis]
        centres = o_new + (np.arange(start, stop, dtype=np.float64) + 0.5) * self.factor
        return np.floor((centres - o_src) / self.source.slide_scale(self.level)).astype(np.int64)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.uint8)
        iy, ix = self._indices(y0, y1, 0), self._indices(x0, x1, 1)
        box = Box(int(ix[0]), int(iy[0]), int(ix[-1] - ix[0] + 1), int(iy[-1] - iy[0] + 1))
        window = self.source.read(box, self.level)
        return window.take(iy - iy[0], axis=0).take(ix - ix[0], axis=1)  # 5x np.ix_'s speed


def as_label_source(obj: Any, palette: Palette | None = None, **kwargs: Any) -> LabelSource:
    """Turn a LabelStore, a label array or a multiscale list into a :class:`LabelSource`.

    Parameters
    ----------
    obj : LabelSource, LabelStore, array-like or sequence of array-likes
        What to export.
    palette : Palette, optional
        Classes of an array source (default: the Gleason palette); ignored for stores.
    **kwargs
        Passed to :meth:`LabelSource.from_array` (``mpp``, ``base_downsample``, ``chunk``...).
    """
    if isinstance(obj, (LabelSource, LabelStore)):
        extra = set(kwargs) - {"chunk"}
        if extra:
            raise TypeError(f"options {sorted(extra)} apply to label arrays, not to {type(obj)}")
        return obj if isinstance(obj, LabelSource) else LabelSource.from_store(obj)
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)) and len(obj) == 0:
        raise ValueError("cannot export an empty list of label levels")
    return LabelSource.from_array(obj, palette or GLEASON, **kwargs)
