"""Import QuPath GeoJSON annotations into a label store as corrections.

:func:`import_geojson` is what ``napari-sgnet import FILE.geojson --store STORE`` calls:
the annotations are read and checked against the store's palette and slide size
(:func:`napari_sgnet.io.importers.read_geojson`), rasterised onto the store's level 0
(the model's working level, ``base_downsample`` slide pixels per store pixel) block by
block, and committed as **one** correction (:meth:`LabelStore.commit_blocks`): the pixels
inside the polygons take their class, are marked edited (later model runs keep them)
and get confidence 255; pixels outside keep their labels. The commit record names the
file, its SHA-256 and the feature count. Every check, including that the polygons cover
at least one store pixel, runs before the first byte is written.

:func:`open_import_edit` opens annotations as the review session's pending edit (the
dock does this when a ``.geojson`` is dropped or opened on a slide): the person reviews,
may paint on, and commits it like a brush edit.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.app.review import EditRegion, ReviewSession
from napari_sgnet.errors import StoreError, UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.io.importers import Annotations, GeoJSONError, Grid, read_geojson
from napari_sgnet.io.labelstore import LabelStore

__all__ = [
    "DEFAULT_BLOCK",
    "ImportResult",
    "annotation_crop",
    "import_geojson",
    "open_import_edit",
    "read_for_store",
    "store_grid",
]

log = logging.getLogger(__name__)

#: Side of the blocks rasterised and written at a time (store level-0 pixels).
DEFAULT_BLOCK = 2048


@dataclass(frozen=True)
class ImportResult:
    """What an import committed.

    Attributes
    ----------
    record : dict
        The store's commit record.
    pixels_per_class : dict of str to int
        Store level-0 pixels written per class name.
    annotations : Annotations
        What was read.
    """

    record: dict[str, Any]
    pixels_per_class: dict[str, int] = field(default_factory=dict)
    annotations: Annotations | None = None

    @property
    def pixels(self) -> int:
        """Total pixels written."""
        return int(sum(self.pixels_per_class.values()))


def _slide_size(store: LabelStore) -> tuple[int, int] | None:
    ident = store.slide_identity
    w, h = ident.get("width"), ident.get("height")
    return (int(w), int(h)) if w is not None and h is not None else None


def store_grid(store: LabelStore) -> Grid:
    """Where the store's level-0 pixels lie on the slide."""
    return Grid(store.base_downsample, slide_size=_slide_size(store))


def read_for_store(path: str | Path, store: LabelStore) -> Annotations:
    """Read ``path`` with the store's palette, checked against the store's slide size."""
    return read_geojson(path, store.palette, slide_size=_slide_size(store))


