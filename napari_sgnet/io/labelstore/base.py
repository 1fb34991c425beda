"""Opening, identity checks, metadata and validation of a LabelStore.

:class:`napari_sgnet.io.labelstore.store.LabelStore` adds the data operations; this base
holds everything about *which* store it is and whether it may be written.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.meta import (
    FORMAT_NAME,
    FORMAT_VERSION,
    compare_slide_identity,
    slide_identity,
)
from napari_sgnet.io.labelstore.pyramid import level_shapes
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette, PaletteError

__all__ = ["MAX_REQUEST_RECORDS", "LabelStoreBase"]

#: The store keeps the records of this many most recent requests.
MAX_REQUEST_RECORDS = 200

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.RLock:
    """One re-entrant lock per store folder, shared by every instance in this process."""
    key = str(path.resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


class LabelStoreBase:
    """Store identity, metadata and validation (see :class:`LabelStore`)."""

    def __init__(self, path: Path, group: zarr.Group, *, read_only: bool) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._group = group
        self._lock = _path_lock(self.path)
        meta = group.attrs.asdict().get("sgnet")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise StoreError(self.path, "is not a napari-sgnet label store (no 'sgnet' attributes)")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise StoreError(
                self.path,
                f"label store format {meta['format_version']} is newer than this napari-sgnet "
                f"understands ({FORMAT_VERSION}); upgrade napari-sgnet",
            )
        self._meta: dict[str, Any] = meta
        try:
            self.palette = Palette.from_dict(meta["palette"])
            self.base_downsample = float(meta["base_downsample"])
            self.tile = int(meta["tile"])
            self.chunk = int(meta["chunk"])
            self.level_shapes = [tuple(int(v) for v in s) for s in meta["level_shapes"]]
            self.grid_shape = tuple(int(v) for v in meta["grid_shape"])
            self._labels = [group[str(k)] for k in range(len(self.level_shapes))]
            self._confidence = group["confidence"]
            self._edited = group["edited"]
            self._done = group["done"]
        except (KeyError, TypeError, ValueError, PaletteError) as exc:
            raise StoreError(self.path, f"label store metadata is damaged: {exc!r}") from exc

    # ------------------------------------------------------------------ opening
    @staticmethod
    def is_store(path: str | Path) -> bool:
        """True when ``path`` holds a napari-sgnet label store (reads only metadata)."""
        try:
            attrs = zarr.open_group(Path(path), mode="r").attrs.asdict()
        except (OSError, ValueError, KeyError, zarr.errors.GroupNotFoundError):
            return False
        meta = attrs.get("sgnet")
        return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        slide: Pyramid | None = None,
        palette: Palette | None = None,
        mode: str = "r+",
    ) -> Any:
        """Open an existing store, optionally checking it belongs to ``slide`` and ``palette``.

        Parameters
        ----------
        path : str or Path
            The store folder.
        slide : Pyramid, optional
            When given, the store must have been made for this slide.
        palette : Palette, optional
            When given, the store's classes must be the same (names, in order).
        mode : {"r+", "r"}
            ``"r"`` opens read-only: every write raises :class:`StoreError`.

        Raises
        ------
        StoreError
            Missing, not a label store, damaged, or made for another slide or palette.
        """
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise StoreError(path, "label store does not exist")
        try:
            group = zarr.open_group(path, mode=mode)
        except zarr.errors.GroupNotFoundError as exc:
            raise StoreError(path, "is not a napari-sgnet label store (no zarr group)") from exc
        except (OSError, ValueError) as exc:
            raise StoreError(path, f"cannot open label store: {exc}") from exc
        store = cls(path, group, read_only=(mode == "r"))
        if slide is not None:
            store.check_slide(slide)
        if palette is not None:
            store.check_palette(palette)
        return store

    def check_slide(self, slide: Pyramid) -> None:
        """Raise :class:`StoreError` unless the store was made for ``slide``."""
        stored = self._meta.get("slide", {})
        problems = compare_slide_identity(stored, slide_identity(slide))
        if problems:
            raise StoreError(
                self.path,
                f"was made for slide {stored.get('name')!r}, not {slide.name!r}: "
                + "; ".join(problems),
            )

    def check_palette(self, palette: Palette) -> None:
        """Raise :class:`StoreError` unless ``palette`` has the store's classes."""
        if not self.palette.same_classes(palette):
            raise StoreError(
                self.path,
                f"palette mismatch: store classes {self.palette.names}, requested {palette.names}",
            )

    # ------------------------------------------------------------------ geometry
    @property
    def height(self) -> int:
        """Rows of level 0."""
        return self.level_shapes[0][0]

    @property
    def width(self) -> int:
        """Columns of level 0."""
        return self.level_shapes[0][1]

    @property
    def n_levels(self) -> int:
        """Number of label levels."""
        return len(self.level_shapes)

    def tile_box(self, index: tuple[int, int]) -> Box:
        """Level-0 box of tile ``(ty, tx)``, clipped to the level."""
        ty, tx = index
        t = self.tile
        return Box(tx * t, ty * t, t, t).clip(self.width, self.height)

    # ------------------------------------------------------------------ metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """A copy of the ``sgnet`` attributes."""
        return copy.deepcopy(self._meta)

    @property
    def slide_identity(self) -> dict[str, Any]:
        """Identity record of the slide the store was made for."""
        return dict(self._meta["slide"])

    @property
    def model(self) -> dict[str, Any] | None:
        """The model whose predictions the done-map refers to, or ``None``."""
        self._refresh_meta()
        return copy.deepcopy(self._meta.get("model"))

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Records of the most recent inference requests run into this store."""
        self._refresh_meta()
        return copy.deepcopy(self._meta.get("requests", []))

    @property
    def commits(self) -> list[dict[str, Any]]:
        """Records of every committed edit."""
        self._refresh_meta()
        return copy.deepcopy(self._meta.get("commits", []))

    def set_model(self, info: dict[str, Any]) -> None:
        """Record the model that predictions (and the done-map) now come from."""
        self._update_meta(lambda m: m.__setitem__("model", dict(info)))

    def record_request(self, record: dict[str, Any]) -> int:
        """Append a request record; returns its number (for :meth:`update_request`)."""
        number: list[int] = []

        def _add(meta: dict[str, Any]) -> None:
            meta["n_requests"] = int(meta.get("n_requests", 0)) + 1
            number.append(meta["n_requests"])
            meta["requests"] = [*meta.get("requests", []), {"number": number[0], **record}][
                -MAX_REQUEST_RECORDS:
            ]

        self._update_meta(_add)
        return number[0]

    def update_request(self, number: int, **fields: Any) -> None:
        """Update fields of request ``number`` (e.g. its status when it ends)."""

        def _set(meta: dict[str, Any]) -> None:
            for rec in meta.get("requests", []):
                if rec.get("number") == number:
                    rec.update(fields)

        self._update_meta(_set)

    def _refresh_meta(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            fresh = zarr.open_group(self.path, mode="r").attrs.asdict().get("sgnet")
            if isinstance(fresh, dict):
                self._meta = fresh

    def _update_meta(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Re-read, change and rewrite the ``sgnet`` attributes under the store lock."""
        self._check_writable()
        with self._lock, self._writing():
            self._refresh_meta()
            meta = copy.deepcopy(self._meta)
            change(meta)
            self._group.update_attributes({"sgnet": meta})
            self._meta = meta

    # ------------------------------------------------------------------ validation
    def validate(self, *, deep: bool = False) -> None:
        """Check the store's structure; ``deep`` also scans the done-map and label values.

        Raises
        ------
        StoreError
            Listing every problem found.
        """
        problems = []
        expected = level_shapes(self.height, self.width, self.chunk)
        if [tuple(s) for s in expected] != self.level_shapes:
            problems.append(f"level shapes {self.level_shapes} != expected {expected}")
        for k, (arr, shape) in enumerate(zip(self._labels, self.level_shapes, strict=False)):
            if tuple(arr.shape) != shape or arr.dtype != np.uint8:
                problems.append(f"level {k} is {arr.shape} {arr.dtype}, expected {shape} uint8")
        for name in ("confidence", "edited"):
            arr = getattr(self, f"_{name}")
            if tuple(arr.shape) != self.level_shapes[0]:
                problems.append(f"{name} is {arr.shape}, expected {self.level_shapes[0]}")
        ny, nx = -(-self.height // self.tile), -(-self.width // self.tile)
        if tuple(self._done.shape) != (ny, nx) or self.grid_shape != (ny, nx):
            problems.append(f"done-map is {self._done.shape}, expected {(ny, nx)}")
        if self.tile % self.chunk:
            problems.append(f"chunk {self.chunk} does not divide tile {self.tile}")
        ome = self._group.attrs.asdict().get("ome", {})
        datasets = (ome.get("multiscales") or [{}])[0].get("datasets", [])
        if [d.get("path") for d in datasets] != [str(k) for k in range(self.n_levels)]:
            problems.append("OME-NGFF multiscales datasets do not list the label levels")
        if deep and not problems:
            done = self.done_map()
            if not np.isin(done, (0, 1, 2)).all():
                problems.append(f"done-map holds values {np.unique(done).tolist()}")
            top = max(int(np.asarray(arr[...]).max()) for arr in self._labels)
            if top > self.palette.num_classes:
                problems.append(f"label id {top} exceeds {self.palette.num_classes} classes")
        if problems:
            raise StoreError(self.path, "invalid label store: " + "; ".join(problems))

    # ------------------------------------------------------------------ helpers
    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(self.path, "label store is opened read-only; cannot write")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn file-system failures during a write into a StoreError naming the store."""
        try:
            yield
        except OSError as exc:
            raise StoreError(self.path, f"cannot write label store: {exc}") from exc
        except ValueError as exc:
            if "read-only" in str(exc):
                raise StoreError(self.path, "label store is read-only; cannot write") from exc
            raise

    def _hull(self, box: Box) -> Box:
        """The chunk-aligned box covering ``box`` at level 0, clipped to the level."""
        c = self.chunk
        return Box.from_bounds(
            box.x // c * c, box.y // c * c, -(-box.x1 // c) * c, -(-box.y1 // c) * c
        ).clip(self.width, self.height)

    def _check_box(self, box: Box, *arrays: np.ndarray) -> None:
        if box.is_empty or not Box(0, 0, self.width, self.height).contains(box):
            raise ValueError(
                f"box {box.as_tuple()} is empty or outside level 0 "
                f"({self.width} x {self.height}) of {self.path}"
            )
        for arr in arrays:
            if tuple(arr.shape) != (box.h, box.w):
                raise ValueError(f"array shape {arr.shape} does not match box {box.as_tuple()}")
