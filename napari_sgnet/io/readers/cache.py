"""The pyramid cache: levels of images that have no usable pyramid, built once into zarr.

Flat images (PNG, JPEG, strip TIFF) are decoded once and written as a chunked zarr v3
pyramid; large tiled single-level TIFFs get their coarser levels built the same way.
Each cache entry is ``<cache folder>/<key>.zarr`` where the key hashes the slide's
resolved path, size and modification time, so editing the slide invalidates the entry.
An entry is built in a temporary sibling folder and renamed into place when complete,
so a crash or a cancel never leaves a half-built entry that looks valid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box

__all__ = [
    "CACHE_ENV",
    "CACHE_VERSION",
    "MIN_LEVEL_SIDE",
    "CacheEntry",
    "cache_key",
    "default_cache_dir",
    "downsample2",
    "find_entry",
    "load_or_build",
    "plan_level_sizes",
]

log = logging.getLogger(__name__)

#: Environment variable naming the pyramid cache folder.
CACHE_ENV = "NAPARI_SGNET_CACHE"
#: Bump when the cache layout or the downsampling changes: old entries are rebuilt.
CACHE_VERSION = 1
#: Levels are added while the smallest side of the last one is at least this.
MIN_LEVEL_SIDE = 512
#: Chunk side of cached levels.
CACHE_CHUNK = 512
#: Output block width when downsampling (a multiple of ``CACHE_CHUNK``).
_BLOCK_W = 8 * CACHE_CHUNK
#: Attribute that marks a folder as a napari-sgnet cache entry.
_MARKER = "napari_sgnet_pyramid_cache"
#: Partial entries older than this (seconds) are leftovers of a crashed build.
_STALE_PARTIAL_S = 3600.0

ProgressFn = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """The pyramid cache folder.

    ``$NAPARI_SGNET_CACHE`` when set, else ``$XDG_CACHE_HOME/napari-sgnet/pyramids``
    when ``XDG_CACHE_HOME`` is set, else ``~/.cache/napari-sgnet/pyramids``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "napari-sgnet" / "pyramids"