def _blocks(box: Box, chunk: int, block: int) -> Iterator[Box]:
    """Chunk-aligned blocks covering ``box`` (each clipped to ``box``)."""
    step = max(chunk, block // chunk * chunk)
    y = box.y // chunk * chunk
    while y < box.y1:
        x = box.x // chunk * chunk
        while x < box.x1:
            sub = Box(x, y, step, step).intersect(box)
            if not sub.is_empty:
                yield sub
            x += step
        y += step


def _tight(covered: np.ndarray) -> Box:
    """The bounding box of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    return Box.from_bounds(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _counts(labels: np.ndarray, covered: np.ndarray) -> np.ndarray:
    return np.bincount(labels[covered].ravel(), minlength=256)


def import_geojson(
    path: str | Path,
    store: LabelStore | str | Path,
    *,
    author: str | None = None,
    message: str | None = None,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Commit the polygons of a QuPath GeoJSON file into a label store as corrections.

    Parameters
    ----------
    path : str or Path
        The ``.geojson`` file (see :mod:`napari_sgnet.io.importers.geojson`).
    store : LabelStore or path
        The slide's label store (opened for writing when a path is given).
    author, message : str, optional
        Recorded with the commit (default author: the login name).
    block : int
        Side of the blocks rasterised at a time (memory: a few bytes per block pixel).
    progress : callable, optional
        ``progress(done, total)`` over the blocks of both passes.

    Returns
    -------
    ImportResult

    Raises
    ------
    GeoJSONError
        Unreadable or malformed file, unknown class (the message lists the palette),
        a feature outside the slide, or polygons too small to cover a store pixel.
    StoreError
        Missing, foreign or read-only store.
    """
    if not isinstance(store, LabelStore):
        store = LabelStore.open(store)
    if store.read_only:
        raise StoreError(store.path, "is open read-only; nothing can be imported into it")
    path = Path(path)
    annotations = read_for_store(path, store)
    grid = store_grid(store)
    box = annotations.grid_box(grid, store.width, store.height)
    blocks = list(_blocks(box, store.chunk, block))
    total = 2 * len(blocks)
    counts = np.zeros(256, dtype=np.int64)
    for i, sub in enumerate(blocks):  # pass 1: count, write nothing
        labels, covered = annotations.rasterise(sub, grid)
        counts += _counts(labels, covered)
        if progress is not None:
            progress(i + 1, total)
    if not counts.any():
        raise GeoJSONError(
            path,
            f"the annotations cover no pixel of the label store (one store pixel is "
            f"{store.base_downsample:g} slide pixels wide); nothing imported",
        )
    names = store.palette.names
    per_class = {names[k - 1]: int(counts[k]) for k in range(1, len(names) + 1) if counts[k]}
    done = len(blocks)

    def writes() -> Iterator[tuple[Box, np.ndarray, np.ndarray]]:
        nonlocal done
        for sub in blocks:  # pass 2: the same rasterisation, written
            labels, covered = annotations.rasterise(sub, grid)
            done += 1
            if progress is not None:
                progress(done, total)
            if covered.any():
                tight = _tight(covered)
                yield (
                    tight.translate(sub.x, sub.y),
                    labels[tight.slices()],
                    covered[tight.slices()],
                )

    source = {"kind": "geojson import", **annotations.provenance()}
    record = store.commit_blocks(
        writes(),
        author=author if author is not None else _login(),
        message=message if message is not None else f"imported {path.name}",
        extra={"source": source, "pixels_per_class": per_class},
    )
    log.info("imported %s into %s: %s", path, store.path, per_class)
    return ImportResult(record, per_class, annotations)


def annotation_crop(
    annotations: Annotations, store: LabelStore, max_side: int
) -> tuple[Box, np.ndarray, np.ndarray]:
    """The store level-0 crop the annotations cover, and their labels there.

    Returns
    -------
    box : Box
        The crop (the bounding box of the covered pixels), store level-0 pixels.
    labels : numpy.ndarray
        The annotations' label ids in ``box`` (0 where none).
    covered : numpy.ndarray
        The annotated pixels.

    Raises
    ------
    UserInputError
        The crop is larger than ``max_side`` on a side (import it with the CLI instead),
        or the annotations cover no store pixel.
    """
    grid = store_grid(store)
    box = annotations.grid_box(grid, store.width, store.height)
    labels, covered = annotations.rasterise(box, grid)
    if not covered.any():
        raise GeoJSONError(annotations.path, "the annotations cover no pixel of the label store")
    tight = _tight(covered)
    labels, covered = labels[tight.slices()], covered[tight.slices()]
    box = tight.translate(box.x, box.y)
    if max(box.w, box.h) > max_side:
        raise UserInputError(
            f"{annotations.path}: the annotations span {box.w} x {box.h} label pixels, more "
            f"than the {max_side}-pixel review crop; import them with "
            f"`napari-sgnet import {annotations.path.name} --store {store.path}`"
        )
    return box, labels, covered


def open_import_edit(session: ReviewSession, path: str | Path) -> EditRegion:
    """Open a GeoJSON file's annotations as the session's pending edit, to review and commit.

    The edit crop is the annotations' bounding box on store level 0, holding the store's
    labels with the annotated pixels replaced; committing it (``ReviewSession.commit``, the
    brush edit's path) writes them as edited, with the file, its SHA-256 and its feature
    count in the commit record's ``source``. Every check runs before the edit opens.

    Raises
    ------
    GeoJSONError
        As :func:`import_geojson`.
    ReviewError
        An edit is already open, or an autosaved edit waits to be restored.
    UserInputError
        The annotations span more than the review crop (use the CLI import).
    """
    annotations = read_for_store(path, session.store)
    box, labels, covered = annotation_crop(annotations, session.store, session.max_edit_side)
    edit = session.start_edit(box)
    edit.labels[covered] = labels[covered]
    edit.imported = covered
    edit.source = {"kind": "geojson import", **annotations.provenance()}
    log.info("opened %s as an edit of %s", path, box.as_tuple())
    return edit


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no login name (some containers)
        return None
