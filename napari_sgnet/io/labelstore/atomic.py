"""Creating and replacing label stores so that no crash loses labels.

- A new store is built in a temporary sibling, ``<name>.tmp-<pid>``, and renamed into
  place (one ``os.replace``) only when it is complete: a crash, a kill or a full disk
  during creation leaves either no store or a valid one. Temporary siblings left by a
  process that no longer runs are removed (with a warning) the next time that store is
  created.
- ``overwrite`` moves the old store aside to ``<name>.old-<time>-<pid>`` (a rename, not a
  copy) and deletes it only after the new run's first commit
  (:meth:`~napari_sgnet.io.labelstore.store.LabelStore.discard_replaced`); when the new
  run fails or is cancelled before that, the old store is put back
  (:meth:`~napari_sgnet.io.labelstore.store.LabelStore.restore_replaced`). A moved-aside
  store left behind by a killed process is never deleted automatically (a warning names
  it).
- Free space is checked before anything is written.
- A folder left by an interrupted creation of an earlier napari-sgnet (a zarr group with
  a store's arrays but without its ``sgnet`` attributes: it never held a prediction) is
  recognised, so it can be replaced instead of blocking the store's path.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import time
from pathlib import Path

from napari_sgnet.errors import StoreError

__all__ = [
    "check_free_space",
    "clean_stale_tmp",
    "estimate_store_bytes",
    "is_unfinished_store",
    "leftover_old_stores",
    "move_aside",
    "put_back",
    "tmp_sibling",
]

log = logging.getLogger(__name__)

#: Free space always required beyond the estimate (metadata, attributes, review state).
MIN_FREE_BYTES = 16 * 2**20


def tmp_sibling(path: Path) -> Path:
    """The temporary folder a new store at ``path`` is built in (this process's)."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, or we cannot tell: leave it alone
    return True


def clean_stale_tmp(path: Path) -> list[Path]:
    """Remove ``<name>.tmp-<pid>`` siblings whose process is gone; returns those removed."""
    removed = []
    for tmp in glob.glob(glob.escape(str(path)) + ".tmp-*"):
        suffix = tmp.rsplit(".tmp-", 1)[-1]
        if not suffix.isdigit() or _pid_alive(int(suffix)):
            continue
        log.warning("removing %s, an unfinished label store left by an interrupted run", tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(Path(tmp))
    return removed


def leftover_old_stores(path: Path) -> list[Path]:
    """``<name>.old-*`` siblings: stores moved aside by an ``overwrite`` that did not finish."""
    return sorted(Path(p) for p in glob.glob(glob.escape(str(path)) + ".old-*"))


def move_aside(path: Path) -> Path:
    """Rename the store at ``path`` to a ``.old-<time>-<pid>`` sibling; returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    old = path.with_name(f"{path.name}.old-{stamp}-{os.getpid()}")
    try:
        os.replace(path, old)
    except OSError as exc:
        raise StoreError(path, f"cannot move the old store aside to {old.name}: {exc}") from exc
    log.info("%s: old store moved aside to %s until the new run's first commit", path, old.name)
    return old


def put_back(old: Path, path: Path) -> None:
    """Replace whatever is at ``path`` with the moved-aside store ``old``."""
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    os.replace(old, path)
    log.warning("%s: the new run did not commit anything; the old store is back", path)


def estimate_store_bytes(level0: tuple[int, int]) -> int:
    """Uncompressed size of a store's arrays: labels (pyramid ~4/3), confidence, edited."""
    h, w = level0
    return int(h * w * (4 / 3 + 1 + 1))


def check_free_space(path: Path, level0: tuple[int, int]) -> None:
    """Refuse to create a store at ``path`` where its arrays could not fit.

    The arrays compress well (labels and the edited mask by 10-100x; confidence less), so
    the store is refused when the free space is below a quarter of the uncompressed size
    plus :data:`MIN_FREE_BYTES`, and a warning is logged below the whole uncompressed size.

    Raises
    ------
    StoreError
        Not enough free space.
    """
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return  # cannot tell (some network file systems): let the writes say
    full = estimate_store_bytes(level0)
    need = full // 4 + MIN_FREE_BYTES
    if free < need:
        raise StoreError(
            path,
            f"not enough free space in {parent}: {free / 2**20:.0f} MiB free, a label store "
            f"of {level0[1]} x {level0[0]} px needs at least {need / 2**20:.0f} MiB "
            f"(up to {full / 2**20:.0f} MiB uncompressed)",
        )
    if free < full:
        log.warning(
            "%s: only %.0f MiB free; the store may need up to %.0f MiB",
            path, free / 2**20, full / 2**20,
        )  # fmt: skip


def is_unfinished_store(path: Path) -> bool:
    """True for a folder left by an interrupted store creation (never held a prediction).

    That is a zarr v3 group whose attributes have no ``sgnet`` entry and whose members
    are only a store's arrays (``0``, ``1``, ..., ``confidence``, ``edited``, ``done``).
    """
    meta = path / "zarr.json"
    if not path.is_dir() or not meta.is_file():
        return False
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if doc.get("node_type") != "group" or "sgnet" in (doc.get("attributes") or {}):
        return False
    allowed = {"confidence", "edited", "done"}
    with contextlib.suppress(OSError):
        names = {p.name for p in path.iterdir()} - {"zarr.json"}
        return all(n in allowed or n.isdigit() for n in names)
    return False
