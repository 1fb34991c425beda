"""Checking a label store's integrity chunk by chunk, and preparing its repair.

:func:`verify_store` checks, in this order:

1. the structure: array shapes and dtypes against the store's ``sgnet`` metadata, the
   level-0 shape against the slide size recorded in the store, the NGFF datasets
   (:func:`~napari_sgnet.io.labelstore.layout.layout_problems`);
2. every chunk file of every array (label levels, ``confidence``, ``edited``, ``done``)
   decodes (a Zstd error, a truncated or garbage chunk is *damaged*);
3. the done-map against the chunks: a done-map value other than 0/1/2, and on level 0,
   pixels a model predicted (not ``edited``) whose label and confidence disagree (a label
   without confidence, or confidence without a label: one of the two chunks was lost or
   zeroed).

A chunk absent on disk reads as its fill value (0, "no label"), which is a valid state for
all-glass tiles, so absence alone is not damage; (3) catches it for predicted pixels.

``done_only`` (what ``--resume`` runs) decodes only the level-0 label and confidence
chunks under tiles the done-map marks done, plus the done-map itself: the tiles a resume
would skip. It is the cost of reading those chunks once (about as long as opening them
for display; see docs/io.md for figures).

:func:`reset_damaged` prepares a repair: it deletes the damaged chunk files (they then read
as "no label") and marks every tile under a damaged level-0 or done-map chunk as to-do, so a
resumed run re-predicts exactly those tiles. Damaged chunks of coarser label levels need no
model: they are recomputed from level 0 (:meth:`LabelStore.update_pyramid`). Edits in a
damaged ``edited`` chunk cannot be recovered; the report says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.guard import CODEC_ERRORS

if TYPE_CHECKING:
    from napari_sgnet.io.labelstore.store import LabelStore

__all__ = ["DamagedChunk", "StoreReport", "reset_damaged", "verify_store"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DamagedChunk:
    """One chunk that failed a check.

    Attributes
    ----------
    array : str
        Array name in the store (``"0"``, ``"confidence"``, ``"edited"``, ``"done"``, ...).
    coords : tuple of int
        Chunk grid position ``(cy, cx)``.
    tiles : tuple of (int, int)
        Done-map tiles ``(ty, tx)`` under the chunk.
    problem : str
        What is wrong.
    file : Path or None
        The chunk file (``None`` when absent on disk).
    """

    array: str
    coords: tuple[int, int]
    tiles: tuple[tuple[int, int], ...]
    problem: str
    file: Path | None

    def describe(self) -> str:
        """One line naming the array, the chunk, its first tile and the problem."""
        key = "/".join(str(c) for c in self.coords)
        first = f", tile {self.tiles[0]}" if self.tiles else ""
        more = f" (+{len(self.tiles) - 1} tiles)" if len(self.tiles) > 1 else ""
        return f"array {self.array!r} chunk {key}{first}{more}: {self.problem}"


@dataclass
class StoreReport:
    """The result of :func:`verify_store`."""

    path: Path
    problems: list[str] = field(default_factory=list)
    damaged: list[DamagedChunk] = field(default_factory=list)
    chunks_checked: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No structural problem and no damaged chunk."""
        return not self.problems and not self.damaged

    @property
    def damaged_tiles(self) -> set[tuple[int, int]]:
        """Tiles a repair re-predicts (under damaged level-0, confidence or done chunks)."""
        return {
            t for d in self.damaged if d.array in ("0", "confidence", "edited", "done")
            for t in d.tiles
        }  # fmt: skip

    def message(self) -> str:
        """A multi-line summary for people."""
        if self.ok:
            return f"{self.path}: ok ({self.chunks_checked} chunks checked, {self.seconds:.1f} s)"
        n_bad = len(self.damaged)
        lines = [f"{self.path}: {len(self.problems)} problem(s), {n_bad} damaged chunk(s)"]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  {d.describe()}" for d in self.damaged]
        return "\n".join(lines)


def _chunk_file(group_path: Path, name: str, arr: zarr.Array, coords: tuple[int, ...]) -> Path:
    return group_path / name / arr.metadata.encode_chunk_key(coords)


