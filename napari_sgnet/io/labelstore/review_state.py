"""Crash-safe review state kept inside a label store: pending edits and reviewed regions.

The state lives in a small zarr subgroup ``sgnet_review`` of the store folder, so it
travels with the store and is there again when the slide is reopened:

- ``pending_a`` / ``pending_b``: two slots, each holding ``labels`` and ``original``
  arrays of an uncommitted edit crop. An autosave writes the slot *not* in use and
  only then points the group's attributes at it, so a crash in the middle of an
  autosave leaves the previous autosave intact.
- attributes: ``{"pending": {...} | None, "reviewed": [[x, y, w, h], ...],
  "unlabelled": [[x, y, w, h], ...]}``; ``unlabelled`` lists the boxes a person erased
  to "unlabelled" (let the model predict there again), so review can send them there.

It is one component of :class:`~napari_sgnet.io.labelstore.store.LabelStore`
(``store.review``) and writes under the store's own lock (its
:class:`~napari_sgnet.io.labelstore.guard.StoreGuard`), so an autosave never
interleaves with a commit of the same store. Nothing here imports napari or Qt;
boxes are in the store's level-0 pixels.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.guard import StoreGuard

__all__ = ["GROUP_NAME", "PendingEdit", "ReviewRecord"]

log = logging.getLogger(__name__)

GROUP_NAME = "sgnet_review"
_SLOTS = ("pending_a", "pending_b")
_CHUNK = 512


@dataclass(frozen=True)
class PendingEdit:
    """An autosaved, uncommitted edit crop.

    Parameters
    ----------
    box : Box
        The crop in store level-0 pixels.
    labels : numpy.ndarray
        The crop as the person left it.
    original : numpy.ndarray
        The crop as it was loaded (to tell the person's changes from later predictions).
    saved : str
        ISO time of the autosave.
    """

    box: Box
    labels: np.ndarray
    original: np.ndarray
    saved: str

    @property
    def changed(self) -> np.ndarray:
        """Boolean mask of the pixels the person changed."""
        return self.labels != self.original


class ReviewRecord:
    """Read and write the ``sgnet_review`` subgroup of one label store.

    Made by the store (``store.review``); do not construct one for a folder yourself.

    Parameters
    ----------
    guard : StoreGuard
        The store's lock and writability.
    """

    def __init__(self, guard: StoreGuard) -> None:
        self._guard = guard

    @property
    def store_path(self) -> Path:
        """The label store folder."""
        return self._guard.path

    @property
    def read_only(self) -> bool:
        """True when every write is refused."""
        return self._guard.read_only

    # ------------------------------------------------------------------ helpers
    def _group(self, create: bool) -> zarr.Group | None:
        path = self.store_path / GROUP_NAME
        if create:
            self._guard.check_writable("save review state")
        try:
            if (path / "zarr.json").exists():
                return zarr.open_group(path, mode="r" if self.read_only else "r+")
            if not create:
                return None
            group = zarr.open_group(path, mode="w-")
            group.update_attributes({"pending": None, "reviewed": []})
            return group
        except (OSError, ValueError) as exc:
            raise StoreError(self.store_path, f"cannot open review state: {exc}") from exc

    def _writable_group(self) -> zarr.Group:
        group = self._group(create=True)
        if group is None:  # pragma: no cover - _group(create=True) always returns a group
            raise StoreError(self.store_path, "cannot create the review state")
        return group

    def _attrs(self) -> dict[str, Any]:
        group = self._group(create=False)
        return {} if group is None else dict(group.attrs.asdict())

    # ------------------------------------------------------------------ reviewed regions
    def reviewed(self) -> list[Box]:
        """Regions marked reviewed, oldest first."""
        return [Box(*map(int, b)) for b in self._attrs().get("reviewed", [])]

    def add_reviewed(self, box: Box) -> None:
        """Mark one more region reviewed."""
        with self._guard.writing("save review state"):
            group = self._writable_group()
            reviewed = list(group.attrs.get("reviewed", []))
            reviewed.append(list(box.as_tuple()))
            group.update_attributes({"reviewed": reviewed})

    def unlabelled(self) -> list[Box]:
        """Boxes holding pixels a person erased to "unlabelled", oldest first."""
        return [Box(*map(int, b)) for b in self._attrs().get("unlabelled", [])]

    def add_unlabelled(self, box: Box) -> None:
        """Record a box holding pixels erased to "unlabelled"."""
        with self._guard.writing("save review state"):
            group = self._writable_group()
            boxes = list(group.attrs.get("unlabelled", []))
            boxes.append(list(box.as_tuple()))
            group.update_attributes({"unlabelled": boxes})

    def remove_unlabelled(self, region: Box) -> None:
        """Forget the unlabelled boxes meeting ``region`` (review has shown them)."""
        with self._guard.writing("save review state"):
            group = self._writable_group()
            boxes = [b for b in group.attrs.get("unlabelled", [])
                     if Box(*map(int, b)).intersect(region).is_empty]
            group.update_attributes({"unlabelled": boxes})

    # ------------------------------------------------------------------ pending edit
    def save_pending(self, box: Box, labels: np.ndarray, original: np.ndarray, saved: str) -> None:
        """Autosave an uncommitted edit (crash-safe: the previous autosave stays valid).

        Parameters
        ----------
        box : Box
            The crop in store level-0 pixels.
        labels, original : numpy.ndarray
            ``(box.h, box.w)`` uint8: the edited crop and the crop as loaded.
        saved : str
            ISO time recorded with the autosave.
        """
        if labels.shape != (box.h, box.w) or original.shape != labels.shape:
            raise ValueError(f"pending edit arrays {labels.shape} do not match {box.as_tuple()}")
        with self._guard.writing("autosave the edit"):
            group = self._writable_group()
            current = (group.attrs.get("pending") or {}).get("slot")
            slot = _SLOTS[1] if current == _SLOTS[0] else _SLOTS[0]
            sub = group.require_group(slot)
            for name, arr in (("labels", labels), ("original", original)):
                chunks = (min(_CHUNK, box.h), min(_CHUNK, box.w))
                target = sub.create_array(
                    name,
                    shape=arr.shape,
                    chunks=chunks,
                    dtype="uint8",
                    fill_value=0,
                    overwrite=True,
                )
                target[...] = np.asarray(arr, dtype=np.uint8)
            # The pointer is written last: it only ever names a complete slot.
            group.update_attributes(
                {"pending": {"slot": slot, "box": list(box.as_tuple()), "saved": saved}}
            )

    def load_pending(self) -> PendingEdit | None:
        """The last autosaved edit, or ``None``."""
        group = self._group(create=False)
        if group is None:
            return None
        info = group.attrs.get("pending")
        if not info:
            return None
        try:
            box = Box(*map(int, info["box"]))
            sub = group[info["slot"]]
            labels = np.asarray(sub["labels"][...])
            original = np.asarray(sub["original"][...])
        except (KeyError, TypeError, ValueError, OSError) as exc:
            log.warning("%s: ignoring a damaged pending edit (%s)", self.store_path, exc)
            return None
        if labels.shape != (box.h, box.w) or original.shape != labels.shape:
            log.warning("%s: ignoring a pending edit whose arrays do not match", self.store_path)
            return None
        return PendingEdit(box, labels, original, str(info.get("saved", "")))

    def clear_pending(self) -> None:
        """Drop the autosaved edit (after a commit or an explicit discard)."""
        with self._guard.writing("save review state"):
            group = self._group(create=False)
            if group is None or not group.attrs.get("pending"):
                return
            self._guard.check_writable("save review state")
            group.update_attributes({"pending": None})
            for slot in _SLOTS:
                with contextlib.suppress(KeyError, OSError):
                    del group[slot]
