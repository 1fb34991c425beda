"""Review-session state without Qt: where the labels sit, the edit crop, commit and autosave.

A :class:`ReviewSession` ties one slide to its :class:`~napari_sgnet.io.labelstore.store.LabelStore`
and holds at most one :class:`EditRegion`: a full-resolution (store level 0) crop of the
labels that a person paints on. Committing writes the person's changes with
``LabelStore.commit_edit`` (marking them edited, so later runs keep them); autosaves
keep an uncommitted crop in the store (see :mod:`napari_sgnet.io.labelstore.review_state`) so no
edit is lost to a crash or a closed window. The widget calls these methods; the tests
call the same ones on a ``ViewerModel``.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sgnet.app.viewport import ViewState, view_downsample, visible_box
from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.labelstore.meta import now_iso
from napari_sgnet.io.labelstore.review_state import PendingEdit
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = [
    "ERASER_BACKGROUND",
    "ERASER_MEANINGS",
    "ERASER_UNLABELLED",
    "MAX_EDIT_SIDE",
    "MAX_VIEW_TILES",
    "EditRegion",
    "OutOfPaletteError",
    "RegionTooLargeError",
    "ReviewError",
    "ReviewSession",
    "coarse_view_message",
    "store_transform",
    "tiles_covering",
]

log = logging.getLogger(__name__)

#: Largest edit crop side, in store level-0 pixels (4096 x 4096 uint8 = 16 MB).
MAX_EDIT_SIDE = 4096
#: "Run on view" refuses (without confirmation) a view covering more model tiles than this.
MAX_VIEW_TILES = 64


class ReviewError(UserInputError, RuntimeError):
    """A review action cannot be done now (no edit open, one already open, ...)."""


class RegionTooLargeError(ReviewError):
    """The requested edit crop is larger than the cap."""


class OutOfPaletteError(ReviewError):
    """An edit holds a label id that is not a class of the store's palette."""


#: The eraser means "unlabelled": the model predicts the erased pixels again.
ERASER_UNLABELLED = "unlabelled"
#: The eraser means "background": erased pixels become the palette's first class.
ERASER_BACKGROUND = "background"
#: What the eraser (label 0) can mean at commit, with the words the dock shows.
ERASER_MEANINGS = {
    ERASER_UNLABELLED: "Unlabelled: let the model predict here again",
    ERASER_BACKGROUND: "Background (the first class, e.g. Stroma/background)",
}


