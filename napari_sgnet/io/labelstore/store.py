"""LabelStore: one zarr v3 group per slide holding predicted and corrected labels.

Layout (an OME-NGFF 0.5 image-label multiscale group, so OME-Zarr readers open it)::

    store.zarr/
      zarr.json        attributes: "ome" (multiscales + image-label) and "sgnet"
      0, 1, 2, ...     uint8 label pyramid; level 0 is the inference level
                       (``base_downsample`` x the slide's level 0), each next level
                       a 2 x 2 mode of the previous one
      confidence       uint8, level 0: max softmax x 255 (255 for edited pixels)
      edited           uint8 0/1, level 0: pixels a person corrected
      done             uint8 per tile of the tiling grid: 0 to do, 1 predicted, 2 glass

Every write covers whole chunks (a chunk-aligned read-modify-write when the box is
not aligned), and zarr's local store replaces each chunk file atomically, so a
crash leaves every chunk either old or new. A tile is marked done only after its
labels and the coarser levels above it are written, so a resumed run redoes
exactly the tiles that might be incomplete.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.base import LabelStoreBase
from napari_sgnet.io.labelstore.meta import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ngff_attributes,
    now_iso,
    slide_identity,
)
from napari_sgnet.io.labelstore.pyramid import (
    chunk_index_runs,
    chunks_touched,
    level_shapes,
    mode_downsample2,
)
from napari_sgnet.io.pyramid import Pyramid, read_window
from napari_sgnet.palette import Palette

__all__ = ["DONE_GLASS", "DONE_PREDICTED", "LabelStore"]

log = logging.getLogger(__name__)

#: Done-map values.
DONE_PREDICTED = 1
DONE_GLASS = 2


def _level0_shape(slide: Pyramid, base_downsample: float) -> tuple[int, int]:
    """Shape of the store's level 0: the slide level at ``base_downsample`` if it exists."""
    for ds, arr in zip(slide.downsamples, slide.levels, strict=False):
        if abs(ds - base_downsample) <= 1e-6 * max(1.0, base_downsample):
            return int(arr.shape[0]), int(arr.shape[1])
    return (
        int(np.ceil(slide.height / base_downsample)),
        int(np.ceil(slide.width / base_downsample)),
    )