def cache_key(path: Path, kind: str) -> str:
    """Hash of the slide's identity (resolved path, size, mtime) and the cache kind."""
    st = path.stat()
    ident = f"v{CACHE_VERSION}|{kind}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def plan_level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Level sizes ``(h, w)``: halve (rounding up) until the smallest side is < 512."""
    sizes = [(int(height), int(width))]
    while min(sizes[-1]) >= MIN_LEVEL_SIDE:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def downsample2(block: np.ndarray) -> np.ndarray:
    """Mean of 2 x 2 pixel blocks (odd edges replicate the last row/column), same dtype."""
    h, w = block.shape[:2]
    if h % 2 or w % 2:
        pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (block.ndim - 2)
        block = np.pad(block, pad, mode="edge")
    h, w = block.shape[:2]
    acc_dtype = np.float32 if block.dtype.itemsize <= 2 else np.float64
    view = block.reshape(h // 2, 2, w // 2, 2, *block.shape[2:]).astype(acc_dtype, copy=False)
    mean = view.mean(axis=(1, 3))
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    return cast(np.ndarray, mean.astype(block.dtype, copy=False))


def lazy_halvings(base: da.Array) -> list[da.Array]:
    """``base`` and lazily computed 2x mean reductions of it, sized as :func:`plan_level_sizes`.

    Each coarser level is a dask graph over the finer one (nothing is read until a window
    is computed); meant for small single-level images, where building a cache is not worth it.
    """
    levels = [base]
    sizes = plan_level_sizes(*base.shape[:2])
    for _ in sizes[1:]:
        prev = levels[-1]
        row_chunks, col_chunks = prev.chunks[0], prev.chunks[1]
        if any(c % 2 for c in row_chunks[:-1]) or any(c % 2 for c in col_chunks[:-1]):
            prev = prev.rechunk({0: 256, 1: 256})  # type: ignore[no-untyped-call]
            row_chunks, col_chunks = prev.chunks[0], prev.chunks[1]
        out_chunks = (
            tuple((c + 1) // 2 for c in row_chunks),
            tuple((c + 1) // 2 for c in col_chunks),
            *prev.chunks[2:],
        )
        level = da.map_blocks(downsample2, prev, chunks=out_chunks, dtype=prev.dtype)  # type: ignore[no-untyped-call]
        levels.append(_memoized(level))
    return levels


class MemoLevel:
    """A lazily computed level that is computed whole on its first read, then kept.

    The coarser levels of a small image are read over and over (tissue detection, the
    slide fingerprint, every batch's context windows), and recomputing a 2x reduction
    chain from the decoded base on each read costs more than the whole level does once.
    The bytes are those of the lazy graph (computed by it, chunk by chunk), so a read
    gives the same pixels either way. Holds at most the level (a few MB: only images of
    at most :data:`~napari_sgnet.io.readers.tiff.SINGLE_LEVEL_MAX_SIDE` px get lazy levels).
    """

    def __init__(self, lazy: da.Array) -> None:
        self.lazy = lazy
        self.shape = tuple(int(n) for n in lazy.shape)
        self.dtype = lazy.dtype
        self.ndim = lazy.ndim
        self._data: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def computed(self) -> bool:
        """True once the level has been computed."""
        return self._data is not None

    def __getitem__(self, key: Any) -> np.ndarray:
        with self._lock:
            if self._data is None:
                self._data = np.asarray(self.lazy.compute(scheduler="sync"))  # type: ignore[no-untyped-call]
        return cast(np.ndarray, self._data[key])


def _memoized(level: da.Array) -> da.Array:
    """``level`` as a dask array over a :class:`MemoLevel` (same name, chunks and pixels)."""
    memo = MemoLevel(level)
    meta = np.empty((0,) * level.ndim, dtype=level.dtype)
    return da.from_array(  # type: ignore[no-untyped-call,no-any-return]
        memo, chunks=level.chunks, name=level.name, asarray=False, meta=meta
    )


@dataclass(frozen=True)
class CacheEntry:
    """A complete cache entry: its folder, level arrays (by level index) and attributes."""

    path: Path
    levels: dict[int, zarr.Array[Any]]
    attrs: dict[str, Any]
    built: bool


def load_or_build(
    source: Path,
    *,
    kind: str,
    base_loader: Callable[[], Any],
    include_base: bool,
    cache_dir: str | os.PathLike[str] | None,
    progress: ProgressFn | None,
    extra_attrs: dict[str, Any] | None = None,
    shape_hint: tuple[int, ...] | None = None,
) -> CacheEntry:
    """Open the cache entry of ``source``, building it first when missing or stale.

    Parameters
    ----------
    source : Path
        The slide; its path, size and mtime key the entry.
    kind : str
        Which image of the source the entry holds (e.g. ``"png"``, ``"tiff-0"``); part of
        the key.
    base_loader : callable
        Returns level 0 as a ``(Y, X[, C])`` array-like (numpy or dask); called only
        when the entry must be built.
    include_base : bool
        Store level 0 too (flat images) or only the coarser levels (level 0 stays lazy
        in the source file).
    cache_dir : path-like, optional
        Cache folder; :func:`default_cache_dir` when ``None``.
    progress : callable, optional
        ``progress(done, total)``, called as blocks are written during a build.
    extra_attrs : dict, optional
        JSON-serialisable facts saved with the entry and returned on reuse (e.g. µm/px).
    shape_hint : tuple of int, optional
        Expected level-0 shape; an entry of another shape is rebuilt.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = folder / f"{cache_key(source, kind)}.zarr"
    if final.exists():
        entry = _open_entry(final, include_base, shape_hint)
        if entry is not None:
            log.debug("reusing pyramid cache %s for %s", final, source)
            return entry
        log.info("rebuilding stale pyramid cache %s", final)
        shutil.rmtree(final, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(folder, f"cannot create the pyramid cache folder ({exc})") from exc
    if not os.access(folder, os.W_OK):
        raise StoreError(
            folder, f"the pyramid cache folder is not writable; set {CACHE_ENV} or pass cache_dir"
        )
    _remove_stale_partials(folder, final.name)
    tmp = folder / f"{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        base = base_loader()
        try:
            _build(tmp, source, base, include_base, progress, extra_attrs or {})
            os.rename(tmp, final)
        except OSError as exc:
            if not final.exists():
                raise StoreError(
                    folder, f"cannot write the pyramid cache ({exc.strerror or exc})"
                ) from exc
            log.debug("another process built %s first; using it", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    entry = _open_entry(final, include_base, shape_hint)
    if entry is None:  # pragma: no cover - only if the folder vanished under us
        raise StoreError(final, "the pyramid cache entry just built cannot be read back")
    return CacheEntry(entry.path, entry.levels, entry.attrs, built=True)


def find_entry(
    source: Path,
    kind: str,
    include_base: bool,
    cache_dir: str | os.PathLike[str] | None,
    shape_hint: tuple[int, ...] | None = None,
) -> CacheEntry | None:
    """The complete, current cache entry of ``source`` when there is one; never builds."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = folder / f"{cache_key(source, kind)}.zarr"
    return _open_entry(final, include_base, shape_hint) if final.exists() else None


def _open_entry(
    final: Path, include_base: bool, shape_hint: tuple[int, ...] | None
) -> CacheEntry | None:
    """The entry at ``final`` when complete and current, else ``None`` (to be rebuilt).

    Only this module creates ``<32 hex digits>.zarr`` folders in the cache folder, so an
    unreadable or unmarked one is a leftover of an older version and safe to replace.
    """
    try:
        group = zarr.open_group(final, mode="r")
        attrs = dict(group.attrs).get(_MARKER)
    except Exception:
        return None
    if not isinstance(attrs, dict):
        return None
    if attrs.get("version") != CACHE_VERSION or bool(attrs.get("include_base")) != include_base:
        return None
    shape = tuple(attrs.get("shape", ()))
    if shape_hint is not None and shape != tuple(shape_hint):
        return None
    sizes = plan_level_sizes(shape[0], shape[1])
    first = 0 if include_base else 1
    levels: dict[int, zarr.Array[Any]] = {}
    try:
        for k in range(first, len(sizes)):
            arr = cast("zarr.Array[Any]", group[str(k)])
            if tuple(arr.shape[:2]) != sizes[k] or tuple(arr.shape[2:]) != shape[2:]:
                return None
            levels[k] = arr
    except KeyError:
        return None
    return CacheEntry(final, levels, attrs, built=False)


def _remove_stale_partials(folder: Path, name: str) -> None:
    now = time.time()
    for p in folder.glob(f"{name}.partial-*"):
        try:
            if now - p.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _blocks(h: int, w: int, bh: int, bw: int) -> list[Box]:
    return [
        Box(x, y, min(bw, w - x), min(bh, h - y)) for y in range(0, h, bh) for x in range(0, w, bw)
    ]


def _compute(a: Any) -> np.ndarray:
    return np.asarray(a.compute() if hasattr(a, "compute") else a)


def _copy_block(src: Any, out: Any, box: Box) -> None:
    out[box.y : box.y1, box.x : box.x1] = _compute(src[box.y : box.y1, box.x : box.x1])


def _reduce_block(src: Any, out: Any, box: Box) -> None:
    block = _compute(src[2 * box.y : 2 * box.y1, 2 * box.x : 2 * box.x1])
    out[box.y : box.y1, box.x : box.x1] = downsample2(block)[: box.h, : box.w]


def _build(
    tmp: Path,
    source: Path,
    base: Any,
    include_base: bool,
    progress: ProgressFn | None,
    extra_attrs: dict[str, Any],
) -> None:
    shape = tuple(int(s) for s in base.shape)
    dtype = np.dtype(base.dtype)
    sizes = plan_level_sizes(shape[0], shape[1])
    tail = shape[2:]
    first = 0 if include_base else 1
    # Level 0 is copied in full-width bands (a strip TIFF decodes each strip once);
    # coarser levels are computed block by block from the level above.
    plans: list[list[Box]] = []
    for k in range(first, len(sizes)):
        h, w = sizes[k]
        plans.append(_blocks(h, w, CACHE_CHUNK, w if k == 0 else _BLOCK_W))
    total = sum(len(p) for p in plans)
    done = 0
    if progress is not None:
        progress(0, total)

    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    previous: Any = base
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sgnet-cache")
    try:
        for k, blocks in zip(range(first, len(sizes)), plans, strict=True):
            h, w = sizes[k]
            out = group.create_array(
                str(k),
                shape=(h, w, *tail),
                dtype=dtype,
                chunks=(CACHE_CHUNK, CACHE_CHUNK, *tail),
                fill_value=0,
            )
            fn = partial(_copy_block if k == 0 else _reduce_block, previous, out)
            for future in as_completed([pool.submit(fn, box) for box in blocks]):
                future.result()
                done += 1
                if progress is not None:
                    progress(done, total)
            previous = out
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    group.attrs[_MARKER] = {
        "version": CACHE_VERSION,
        "source": str(source),
        "shape": list(shape),
        "dtype": str(dtype),
        "include_base": include_base,
        "levels": [list(s) for s in sizes],
        **extra_attrs,
    }
    log.info("built pyramid cache %s (%d levels) for %s", tmp, len(sizes), source)