def store_transform(
    base_downsample: float,
    slide_scale: tuple[float, float],
    slide_translate: tuple[float, float] = (0.0, 0.0),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """World ``(scale, translate)`` of a store's level 0 over a slide layer.

    Store pixel ``i`` covers slide pixels ``[i b, (i + 1) b)``, so its centre is at slide
    pixel ``i b + (b - 1) / 2``: scale ``b`` times the slide's, shifted half a store pixel
    less half a slide pixel (the same transform as the store's OME-NGFF metadata).
    """
    b = float(base_downsample)
    scale = (slide_scale[0] * b, slide_scale[1] * b)
    translate = (
        slide_translate[0] + (b - 1.0) / 2.0 * slide_scale[0],
        slide_translate[1] + (b - 1.0) / 2.0 * slide_scale[1],
    )
    return scale, translate


def tiles_covering(box: Box, downsample: float, tile: int) -> int:
    """Number of model tiles (``tile`` pixels at ``downsample``) a slide level-0 box meets."""
    if box.is_empty:
        return 0
    x0, y0 = math.floor(box.x / downsample), math.floor(box.y / downsample)
    x1, y1 = math.ceil(box.x1 / downsample), math.ceil(box.y1 / downsample)
    return (math.ceil(x1 / tile) - x0 // tile) * (math.ceil(y1 / tile) - y0 // tile)


def coarse_view_message(
    view: ViewState, slide_box: Box, slide_scale: tuple[float, float], downsample: float,
    tile: int, max_tiles: int = MAX_VIEW_TILES,
) -> str | None:
    """A message when a view is too zoomed out to run the model on, else ``None``.

    Parameters
    ----------
    view : ViewState
        The camera.
    slide_box : Box
        The visible region in slide level-0 pixels.
    slide_scale : tuple of float
        The slide layer's world scale.
    downsample : float
        The model's working downsample (slide level-0 pixels per model pixel).
    tile : int
        Model tile side in model pixels.
    max_tiles : int
        Most tiles a view may cover without asking.
    """
    n = tiles_covering(slide_box, downsample, tile)
    if n <= max_tiles:
        return None
    ds = view_downsample(view, slide_scale)
    return (
        f"Zoomed out too far for the model: this view covers {n} tiles at the model's "
        f"resolution (1 screen pixel = {ds:.1f} slide pixels, {ds / downsample:.1f} model "
        f"pixels; limit {max_tiles}). Zoom in, or run on the visible area anyway."
    )


@dataclass
class EditRegion:
    """An open edit: a crop of store level 0 that a person paints on.

    Parameters
    ----------
    box : Box
        The crop in store level-0 pixels.
    labels : numpy.ndarray
        The crop being painted (the edit layer's own data array).
    original : numpy.ndarray
        The crop as loaded; the person's changes are ``labels != original``.
    imported : numpy.ndarray, optional
        Pixels an import (QuPath GeoJSON) set: committed as edited even where the
        imported class equals the label already there.
    source : dict, optional
        Provenance of an import, added to the commit record as ``source``.
    """

    box: Box
    labels: np.ndarray
    original: np.ndarray
    _saved: np.ndarray | None = field(default=None, repr=False)
    imported: np.ndarray | None = field(default=None, repr=False)
    source: dict[str, Any] | None = None

    @property
    def changed(self) -> np.ndarray:
        """Boolean mask of the pixels the person changed."""
        changed: np.ndarray = np.asarray(self.labels) != self.original
        return changed

    @property
    def dirty(self) -> bool:
        """True when the crop differs from the labels it was loaded with."""
        return not np.array_equal(np.asarray(self.labels), self.original)

    @property
    def unsaved(self) -> bool:
        """True when the crop changed since the last autosave (or load)."""
        reference = self.original if self._saved is None else self._saved
        return not np.array_equal(np.asarray(self.labels), reference)


class ReviewSession:
    """One slide, its label store, the open edit and the reviewed regions.

    Parameters
    ----------
    slide : Pyramid
        The slide (level-0 size and µm/px are used).
    store : LabelStore
        Its label store.
    slide_scale, slide_translate : tuple of float
        The slide layer's world transform (defaults: µm/px when known, else 1; no shift).
    max_edit_side : int
        Cap on the edit crop side, in store level-0 pixels.
    """

    def __init__(
        self,
        slide: Pyramid,
        store: LabelStore,
        *,
        slide_scale: tuple[float, float] | None = None,
        slide_translate: tuple[float, float] = (0.0, 0.0),
        max_edit_side: int = MAX_EDIT_SIDE,
    ) -> None:
        self.slide = slide
        self.store = store
        mpp = slide.mpp if slide.mpp is not None else 1.0
        sy, sx = slide_scale or (mpp, mpp)
        self.slide_scale: tuple[float, float] = (float(sy), float(sx))
        self.slide_translate: tuple[float, float] = (float(slide_translate[0]),
                                                     float(slide_translate[1]))
        self.max_edit_side = int(max_edit_side)
        #: Side of the review queue's regions, µm (see :mod:`napari_sgnet.app.review_queue`).
        self.region_um = 256.0
        self.record = store.review
        self.edit: EditRegion | None = None
        # Serialises autosaves (which may run on a worker thread) with commit / discard,
        # so an autosave can never resurrect an edit that was just committed.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ geometry
    @property
    def palette(self) -> Palette:
        """The store's palette."""
        return self.store.palette

    @property
    def transform(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """World ``(scale, translate)`` of store level 0."""
        return store_transform(self.store.base_downsample, self.slide_scale, self.slide_translate)

    def slide_box(self, view: ViewState) -> Box:
        """The visible region in slide level-0 pixels (what "Run on view" predicts)."""
        return visible_box(
            view, scale=self.slide_scale, translate=self.slide_translate,
            image_size=(self.slide.height, self.slide.width),
        )

    def store_box(self, view: ViewState) -> Box:
        """The visible region in store level-0 pixels."""
        scale, translate = self.transform
        return visible_box(
            view, scale=scale, translate=translate, image_size=(self.store.height, self.store.width)
        )

    def world_box(self, box: Box) -> tuple[float, float, float, float]:
        """World ``(y0, x0, y1, x1)`` edges of a store level-0 box."""
        (sy, sx), (ty, tx) = self.transform
        return (
            (box.y - 0.5) * sy + ty, (box.x - 0.5) * sx + tx,
            (box.y1 - 0.5) * sy + ty, (box.x1 - 0.5) * sx + tx,
        )

    def camera_for(
        self, box: Box, canvas_size: tuple[int, int], margin: float = 1.15
    ) -> tuple[tuple[float, float], float]:
        """Camera ``(center, zoom)`` that shows a store level-0 box with a margin."""
        y0, x0, y1, x1 = self.world_box(box)
        zoom = min(canvas_size[0] / max(y1 - y0, 1e-9), canvas_size[1] / max(x1 - x0, 1e-9))
        return ((y0 + y1) / 2.0, (x0 + x1) / 2.0), zoom / margin

    # ------------------------------------------------------------------ editing
    @property
    def has_uncommitted_edits(self) -> bool:
        """True when closing now would need a prompt (an open edit with changes)."""
        return self.edit is not None and self.edit.dirty

    def edit_box(self, view: ViewState) -> Box:
        """The store level-0 crop to edit for a view.

        Raises
        ------
        ReviewError
            If the view shows no part of the slide.
        RegionTooLargeError
            If the crop is larger than ``max_edit_side`` on a side.
        """
        box = self.store_box(view)
        if box.is_empty:
            raise ReviewError("The view shows no part of the slide; pan to the tissue first.")
        cap = self.max_edit_side
        if box.w > cap or box.h > cap:
            raise RegionTooLargeError(
                f"The view covers {box.w} x {box.h} label pixels; editing is limited to "
                f"{cap} x {cap}. Zoom in (about {max(box.w, box.h) / cap:.1f}x) and try again."
            )
        return box

    def start_edit(self, box: Box) -> EditRegion:
        """Load the full-resolution labels of ``box`` for editing.

        Raises
        ------
        ReviewError
            If an edit is already open, or an autosaved edit waits to be restored.
        """
        if self.edit is not None:
            raise ReviewError("An edit is already open: commit or discard it first.")
        if self.record.load_pending() is not None:
            raise ReviewError("An autosaved edit waits to be restored: restore it first.")
        box = box.clip(self.store.width, self.store.height)
        if box.is_empty:
            raise ReviewError("The edit region lies outside the slide.")
        labels = np.ascontiguousarray(self.store.read_labels(box, 0), dtype=np.uint8)
        self.edit = EditRegion(box, labels, labels.copy())
        log.info("editing %s of %s", box.as_tuple(), self.store.path)
        return self.edit

    def pending(self) -> PendingEdit | None:
        """The autosaved, uncommitted edit in the store, if any."""
        return self.record.load_pending()

    def restore_pending(self) -> EditRegion | None:
        """Reopen the autosaved edit (after a crash or a closed window), if any."""
        if self.edit is not None:
            return None
        pending = self.record.load_pending()
        if pending is None:
            return None
        labels = np.ascontiguousarray(pending.labels, dtype=np.uint8)
        self.edit = EditRegion(pending.box, labels, pending.original, _saved=labels.copy())
        log.info("restored the edit of %s autosaved at %s", pending.box.as_tuple(), pending.saved)
        return self.edit

    def set_edit_labels(self, labels: np.ndarray) -> None:
        """Point the open edit at the array being painted (the edit layer's data)."""
        edit = self._require_edit()
        if tuple(labels.shape) != (edit.box.h, edit.box.w):
            raise ValueError(f"labels {labels.shape} do not match the edit {edit.box.as_tuple()}")
        edit.labels = labels

    def autosave(self, *, force: bool = False) -> bool:
        """Save the open edit into the store if it changed since the last autosave.

        Safe to call from a worker thread while the main thread paints (the next
        autosave catches whatever a stroke in progress added).

        Returns
        -------
        bool
            True when something was written.
        """
        with self._lock:
            edit = self.edit
            if edit is None or self.store.read_only or not (force or edit.unsaved):
                return False
            snapshot = np.array(edit.labels, dtype=np.uint8, copy=True)
            self.record.save_pending(edit.box, snapshot, edit.original, now_iso())
            edit._saved = snapshot
            return True

    def um_per_px(self) -> float | None:
        """µm per store level-0 pixel (``None`` when the slide's µm/px is unknown)."""
        mpp = self.slide.mpp
        return float(mpp) * self.store.base_downsample if mpp else None

    def check_palette_labels(self, labels: np.ndarray, changed: np.ndarray, box: Box) -> None:
        """Refuse changed pixels whose label is not a palette class.

        Raises
        ------
        OutOfPaletteError
            Naming the label, how many pixels hold it and where the first one is
            (store level-0 pixels and µm of the slide).
        """
        n = self.palette.num_classes
        bad = changed & (labels > n)
        if not bad.any():
            return
        values, counts = np.unique(labels[bad], return_counts=True)
        ys, xs = np.nonzero(bad)  # row-major: the first is the top-left-most
        x, y = box.x + int(xs[0]), box.y + int(ys[0])
        um = self.um_per_px()
        where = f"label pixel ({x}, {y})"
        if um:
            where += f", {x * um:,.0f} x {y * um:,.0f} µm on the slide"
        names = ", ".join(f"{i + 1} {c}" for i, c in enumerate(self.palette.names))
        found = ", ".join(f"label {int(v)} ({int(c):,} pixels)" for v, c in zip(values, counts,
                                                                                  strict=True))
        raise OutOfPaletteError(
            f"Not committed: {found} is not a class of the palette {self.palette.name!r} "
            f"({names}); the first is at {where}. Repaint those pixels with a class from the "
            "list, or Discard."
        )

    def commit(self, *, author: str | None = None, message: str | None = None,
               eraser: str = ERASER_UNLABELLED) -> dict[str, Any]:
        """Write the person's changes to the store and close the edit.

        Only changed pixels are written and marked edited (later runs keep them);
        predictions that landed under the crop while it was open are kept elsewhere.
        The region counts as reviewed. Pixels erased (label 0) mean ``eraser``:
        :data:`ERASER_UNLABELLED` (confidence 0, not edited, their tiles predicted
        again by the next run; review goes there) or :data:`ERASER_BACKGROUND` (the
        palette's first class, edited). The commit can be undone (:meth:`undo_commit`).

        Returns
        -------
        dict
            The store's commit record (``pixels`` is 0 when nothing changed).

        Raises
        ------
        OutOfPaletteError
            When a changed pixel holds a label that is no palette class (nothing written).
        """
        if eraser not in ERASER_MEANINGS:
            raise ValueError(f"eraser must be one of {sorted(ERASER_MEANINGS)}, got {eraser!r}")
        with self._lock:
            edit = self._require_edit()
            labels = np.array(edit.labels, dtype=np.uint8, copy=True)
            changed = labels != edit.original
            if edit.imported is not None:
                changed |= edit.imported
            self.check_palette_labels(labels, changed, edit.box)
            erased = changed & (labels == 0)
            if eraser == ERASER_BACKGROUND:
                labels[erased] = 1
            if changed.any():
                extra = {"source": edit.source} if edit.source is not None else None
                record = self.store.commit_edit(
                    edit.box, labels, mask=changed, author=author, message=message,
                    unlabel_erased=(eraser == ERASER_UNLABELLED), extra=extra,
                )
                if eraser == ERASER_UNLABELLED and erased.any():
                    ys, xs = np.nonzero(erased)
                    self.record.add_unlabelled(Box.from_bounds(
                        edit.box.x + int(xs.min()), edit.box.y + int(ys.min()),
                        edit.box.x + int(xs.max()) + 1, edit.box.y + int(ys.max()) + 1))
            else:
                record = {"time": now_iso(), "box": list(edit.box.as_tuple()), "pixels": 0}
            self.record.clear_pending()
            self.record.add_reviewed(edit.box)
            self.edit = None
            return record

    def undo_commit(self) -> dict[str, Any] | None:
        """Undo the newest commit (labels, confidence, edited mask and done-map as before).

        Returns
        -------
        dict or None
            ``{"box": Box, "time": str, "left": int}`` (``left``: commits that can
            still be undone), or ``None`` when there is nothing to undo.

        Raises
        ------
        ReviewError
            While an edit is open (commit or discard it first).
        """
        with self._lock:
            if self.edit is not None:
                raise ReviewError("Commit or discard the open edit before undoing a commit.")
            record = self.store.undo_commit()
            if record is None:
                return None
            return {"box": record.box, "time": record.time, "left": len(self.store.history)}

    @property
    def undoable(self) -> int:
        """Number of commits that can be undone."""
        return len(self.store.history)

    def discard(self) -> None:
        """Drop the open edit and its autosave (the caller confirms with the person first)."""
        with self._lock:
            self._require_edit()
            self.record.clear_pending()
            self.edit = None

    def _require_edit(self) -> EditRegion:
        if self.edit is None:
            raise ReviewError("No edit is open: use Edit region first.")
        return self.edit

    # ------------------------------------------------------------------ review queue
    @property
    def reviewed(self) -> list[Box]:
        """Regions already reviewed (store level-0 pixels)."""
        return self.record.reviewed()

    def mark_reviewed(self, box: Box) -> None:
        """Mark a store level-0 region reviewed."""
        self.record.add_reviewed(box)

    def review_queue(self) -> list[Any]:
        """The regions still to review, most urgent first (see :mod:`.review_queue`)."""
        from napari_sgnet.app.review_queue import rank_regions

        return rank_regions(self.store, self.reviewed, unlabelled=self.record.unlabelled(),
                            region_um=self.region_um)

    def next_region(self) -> tuple[Any, int]:
        """The next region to review and how many are left after it (it is not marked).

        Returns
        -------
        (QueueRegion or None, int)
            ``(None, 0)`` when every region with predictions is reviewed.
        """
        queue = self.review_queue()
        return (queue[0], len(queue) - 1) if queue else (None, 0)

    def show_region(self, region: Any) -> None:
        """Record that review showed ``region`` (a :class:`QueueRegion`): it is not shown again."""
        self.mark_reviewed(region.box)
        if region.reason == "unlabelled":
            self.record.remove_unlabelled(region.box)