class LabelStore(LabelStoreBase):
    """Predicted and corrected labels of one slide, with a done-map and provenance.

    Create with :meth:`create`, open with :meth:`open`; do not call the constructor.
    All boxes are in the pixels of the store's level 0 unless a ``level`` is given.
    """

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        slide: Pyramid,
        palette: Palette,
        base_downsample: float = 1.0,
        tile: int = 256,
        chunk: int | None = None,
        overwrite: bool = False,
    ) -> LabelStore:
        """Create an empty store for ``slide``.

        Parameters
        ----------
        path : str or Path
            Folder of the new zarr group (conventionally ``<slide>.sgnet.zarr``).
        slide : Pyramid
            The slide the labels belong to; its identity is recorded.
        palette : Palette
            Classes of the labels (label id ``k + 1`` is class ``k``).
        base_downsample : float
            Downsample of the store's level 0 relative to the slide's level 0.
        tile : int
            Side of one tile of the tiling grid (the done-map's unit), store pixels.
        chunk : int, optional
            Chunk side of every array; must divide ``tile``. Defaults to ``tile``.
        overwrite : bool
            Replace an existing label store at ``path`` (never any other folder).

        Raises
        ------
        StoreError
            If ``path`` exists (and ``overwrite`` is false or it is not a label store),
            or cannot be written.
        """
        path = Path(path)
        chunk = int(chunk or tile)
        if tile <= 0 or chunk <= 0 or tile % chunk:
            raise ValueError(f"chunk ({chunk}) must be positive and divide tile ({tile})")
        if base_downsample <= 0:
            raise ValueError(f"base_downsample must be positive, got {base_downsample}")
        if path.exists():
            if not overwrite:
                raise StoreError(path, "already exists; open it, or pass overwrite=True")
            if not cls.is_store(path):
                raise StoreError(
                    path, "exists and is not a napari-sgnet label store; refusing to delete it"
                )
            shutil.rmtree(path)
        h0, w0 = _level0_shape(slide, base_downsample)
        shapes = level_shapes(h0, w0, chunk)
        grid = (-(-h0 // tile), -(-w0 // tile))
        meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": now_iso(),
            "slide": slide_identity(slide),
            "palette": palette.to_dict(),
            "base_downsample": float(base_downsample),
            "tile": int(tile),
            "chunk": chunk,
            "level_shapes": [list(s) for s in shapes],
            "grid_shape": list(grid),
            "model": None,
            "requests": [],
            "n_requests": 0,
            "commits": [],
        }
        ome = ngff_attributes(
            name=f"{slide.name} labels",
            n_levels=len(shapes),
            base_downsample=float(base_downsample),
            mpp=slide.mpp,
            palette=palette,
        )
        try:
            group = zarr.open_group(path, mode="w-")
            for k, shape in enumerate(shapes):
                cls._new_array(group, str(k), shape, chunk)
            cls._new_array(group, "confidence", shapes[0], chunk)
            cls._new_array(group, "edited", shapes[0], chunk)
            cls._new_array(group, "done", grid, 256)
            # Attributes last: a folder without them is not a store and is never trusted.
            group.update_attributes({"ome": ome, "sgnet": meta})
        except OSError as exc:
            raise StoreError(path, f"cannot create label store: {exc}") from exc
        log.info("created label store %s (%d levels, level 0 %d x %d)", path, len(shapes), w0, h0)
        return cls(path, group, read_only=False)

    @staticmethod
    def _new_array(group: zarr.Group, name: str, shape: tuple[int, int], chunk: int) -> None:
        chunks = (min(chunk, shape[0]), min(chunk, shape[1]))
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype="uint8",
            fill_value=0,
            dimension_names=("y", "x"),
        )

    # ------------------------------------------------------------------ writing
    def write_tile(
        self,
        box: Box,
        labels: np.ndarray,
        confidence: np.ndarray,
        *,
        respect_edited: bool = True,
    ) -> None:
        """Write predicted labels and confidence into a box of level 0.

        Parameters
        ----------
        box : Box
            Target box in level-0 store pixels; must lie inside the level.
        labels, confidence : numpy.ndarray
            ``(box.h, box.w)`` uint8 arrays.
        respect_edited : bool
            Keep pixels that a person corrected (the ``edited`` mask) unchanged.
        """
        self._check_writable()
        self._check_box(box, labels, confidence)
        with self._lock, self._writing():
            hull = self._hull(box)
            rel = box.relative_to(hull)
            need_old = hull != box
            edited = None
            if respect_edited and self._any_chunk_stored("edited", hull):
                edited = np.asarray(self._edited[hull.slices()])
                need_old = need_old or bool(edited.any())
            if need_old:
                new_l = np.asarray(self._labels[0][hull.slices()])
                new_c = np.asarray(self._confidence[hull.slices()])
                old_l, old_c = new_l.copy(), new_c.copy()
                new_l[rel.slices()] = labels
                new_c[rel.slices()] = confidence
                if edited is not None:
                    keep = edited.astype(bool)
                    new_l[keep] = old_l[keep]
                    new_c[keep] = old_c[keep]
            else:
                new_l, new_c = labels, confidence
            self._labels[0][hull.slices()] = new_l
            self._confidence[hull.slices()] = new_c

    def update_pyramid(self, boxes: Box | Iterable[Box]) -> None:
        """Recompute the coarser label levels above one or more level-0 boxes.

        Only the chunks whose footprint meets the boxes are rewritten, each level
        from the one below it, so the result depends only on level 0.
        """
        self._check_writable()
        boxes = [boxes] if isinstance(boxes, Box) else list(boxes)
        touched = chunks_touched((b.clip(self.width, self.height) for b in boxes), self.chunk)
        with self._lock, self._writing():
            for k in range(1, self.n_levels):
                touched = {(cy // 2, cx // 2) for cy, cx in touched}
                src, dst = self._labels[k - 1], self._labels[k]
                hk, wk = self.level_shapes[k]
                hs, ws = self.level_shapes[k - 1]
                for cy, cx0, cx1 in chunk_index_runs(touched):
                    out = Box.from_bounds(
                        cx0 * self.chunk,
                        cy * self.chunk,
                        min(cx1 * self.chunk, wk),
                        min((cy + 1) * self.chunk, hk),
                    )
                    inp = Box.from_bounds(2 * out.x, 2 * out.y, 2 * out.x1, 2 * out.y1).clip(ws, hs)
                    dst[out.slices()] = mode_downsample2(np.asarray(src[inp.slices()]))

    def mark_done(
        self, tiles: tuple[int, int] | Iterable[tuple[int, int]], value: int = DONE_PREDICTED
    ) -> None:
        """Set the done-map for tile indices ``(ty, tx)`` (``value`` 0 clears them)."""
        self._check_writable()
        if isinstance(tiles, tuple) and len(tiles) == 2 and isinstance(tiles[0], (int, np.integer)):
            tiles = [tiles]  # type: ignore[list-item]
        idx = np.asarray(list(tiles), dtype=np.int64).reshape(-1, 2)
        if idx.size == 0:
            return
        ny, nx = self.grid_shape
        if idx.min() < 0 or idx[:, 0].max() >= ny or idx[:, 1].max() >= nx:
            raise IndexError(f"tile index outside the {ny} x {nx} grid of {self.path}")
        box = Box.from_bounds(
            idx[:, 1].min(), idx[:, 0].min(), idx[:, 1].max() + 1, idx[:, 0].max() + 1
        )
        with self._lock, self._writing():
            region = np.asarray(self._done[box.slices()])
            region[idx[:, 0] - box.y, idx[:, 1] - box.x] = value
            self._done[box.slices()] = region

    def reset_done(self) -> None:
        """Mark every tile as to-do (after a model change); labels and edits are kept."""
        self._check_writable()
        with self._lock, self._writing():
            self._done[...] = 0

    def commit_edit(
        self,
        box: Box,
        labels: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        author: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Commit a person's correction of a level-0 box.

        Parameters
        ----------
        box : Box
            Edited box in level-0 store pixels.
        labels : numpy.ndarray
            ``(box.h, box.w)`` uint8 labels after the edit.
        mask : numpy.ndarray, optional
            Pixels the person touched. Defaults to the pixels whose label changed.
        author, message : str, optional
            Recorded with the commit.

        Returns
        -------
        dict
            The commit record (also appended to the store's ``commits``).
        """
        self._check_writable()
        self._check_box(box, labels)
        labels = np.asarray(labels, dtype=np.uint8)
        with self._lock, self._writing():
            hull = self._hull(box)
            rel = box.relative_to(hull)
            cur_l = np.asarray(self._labels[0][hull.slices()])
            cur_c = np.asarray(self._confidence[hull.slices()])
            cur_e = np.asarray(self._edited[hull.slices()])
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
            self._labels[0][hull.slices()] = cur_l
            self._confidence[hull.slices()] = cur_c
            self._edited[hull.slices()] = cur_e
            self.update_pyramid(box)
            record = {
                "time": now_iso(),
                "box": list(box.as_tuple()),
                "pixels": int(changed.sum()),
                "author": author,
                "message": message,
            }
            self._update_meta(lambda m: m["commits"].append(record))
        return record

    def _any_chunk_stored(self, name: str, box: Box) -> bool:
        """True when any chunk of array ``name`` under a level-0 box exists on disk.

        Chunks equal to the fill value are never stored, so a missing ``edited``
        chunk means "nothing edited there" without decoding anything.
        """
        arr = {"edited": self._edited, "confidence": self._confidence}[name]
        for cy, cx in chunks_touched([box], self.chunk):
            if (self.path / name / arr.metadata.encode_chunk_key((cy, cx))).exists():
                return True
        return False

    # ------------------------------------------------------------------ reading
    def read_labels(self, box: Box, level: int = 0) -> np.ndarray:
        """Labels in ``box`` (pixels of ``level``), 0 past the edge."""
        return read_window(self._labels[level], box, pad_value=0)

    def read_confidence(self, box: Box) -> np.ndarray:
        """Confidence (max softmax x 255) in a level-0 box, 0 past the edge."""
        return read_window(self._confidence, box, pad_value=0)

    def read_edited(self, box: Box) -> np.ndarray:
        """Edited mask (0/1) in a level-0 box, 0 past the edge."""
        return read_window(self._edited, box, pad_value=0)

    def done_map(self) -> np.ndarray:
        """The whole done-map, ``(ny, nx)`` uint8."""
        return np.asarray(self._done[...])

    def levels_as_dask(self) -> list[da.Array]:
        """The label pyramid as lazy dask arrays (largest first), for napari's multiscale layer."""
        return [_lazy(arr) for arr in self._labels]

    def confidence_as_dask(self) -> da.Array:
        """The level-0 confidence as a lazy dask array."""
        return _lazy(self._confidence)


def _lazy(arr: zarr.Array) -> da.Array:
    return da.from_array(arr, chunks=arr.chunks, asarray=True, lock=False, inline_array=True)
