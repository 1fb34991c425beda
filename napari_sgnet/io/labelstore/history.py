"""Undo records of committed edits, kept crash-safely inside a label store.

Before a commit writes its pixels, the store saves what those pixels were: the
level-0 ``labels``, ``confidence`` and ``edited`` values under the commit's box, the
``mask`` of the pixels the commit writes, and the done-map values of the tiles it
resets. Undoing the newest commit writes those values back (only under the mask, so
predictions that landed elsewhere in the box since are kept), restores the done-map,
recomputes the coarser levels and drops the record.

The records live in a zarr subgroup ``sgnet_history`` of the store folder::

    sgnet_history/
      zarr.json      attributes: {"entries": [{"id", "box", "time", "commit", "done"}, ...]}
      e<id>/         labels, confidence, edited, mask: (box.h, box.w) uint8

Crash safety: a record's arrays are written first and only then listed in the
attributes (the list is the pointer, written last), so a crash while saving leaves
an unlisted folder that is never read (and is removed by the next save). An undo
writes the old values back first and only then unlists the record: a crash in the
middle leaves the record listed, and undoing again writes the same values again.

At most :data:`HISTORY_DEPTH` commits can be undone; older records are dropped as
new commits arrive (each record is at most 4 x the box in bytes before compression:
64 MB for the largest 4096 x 4096 edit crop, usually far less once compressed).

One component of :class:`~napari_sgnet.io.labelstore.store.LabelStore`
(``store.history``), sharing the store's :class:`StoreGuard`. The store calls
:meth:`CommitHistory.save` under its lock; boxes are in store level-0 pixels.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.guard import StoreGuard
from napari_sgnet.io.labelstore.pixels import LabelPixels

__all__ = ["HISTORY_DEPTH", "HISTORY_GROUP", "CommitHistory", "UndoRecord"]

log = logging.getLogger(__name__)

#: Name of the history subgroup of a store.
HISTORY_GROUP = "sgnet_history"
#: Most commits that can be undone (older undo records are dropped).
HISTORY_DEPTH = 10
_ARRAYS = ("labels", "confidence", "edited", "mask")
_CHUNK = 512


@dataclass(frozen=True)
class UndoRecord:
    """What one commit overwrote.

    Parameters
    ----------
    id : int
        The record's number (increasing).
    box : Box
        The bounding box of the pixels the commit wrote, store level-0 pixels.
    time : str
        ISO time of the commit.
    commit : int
        Index of the commit in the store's ``commits`` list.
    done : tuple of (int, int, int)
        ``(ty, tx, value)`` done-map entries the commit changed, as they were before.
    """

    id: int
    box: Box
    time: str
    commit: int
    done: tuple[tuple[int, int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record's entry in the history attributes."""
        return {
            "id": self.id,
            "box": list(self.box.as_tuple()),
            "time": self.time,
            "commit": self.commit,
            "done": [list(d) for d in self.done],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UndoRecord:
        """Inverse of :meth:`to_json` (``KeyError`` / ``ValueError`` when damaged)."""
        done = tuple((int(a), int(b), int(c)) for a, b, c in data.get("done", []))
        return cls(int(data["id"]), Box(*map(int, data["box"])), str(data.get("time", "")),
                   int(data.get("commit", -1)), done)


class CommitHistory:
    """The undo records of one label store (made by the store: ``store.history``).

    Parameters
    ----------
    guard : StoreGuard
        The store's lock and writability.
    pixels : LabelPixels
        The store's level-0 arrays and done-map.
    depth : int
        Most records kept.
    """

    def __init__(self, guard: StoreGuard, pixels: LabelPixels, depth: int = HISTORY_DEPTH) -> None:
        self._guard = guard
        self._pixels = pixels
        self.depth = int(depth)

    # ------------------------------------------------------------------ helpers
    def _group(self, create: bool) -> zarr.Group | None:
        path = self._guard.path / HISTORY_GROUP
        try:
            if (path / "zarr.json").exists():
                return zarr.open_group(path, mode="r" if self._guard.read_only else "r+")
            if not create:
                return None
            self._guard.check_writable("save the undo history")
            group = zarr.open_group(path, mode="w-")
            group.update_attributes({"entries": [], "next_id": 1})
            return group
        except (OSError, ValueError) as exc:
            raise StoreError(self._guard.path, f"cannot open the undo history: {exc}") from exc

    def records(self) -> list[UndoRecord]:
        """The undo records, oldest first (damaged entries are skipped with a warning)."""
        group = self._group(create=False)
        if group is None:
            return []
        out = []
        for data in group.attrs.get("entries", []):
            try:
                out.append(UndoRecord.from_json(data))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("%s: ignoring a damaged undo record (%s)", self._guard.path, exc)
        return out

    def __len__(self) -> int:
        return len(self.records())

    # ------------------------------------------------------------------ saving
    def save(self, box: Box, mask: np.ndarray, *, time: str, commit: int,
             done: list[tuple[int, int, int]] | None = None) -> UndoRecord:
        """Save what a commit of ``box`` is about to overwrite (call under the store lock).

        Parameters
        ----------
        box : Box
            The commit's box, store level-0 pixels (inside level 0).
        mask : numpy.ndarray
            ``(box.h, box.w)`` bool: the pixels the commit writes.
        time : str
            ISO time recorded with the commit.
        commit : int
            Index the commit's record will have in the store's ``commits``.
        done : list of (ty, tx, value), optional
            Done-map entries the commit will change, with their current values.

        Returns
        -------
        UndoRecord
        """
        self._guard.check_writable("save the undo history")
        mask = np.asarray(mask, dtype=bool)
        ys, xs = np.nonzero(mask)
        if ys.size:  # keep only the bounding box of the pixels written
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            mask = mask[y0:y1, x0:x1]
            box = Box(box.x + x0, box.y + y0, x1 - x0, y1 - y0)
        with self._guard.writing("save the undo history"):
            group = self._group(create=True)
            assert group is not None
            rid = int(group.attrs.get("next_id", 1))
            listed = {int(e.get("id", -1)) for e in group.attrs.get("entries", [])}
            for name in list(group.group_keys()):  # leftovers of a save a crash interrupted
                if name.startswith("e") and name[1:].isdigit() and int(name[1:]) not in listed:
                    shutil.rmtree(self._guard.path / HISTORY_GROUP / name, ignore_errors=True)
            sub = group.create_group(f"e{rid}", overwrite=True)
            px = self._pixels
            values = {
                "labels": np.asarray(px.labels[box.slices()]),
                "confidence": np.asarray(px.confidence[box.slices()]),
                "edited": np.asarray(px.edited[box.slices()]),
                "mask": np.asarray(mask, dtype=np.uint8),
            }
            chunks = (min(_CHUNK, box.h), min(_CHUNK, box.w))
            for name in _ARRAYS:
                arr = sub.create_array(name, shape=(box.h, box.w), chunks=chunks, dtype="uint8",
                                       fill_value=0, overwrite=True)
                arr[...] = values[name]
            record = UndoRecord(rid, box, time, commit, tuple(done or ()))
            entries = [*group.attrs.get("entries", []), record.to_json()]
            dropped, entries = entries[: -self.depth], entries[-self.depth:]
            # The list is written last: it only ever names complete records.
            group.update_attributes({"entries": entries, "next_id": rid + 1})
            for old in dropped:
                shutil.rmtree(self._guard.path / HISTORY_GROUP / f"e{old.get('id')}",
                              ignore_errors=True)
            return record

    def clear(self) -> int:
        """Drop every undo record (a commit that keeps none, such as an import, ends the history).

        Returns
        -------
        int
            How many records were dropped.
        """
        group = self._group(create=False)
        if group is None:
            return 0
        self._guard.check_writable("clear the undo history")
        with self._guard.writing("clear the undo history"):
            entries = list(group.attrs.get("entries", []))
            # unlisted first: a crash leaves only unlisted leftovers
            group.update_attributes({"entries": []})
            for entry in entries:
                shutil.rmtree(self._guard.path / HISTORY_GROUP / f"e{entry.get('id')}",
                              ignore_errors=True)
        if entries:
            log.info("%s: undo history cleared (%d records)", self._guard.path, len(entries))
        return len(entries)

    # ------------------------------------------------------------------ undo
    def undo_last(self) -> UndoRecord | None:
        """Write back what the newest commit overwrote and drop its record.

        The caller (the store) holds the lock and recomputes the coarser levels above
        the returned record's box. Returns ``None`` when there is nothing to undo.

        Raises
        ------
        StoreError
            When the record's arrays are missing or damaged (the record is kept).
        """
        self._guard.check_writable("undo a commit")
        with self._guard.writing("undo a commit"):
            group = self._group(create=False)
            records = self.records()
            if group is None or not records:
                return None
            record = records[-1]
            box = record.box
            try:
                sub = group[f"e{record.id}"]
                saved = {name: np.asarray(sub[name][...]) for name in _ARRAYS}
            except (KeyError, OSError, ValueError) as exc:
                raise StoreError(self._guard.path, f"the undo record of the commit of "
                                 f"{record.time} is damaged: {exc}") from exc
            if any(a.shape != (box.h, box.w) for a in saved.values()):
                raise StoreError(self._guard.path, f"the undo record of the commit of "
                                 f"{record.time} does not match its box {box.as_tuple()}")
            mask = saved["mask"].astype(bool)
            px = self._pixels
            for name, target in (("labels", px.labels), ("confidence", px.confidence),
                                 ("edited", px.edited)):
                current = np.asarray(target[box.slices()])
                current[mask] = saved[name][mask]
                target[box.slices()] = current
            if record.done:
                idx = np.array([(ty, tx) for ty, tx, _ in record.done], dtype=np.int64)
                for value in {v for *_, v in record.done}:
                    pick = np.array([v == value for *_, v in record.done])
                    px.mark_done(idx[pick], value)
            entries = [e for e in group.attrs.get("entries", [])
                       if int(e.get("id", -1)) != record.id]
            group.update_attributes({"entries": entries})
            with contextlib.suppress(OSError):
                shutil.rmtree(self._guard.path / HISTORY_GROUP / f"e{record.id}")
            return record
