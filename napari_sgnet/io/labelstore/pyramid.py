"""Label-pyramid maths for the LabelStore: level shapes, mode downsampling, chunk runs.

Pure numpy; no zarr (:class:`LabelPyramid` works on any array that slices like one).
Coarser label levels are computed by a *mode* over 2 x 2 blocks that prefers real
labels over 0 ("no label"), never by a mean, so a coarse level only ever contains
label ids that exist at the finer level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from napari_sgnet.geometry import Box

__all__ = [
    "LabelPyramid",
    "LevelArray",
    "chunk_index_runs",
    "chunks_touched",
    "level_shapes",
    "mode_downsample2",
]


class LevelArray(Protocol):
    """A 2-D array that reads and writes by slices (a zarr array, a numpy array)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...


def level_shapes(height: int, width: int, chunk: int) -> list[tuple[int, int]]:
    """Shapes ``(h, w)`` of a factor-2 pyramid, halving until the level fits one chunk.

    Parameters
    ----------
    height, width : int
        Shape of level 0.
    chunk : int
        Chunk side; the coarsest level has ``max(h, w) <= chunk``.

    Returns
    -------
    list of tuple of int
        Level shapes, level 0 first; each level is ``ceil(previous / 2)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"label level 0 must be non-empty, got {height} x {width}")
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > chunk:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def mode_downsample2(labels: np.ndarray) -> np.ndarray:
    """Downsample a uint8 label image by 2 with a mode over each 2 x 2 block.

    Ties are broken towards the smaller label id; 0 ("no label") is chosen only
    when all four pixels are 0. Odd sizes are handled by treating pixels past the
    edge as 0, so the result has shape ``ceil(h / 2) x ceil(w / 2)``.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(h, w)`` uint8 labels.

    Returns
    -------
    numpy.ndarray
        ``(ceil(h / 2), ceil(w / 2))`` uint8 labels.
    """
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {labels.shape}")
    h, w = labels.shape
    hh, ww = (h + 1) // 2, (w + 1) // 2
    if (2 * hh, 2 * ww) != (h, w):
        padded = np.zeros((2 * hh, 2 * ww), dtype=np.uint8)
        padded[:h, :w] = labels
    else:
        padded = np.asarray(labels, dtype=np.uint8)
    cand = np.stack(
        [padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2]]
    )
    # Score each candidate: how many of the four equal it (1..4), then prefer smaller ids.
    counts = np.zeros(cand.shape, dtype=np.int16)
    for j in range(4):
        counts += cand == cand[j]
    score = counts * 256 + (255 - cand.astype(np.int16))
    score[cand == 0] = 0
    best = np.argmax(score, axis=0)
    return np.take_along_axis(cand, best[None], axis=0)[0]


def chunks_touched(boxes: Iterable[Box], chunk: int) -> set[tuple[int, int]]:
    """Chunk indices ``(cy, cx)`` of a ``chunk``-grid that the boxes overlap."""
    out: set[tuple[int, int]] = set()
    for box in boxes:
        if box.is_empty:
            continue
        for cy in range(box.y // chunk, (box.y1 - 1) // chunk + 1):
            for cx in range(box.x // chunk, (box.x1 - 1) // chunk + 1):
                out.add((cy, cx))
    return out


def chunk_index_runs(indices: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """Group chunk indices into horizontal runs ``(cy, cx_start, cx_stop)`` (stop exclusive).

    Rows are visited top to bottom, runs left to right, so the output is deterministic.
    """
    rows: dict[int, list[int]] = {}
    for cy, cx in indices:
        rows.setdefault(cy, []).append(cx)
    for cy in sorted(rows):
        xs = sorted(set(rows[cy]))
        start = prev = xs[0]
        for cx in xs[1:]:
            if cx != prev + 1:
                yield cy, start, prev + 1
                start = cx
            prev = cx
        yield cy, start, prev + 1


class LabelPyramid:
    """The label levels of one store, and the update that keeps them in step with level 0.

    Parameters
    ----------
    levels : sequence of LevelArray
        Level arrays, level 0 first, each ``ceil(previous / 2)`` (see :func:`level_shapes`).
    chunk : int
        Chunk side of every level; updates rewrite whole chunks.
    """

    def __init__(self, levels: Sequence[LevelArray], chunk: int) -> None:
        self.levels = tuple(levels)
        self.chunk = int(chunk)
        self.shapes = [(int(a.shape[0]), int(a.shape[1])) for a in self.levels]

    def update(self, boxes: Iterable[Box]) -> None:
        """Recompute the coarser levels above level-0 ``boxes`` (the caller holds the lock).

        Only the chunks whose footprint meets the boxes are rewritten, each level from
        the one below it, so the result depends only on level 0.
        """
        h0, w0 = self.shapes[0]
        touched = chunks_touched((b.clip(w0, h0) for b in boxes), self.chunk)
        c = self.chunk
        for k in range(1, len(self.levels)):
            touched = {(cy // 2, cx // 2) for cy, cx in touched}
            src, dst = self.levels[k - 1], self.levels[k]
            hk, wk = self.shapes[k]
            hs, ws = self.shapes[k - 1]
            for cy, cx0, cx1 in chunk_index_runs(touched):
                out = Box.from_bounds(cx0 * c, cy * c, min(cx1 * c, wk), min((cy + 1) * c, hk))
                inp = Box.from_bounds(2 * out.x, 2 * out.y, 2 * out.x1, 2 * out.y1).clip(ws, hs)
                dst[out.slices()] = mode_downsample2(np.asarray(src[inp.slices()]))
