"""Shared export plumbing: progress reporting, safe output targets, block iteration.

Every exporter writes into a hidden staging path beside the target and moves it
into place only when it is complete, so an interrupted export never leaves a
half-written file under the requested name, and an existing output is replaced
only when the caller asked for it (``overwrite=True``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box

__all__ = ["Progress", "iter_blocks", "report", "staged_output"]

log = logging.getLogger(__name__)

#: ``progress(done, total)``, called after each unit of work (a block, a tile row, a class).
Progress = Callable[[int, int], None]


def report(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when a callback was given."""
    if progress is not None:
        progress(int(done), int(total))


def iter_blocks(height: int, width: int, block: int) -> list[Box]:
    """Row-major ``block`` x ``block`` boxes covering a ``height`` x ``width`` image (clipped)."""
    if block <= 0:
        raise ValueError(f"block size must be positive, got {block}")
    return [
        Box(x, y, block, block).clip(width, height)
        for y in range(0, height, block)
        for x in range(0, width, block)
    ]


def _check_target(
    path: Path,
    *,
    overwrite: bool,
    kind: Literal["file", "dir"],
    replaceable: Callable[[Path], bool] | None,
    protect: Iterable[Path],
) -> None:
    resolved = path.resolve()
    for other in protect:
        if resolved == Path(other).resolve():
            raise StoreError(path, "is the export's own input; choose another output path")
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise StoreError(path, "already exists; pass overwrite=True (--overwrite) to replace it")
    if kind == "file" and not path.is_file():
        raise StoreError(path, "exists and is not a file; refusing to replace it")
    if kind == "dir":
        if not path.is_dir():
            raise StoreError(path, "exists and is not a folder; refusing to replace it")
        if replaceable is not None and not replaceable(path):
            raise StoreError(
                path, "exists and is not a previous export of this kind; refusing to delete it"
            )


@contextlib.contextmanager
def staged_output(
    path: str | Path,
    *,
    overwrite: bool,
    kind: Literal["file", "dir"],
    replaceable: Callable[[Path], bool] | None = None,
    protect: Iterable[Path] = (),
) -> Iterator[Path]:
    """Yield a staging path to write into; move it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        The final output.
    overwrite : bool
        Replace an existing output; otherwise an existing ``path`` raises.
    kind : {"file", "dir"}
        What the output is.
    replaceable : callable, optional
        For folders: ``replaceable(path)`` must be true to delete an existing folder
        (e.g. "is a zarr group"), so ``overwrite`` never wipes unrelated data.
    protect : iterable of Path
        Paths the output must not be (the export's inputs).

    Raises
    ------
    StoreError
        When the target exists (without ``overwrite``), cannot be replaced, or cannot
        be written; the message names the path.
    """
    path = Path(path)
    protect = tuple(protect)
    _check_target(path, overwrite=overwrite, kind=kind, replaceable=replaceable, protect=protect)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(path, f"cannot create the output folder: {exc}") from exc
    stage = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(stage)
    try:
        yield stage
        # Re-check: something may have appeared at the target while we were writing.
        _check_target(
            path, overwrite=overwrite, kind=kind, replaceable=replaceable, protect=protect
        )
        _move_into_place(stage, path, kind)
    except OSError as exc:
        raise StoreError(path, f"cannot write export: {exc}") from exc
    finally:
        _remove(stage)
    log.info("wrote %s", path)


def _move_into_place(stage: Path, path: Path, kind: str) -> None:
    if kind == "file" or not path.exists():
        os.replace(stage, path)
        return
    backup = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(backup)
    os.replace(path, backup)
    try:
        os.replace(stage, path)
    except OSError:
        os.replace(backup, path)
        raise
    _remove(backup)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()