def _tiles_under(box: Box, tile: int, grid: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    ny, nx = grid
    ys = range(box.y // tile, min(ny, -(-box.y1 // tile)))
    xs = range(box.x // tile, min(nx, -(-box.x1 // tile)))
    return tuple((ty, tx) for ty in ys for tx in xs)


def _chunk_box(coords: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]) -> Box:
    cy, cx = coords
    y0, x0 = cy * chunks[0], cx * chunks[1]
    return Box(x0, y0, min(chunks[1], shape[1] - x0), min(chunks[0], shape[0] - y0))


def _decode(arr: zarr.Array, box: Box) -> tuple[np.ndarray | None, str | None]:
    try:
        return np.asarray(arr[box.y : box.y1, box.x : box.x1]), None
    except CODEC_ERRORS as exc:
        return None, f"cannot be decoded ({type(exc).__name__}: {exc})"


def verify_store(
    store: LabelStore, *, done_only: bool = False, tiles: np.ndarray | None = None
) -> StoreReport:
    """Check a store's structure and chunks (see the module doc).

    Chunks are decoded :data:`BLOCK_CHUNKS` x :data:`BLOCK_CHUNKS` at a time (zarr decodes
    them concurrently); a block that fails is decoded chunk by chunk to name the damaged ones.

    Parameters
    ----------
    store : LabelStore
        The store (read-only is enough).
    done_only : bool
        Only the chunks a resume would trust: level-0 labels and confidence under done
        tiles, and the done-map.
    tiles : numpy.ndarray, optional
        With ``done_only``: a boolean ``grid_shape`` mask of the tiles a run would trust
        (e.g. those of a viewport run); only the done tiles among them are checked, so the
        check costs the view, not the whole store. The done-map is checked whole.

    Returns
    -------
    StoreReport
    """
    from napari_sgnet.io.labelstore.layout import layout_problems

    t0 = time.perf_counter()
    report = StoreReport(store.path)
    group = store._group
    report.problems = layout_problems(store.layout, group) + _slide_size_problems(store)
    if report.problems:
        report.seconds = time.perf_counter() - t0
        return report
    done = np.zeros(store.grid_shape, dtype=np.uint8)
    for box, data in _blocks(store, "done", report, None):
        bad = ~np.isin(data, (0, 1, 2))
        if bad.any():
            report.damaged.append(DamagedChunk(
                "done", (box.y // group["done"].chunks[0], box.x // group["done"].chunks[1]),
                tuple((int(y) + box.y, int(x) + box.x)
                      for y, x in zip(*np.nonzero(bad), strict=True)),
                f"holds done values {np.unique(data[bad]).tolist()} (only 0, 1, 2 are valid)",
                None,
            ))  # fmt: skip
        done[box.y : box.y1, box.x : box.x1] = np.where(bad, 0, data)
    wanted = done if done_only else None
    if wanted is not None and tiles is not None:
        wanted = np.where(np.asarray(tiles, dtype=bool), done, 0).astype(np.uint8)
    if not done_only:  # the coarser label levels: decoded only
        for k in range(1, store.n_levels):
            for _ in _blocks(store, str(k), report, None):
                pass
    names = ("0", "confidence") if done_only else ("0", "confidence", "edited")
    # The level-0 arrays share shape and chunks, so their blocks come in the same order.
    for blocks in zip(*(_blocks(store, n, report, wanted) for n in names), strict=True):
        _consistency(store, dict(zip(names, blocks, strict=True)), done, report, done_only)
    report.seconds = time.perf_counter() - t0
    return report


#: Chunks per side of the blocks :func:`verify_store` decodes at once.
BLOCK_CHUNKS = 16


def _blocks(
    store: LabelStore, name: str, report: StoreReport, done: np.ndarray | None
) -> Iterator[tuple[Box, np.ndarray]]:
    """Decoded blocks of array ``name`` (damaged chunks reported and read as 0).

    With ``done`` (level-0 arrays only), blocks without a done tile are skipped.
    """
    arr = store._group[name]
    ch, cw = arr.chunks
    h, w = arr.shape
    scale = 2 ** int(name) if name.isdigit() else 1
    side_y, side_x = ch * BLOCK_CHUNKS, cw * BLOCK_CHUNKS
    tile, grid = store.tile, store.grid_shape
    for y in range(0, h, side_y):
        for x in range(0, w, side_x):
            box = Box(x, y, min(side_x, w - x), min(side_y, h - y))
            l0 = Box(box.x * scale, box.y * scale, box.w * scale, box.h * scale)
            if done is not None:
                under = [t for t in _tiles_under(l0, tile, grid) if done[t]]
                if not under:
                    continue
                box = _chunks_around(under, tile, (ch, cw), box)
            coords = [
                (cy, cx)
                for cy in range(y // ch, -(-box.y1 // ch))
                for cx in range(x // cw, -(-box.x1 // cw))
            ]
            report.chunks_checked += sum(
                _chunk_file(store.path, name, arr, c).exists() for c in coords
            )
            data, problem = _decode(arr, box)
            if problem is None and data is not None:
                yield box, data
                continue
            out = np.zeros((box.h, box.w), dtype=arr.dtype)
            for c in coords:
                cbox = _chunk_box(c, arr.chunks, arr.shape)
                part, problem = _decode(arr, cbox)
                if part is None:
                    file = _chunk_file(store.path, name, arr, c)
                    if name == "done":
                        ys, xs = range(cbox.y, cbox.y1), range(cbox.x, cbox.x1)
                        tiles = tuple((ty, tx) for ty in ys for tx in xs)
                    else:
                        l0c = Box(cbox.x * scale, cbox.y * scale, cbox.w * scale, cbox.h * scale)
                        tiles = _tiles_under(l0c, tile, grid)
                    report.damaged.append(
                        DamagedChunk(name, c, tiles, str(problem), file if file.exists() else None)
                    )
                    continue
                rel = cbox.relative_to(box)
                out[rel.y : rel.y1, rel.x : rel.x1] = part
            yield box, out


def _chunks_around(
    tiles: Sequence[tuple[int, int]], tile: int, chunks: tuple[int, int], block: Box
) -> Box:
    """The part of ``block`` (level-0 pixels) covering the chunks under ``tiles``, chunk
    aligned: a block is decoded only where it has tiles to check."""
    ch, cw = chunks
    y0 = min(ty for ty, _ in tiles) * tile // ch * ch
    x0 = min(tx for _, tx in tiles) * tile // cw * cw
    y1 = -(-(max(ty for ty, _ in tiles) + 1) * tile // ch) * ch
    x1 = -(-(max(tx for _, tx in tiles) + 1) * tile // cw) * cw
    return Box.from_bounds(
        max(block.x, x0), max(block.y, y0), min(block.x1, x1), min(block.y1, y1)
    )


def _slide_size_problems(store: LabelStore) -> list[str]:
    """Level 0 against the slide size the store records (a hand-edited shape is caught)."""
    ident = store.slide_identity
    w, h = ident.get("width"), ident.get("height")
    if not isinstance(w, int) or not isinstance(h, int):
        return []
    ds = store.base_downsample
    want = (h / ds, w / ds)
    got = store.level_shapes[0]
    if any(abs(g - e) > 1 for g, e in zip(got, want, strict=False)):
        return [
            f"level 0 is {got[1]} x {got[0]} px but the slide ({w} x {h} px) at downsample "
            f"{ds:g} gives {want[1]:.0f} x {want[0]:.0f} px: the store's metadata was edited or "
            "damaged"
        ]
    return []


def _consistency(
    store: LabelStore,
    parts: dict[str, tuple[Box, np.ndarray]],
    done: np.ndarray,
    report: StoreReport,
    done_only: bool,
) -> None:
    """Predicted (not edited) level-0 pixels of one block, chunk by chunk: a model never
    predicts label 0 (labels are class + 1; glass is 0 with confidence 0), so confidence
    without a label means the label chunk was lost or zeroed; labels in a chunk with no
    confidence chunk on disk mean the confidence chunk was."""
    if "0" not in parts or "confidence" not in parts:
        return
    group = store._group
    arr = group["0"]
    box, labels_all = parts["0"]
    conf_all = parts["confidence"][1]
    edited_all = parts["edited"][1] if "edited" in parts else (
        store.read_edited(box) if done_only else np.zeros_like(labels_all)
    )  # fmt: skip
    damaged = {(d.array, d.coords) for d in report.damaged}
    ch, cw = arr.chunks
    for cy in range(box.y // ch, -(-box.y1 // ch)):
        for cx in range(box.x // cw, -(-box.x1 // cw)):
            coords = (cy, cx)
            if ("0", coords) in damaged or ("confidence", coords) in damaged:
                continue
            cbox = _chunk_box(coords, arr.chunks, arr.shape)
            tiles = _tiles_under(cbox, store.tile, store.grid_shape)
            if not any(done[t] == 1 for t in tiles):
                continue
            rel = cbox.relative_to(box)
            sl = (slice(rel.y, rel.y1), slice(rel.x, rel.x1))
            labels, conf, model = labels_all[sl], conf_all[sl], edited_all[sl] == 0
            conf_file = _chunk_file(store.path, "confidence", group["confidence"], coords)
            label_file = _chunk_file(store.path, "0", arr, coords)
            orphan = model & (conf > 0) & (labels == 0)
            if orphan.any():
                lost, n, what = "0", int(orphan.sum()), "confidence but no label"
            elif not conf_file.exists() and (model & (labels > 0)).any():
                n = int((model & (labels > 0)).sum())
                lost, what = "confidence", "a label but no confidence"
            else:
                continue
            file = label_file if lost == "0" else conf_file
            report.damaged.append(DamagedChunk(
                lost, coords, tiles,
                f"{n} predicted pixels have {what} (its chunk was lost or zeroed)",
                file if file.exists() else None,
            ))  # fmt: skip


def reset_damaged(store: LabelStore, report: StoreReport) -> list[tuple[int, int]]:
    """Delete damaged chunk files, recompute damaged coarse levels and reset damaged tiles.

    Returns
    -------
    list of (int, int)
        The tiles now marked to-do (re-predict them with a resumed run).

    Raises
    ------
    StoreError
        When the store has structural problems (those cannot be repaired by re-predicting)
        or is read-only.
    """
    if report.problems:
        raise StoreError(
            store.path,
            "cannot be repaired tile by tile: " + "; ".join(report.problems)
            + "; predict it afresh with --overwrite",
        )
    coarse: list[Box] = []
    for d in report.damaged:
        if d.file is not None and d.file.exists():
            d.file.unlink()
        if d.array.isdigit() and d.array != "0":
            coarse.extend(store.tile_box(t) for t in d.tiles)
        if d.array == "edited":
            log.warning("%s: the edits in %s are lost", store.path, d.describe())
    tiles = sorted(report.damaged_tiles)
    if tiles:
        store.mark_done(tiles, 0)
    if coarse:
        store.update_pyramid(coarse)
    return tiles
