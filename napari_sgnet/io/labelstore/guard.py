"""The write guard every part of one label store shares: its lock, writability and errors.

A :class:`~napari_sgnet.io.labelstore.store.LabelStore` hands the same
:class:`StoreGuard` to each of its components (records, pixel writes, review state),
so they all write under one re-entrant lock per store folder: the lock is shared by
every instance of the same folder in this process, so two opened copies of one store
never interleave their read-modify-write updates.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from napari_sgnet.errors import StoreError

__all__ = ["StoreGuard"]

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
