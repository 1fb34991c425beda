"""The write guard every part of one label store shares: its lock, writability and errors.

A :class:`~napari_sgnet.io.labelstore.store.LabelStore` hands the same
:class:`StoreGuard` to each of its components (records, pixel writes, review state),
so they all write under one re-entrant lock per store folder: the lock is shared by
every instance of the same folder in this process, so two opened copies of one store
never interleave their read-modify-write updates.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError

__all__ = ["CODEC_ERRORS", "GuardedArray", "StoreGuard", "chunk_problem"]

#: What zarr and its codecs raise for a chunk whose bytes are damaged (Zstd: RuntimeError;
#: a chunk of the wrong length: ValueError).
CODEC_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, OSError)

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.RLock:
    """One re-entrant lock per store folder, shared by every instance in this process."""
    key = str(path.resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


class StoreGuard:
    """The lock, writability and write-error translation of one label store folder.

    Parameters
    ----------
    path : Path
        The store folder (named in every error).
    read_only : bool
        Refuse every write.
    """

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lock = _path_lock(self.path)

    def check_writable(self, action: str = "write") -> None:
        """Raise :class:`StoreError` when the store is read-only.

        Parameters
        ----------
        action : str
            What was refused, for the message ("write", "save review state").
        """
        if self.read_only:
            raise StoreError(self.path, f"label store is opened read-only; cannot {action}")

    @contextlib.contextmanager
    def writing(self, action: str = "write label store") -> Iterator[None]:
        """Hold the store lock and turn file-system failures into a :class:`StoreError`.

        Parameters
        ----------
        action : str
            What failed, for the message ("cannot <action>: <reason>").
        """
        with self.lock:
            try:
                yield
            except StoreError:
                raise
            except OSError as exc:
                raise StoreError(self.path, f"cannot {action}: {exc}") from exc
            except ValueError as exc:
                if "read-only" in str(exc):
                    raise StoreError(self.path, "label store is read-only; cannot write") from exc
                raise


def chunk_problem(
    path: Path, name: str, coords: tuple[int, ...], chunks: tuple[int, ...], tile: int,
    scale: int, exc: BaseException,
) -> StoreError:
    """The :class:`StoreError` for chunk ``coords`` of array ``name`` that failed to decode."""
    y0, x0 = (c * s * scale for c, s in zip(coords, chunks, strict=False))
    where = f"level-0 pixels x={x0}, y={y0}"
    if name != "done":
        where += f", tile ({y0 // tile}, {x0 // tile})"
    return StoreError(
        path,
        f"array {name!r} chunk {'/'.join(str(c) for c in coords)} ({where}) is damaged and "
        f"cannot be read ({type(exc).__name__}: {exc}); run `napari-sgnet check {path} "
        "--repair` to re-predict it",
    )


class GuardedArray:
    """A read-only view of one store array whose damaged chunks raise a :class:`StoreError`.

    Reads go straight to the zarr array; only when one fails with a codec error are the
    chunks under the selection tried one by one, to name the damaged one (its array, chunk
    key and tile). Has what ``dask.array.from_array`` needs (shape, dtype, ndim, chunks).

    Parameters
    ----------
    array : zarr.Array
        The array.
    name : str
        Its name in the store (``"0"``, ``"confidence"``, ...).
    path : Path
        The store folder.
    tile : int
        The store's tile side in level-0 pixels.
    scale : int
        Level-0 pixels per pixel of this array (``2**k`` for label level ``k``; for the
        done-map, ignored).
    """

    def __init__(self, array: zarr.Array, name: str, path: Path, *, tile: int, scale: int = 1):
        self.array = array
        self.name = name
        self.path = Path(path)
        self.tile = tile
        self.scale = scale
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self.chunks: tuple[int, ...] = tuple(array.chunks)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except CODEC_ERRORS as exc:
            raise self._locate(key, exc) from exc

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole array (``np.asarray(view)``), read like any other selection."""
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    def _locate(self, key: Any, exc: BaseException) -> StoreError:
        ranges = []
        keys = key if isinstance(key, tuple) else (key,)
        for dim, (n, c) in enumerate(zip(self.shape, self.chunks, strict=False)):
            k = keys[dim] if dim < len(keys) else slice(None)
            if isinstance(k, slice):
                start, stop, _ = k.indices(n)
            else:
                start = int(k) % n if n else 0
                stop = start + 1
            ranges.append(range(start // c, max(start // c + 1, -(-stop // c))))
        for coords in itertools.product(*ranges):
            box = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(coords, self.chunks, self.shape, strict=False)
            )
            try:
                self.array[box]
            except CODEC_ERRORS as inner:
                return chunk_problem(
                    self.path, self.name, coords, self.chunks, self.tile, self.scale, inner
                )
        return StoreError(self.path, f"cannot read array {self.name!r}: {exc}")
