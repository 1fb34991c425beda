"""The level-0 pixel arrays of a label store and their chunk-aligned writes.

:class:`LabelPixels` owns level-0 labels, confidence and the edited mask (one chunk
grid) and the done-map. Every write is a read-modify-write of whole chunks, so each
chunk file is replaced as a whole (zarr's local store writes chunks atomically) and a
crash leaves every chunk either old or new. The caller (the store) checks writability
and holds the store lock around each call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.pyramid import chunks_touched

__all__ = ["LabelPixels"]


class LabelPixels:
    """Level-0 labels, confidence, edited mask and done-map of one store.

    Parameters
    ----------
    path : Path
        The store folder (chunk files are looked up under it; named in errors).
    labels, confidence, edited : zarr.Array
        Level-0 ``(h, w)`` uint8 arrays chunked ``chunk`` x ``chunk``.
    done : zarr.Array
        The ``(ny, nx)`` uint8 done-map.
    chunk : int
        Chunk side of the level-0 arrays.
    """

    def __init__(
        self,
        path: Path,
        labels: zarr.Array,
        confidence: zarr.Array,
        edited: zarr.Array,
        done: zarr.Array,
        chunk: int,
    ) -> None:
        self.path = path
        self.labels = labels
        self.confidence = confidence
        self.edited = edited
        self.done = done
        self.chunk = int(chunk)
        self.height, self.width = (int(v) for v in labels.shape)

    def check_box(self, box: Box, *arrays: np.ndarray) -> None:
        """``ValueError`` unless ``box`` lies inside level 0 and ``arrays`` match its shape."""
        if box.is_empty or not Box(0, 0, self.width, self.height).contains(box):
            raise ValueError(
                f"box {box.as_tuple()} is empty or outside level 0 "
                f"({self.width} x {self.height}) of {self.path}"
            )
        for arr in arrays:
            if tuple(arr.shape) != (box.h, box.w):
                raise ValueError(f"array shape {arr.shape} does not match box {box.as_tuple()}")

    def hull(self, box: Box) -> Box:
        """The chunk-aligned box covering ``box`` at level 0, clipped to the level."""
        c = self.chunk
        return Box.from_bounds(
            box.x // c * c, box.y // c * c, -(-box.x1 // c) * c, -(-box.y1 // c) * c
        ).clip(self.width, self.height)

    def any_chunk_stored(self, name: str, box: Box) -> bool:
        """True when any chunk of array ``name`` under a level-0 box exists on disk.

        Chunks equal to the fill value are never stored, so a missing ``edited``
        chunk means "nothing edited there" without decoding anything.
        """
        arr = {"edited": self.edited, "confidence": self.confidence}[name]
        for cy, cx in chunks_touched([box], self.chunk):
            if (self.path / name / arr.metadata.encode_chunk_key((cy, cx))).exists():
                return True
        return False

    def write_prediction(
        self, box: Box, labels: np.ndarray, confidence: np.ndarray, *, respect_edited: bool
    ) -> None:
        """Write predicted labels and confidence into ``box`` (see ``LabelStore.write_tile``)."""
        hull = self.hull(box)
        rel = box.relative_to(hull)
        need_old = hull != box
        edited = None
        if respect_edited and self.any_chunk_stored("edited", hull):
            edited = np.asarray(self.edited[hull.slices()])
            need_old = need_old or bool(edited.any())
        if need_old:
            new_l = np.asarray(self.labels[hull.slices()])
            new_c = np.asarray(self.confidence[hull.slices()])
            old_l, old_c = new_l.copy(), new_c.copy()
            new_l[rel.slices()] = labels
            new_c[rel.slices()] = confidence
            if edited is not None:
                keep = edited.astype(bool)
                new_l[keep] = old_l[keep]
                new_c[keep] = old_c[keep]
        else:
            new_l, new_c = labels, confidence
        self.labels[hull.slices()] = new_l
        self.confidence[hull.slices()] = new_c

    def write_edit(self, box: Box, labels: np.ndarray, mask: np.ndarray | None,
                   *, unlabel_erased: bool = False) -> int:
        """Write a person's labels into ``box``: changed pixels get confidence 255 and
        the edited mark. ``mask`` picks the pixels (default: those whose label changed).
        With ``unlabel_erased``, written pixels whose new label is 0 become *unlabelled*
        instead: confidence 0 and no edited mark, so the next run predicts them again.

        Returns
        -------
        int
            Number of pixels written.
        """
        hull = self.hull(box)
        rel = box.relative_to(hull)
        cur_l = np.asarray(self.labels[hull.slices()])
        cur_c = np.asarray(self.confidence[hull.slices()])
        cur_e = np.asarray(self.edited[hull.slices()])
        if mask is None:
            changed = labels != cur_l[rel.slices()]
        else:
            changed = np.asarray(mask, dtype=bool)
            if changed.shape != labels.shape:
                raise ValueError(f"mask shape {changed.shape} != labels {labels.shape}")
        full = np.zeros((hull.h, hull.w), dtype=bool)
        full[rel.slices()] = changed
        cur_l[rel.slices()] = np.where(changed, labels, cur_l[rel.slices()])
        cur_c[full] = 255
        cur_e[full] = 1
        if unlabel_erased:
            erased = np.zeros((hull.h, hull.w), dtype=bool)
            erased[rel.slices()] = changed & (labels == 0)
            cur_c[erased] = 0
            cur_e[erased] = 0
        self.labels[hull.slices()] = cur_l
        self.confidence[hull.slices()] = cur_c
        self.edited[hull.slices()] = cur_e
        return int(changed.sum())

    def mark_done(self, idx: np.ndarray, value: int) -> None:
        """Set done-map entries ``idx`` (``(n, 2)`` ``(ty, tx)``) to ``value``."""
        ny, nx = (int(v) for v in self.done.shape)
        if idx.min() < 0 or idx[:, 0].max() >= ny or idx[:, 1].max() >= nx:
            raise IndexError(f"tile index outside the {ny} x {nx} grid of {self.path}")
        box = Box.from_bounds(
            int(idx[:, 1].min()),
            int(idx[:, 0].min()),
            int(idx[:, 1].max()) + 1,
            int(idx[:, 0].max()) + 1,
        )
        region = np.asarray(self.done[box.slices()])
        region[idx[:, 0] - box.y, idx[:, 1] - box.x] = value
        self.done[box.slices()] = region
