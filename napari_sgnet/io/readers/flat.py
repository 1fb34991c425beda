"""Flat images (PNG, JPEG) and any image that needs cached levels.

A flat image cannot be read window by window, so it is decoded once and written into
the pyramid cache (:mod:`.cache`); later opens read the cache only.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import dask.array as da
import imagecodecs
import numpy as np
import zarr

from napari_sgnet.errors import CorruptSlideError, SlideError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import (
    LevelArray,
    as_dask,
    check_pixels,
    dask_chunks,
    downsample_factors,
    guard_open,
    plausible_resolution_mpp,
    slide_name,
)
from napari_sgnet.io.readers.cache import load_or_build, plan_level_sizes
from napari_sgnet.validate import check_declared_level, check_read

__all__ = ["ProgressFn", "cached_pyramid", "open_flat_image", "probe_flat"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

_HEADER_BYTES = 1 << 16


def cached_pyramid(
    path: Path,
    *,
    kind: str,
    base_loader: Callable[[], Any],
    base_level: da.Array | None,
    shape_hint: tuple[int, ...] | None,
    mpp: float | None,
    name: str,
    metadata: dict[str, Any],
    cache_dir: Any,
    progress: ProgressFn | None,
) -> Pyramid:
    """A pyramid whose levels (all, or all but a lazy ``base_level``) live in the cache.

    Parameters
    ----------
    path : Path
        The slide (keys the cache entry).
    kind : str
        Cache kind, part of the key.
    base_loader : callable
        Returns level 0 as ``(Y, X[, C])``; only called when the entry must be built.
    base_level : dask.array.Array, optional
        Lazy level 0 kept from the source; ``None`` to store level 0 in the cache too.
    shape_hint : tuple of int, optional
        Expected level-0 shape, when known before decoding.
    mpp, name, metadata
        Passed to the :class:`Pyramid`.
    cache_dir : path-like, optional
        Cache folder (default :func:`.cache.default_cache_dir`).
    progress : callable, optional
        ``progress(done, total)`` during a build.
    """
    entry = load_or_build(
        path,
        kind=kind,
        base_loader=base_loader,
        include_base=base_level is None,
        cache_dir=cache_dir,
        progress=progress,
        shape_hint=shape_hint,
    )
    levels: list[da.Array] = [] if base_level is None else [base_level]
    stamp = (entry.path.name,)
    for k in sorted(entry.levels):
        arr = entry.levels[k]
        opener = partial(zarr.open_array, str(entry.path / str(k)), mode="r")
        level = LevelArray(arr, entry.path, f"cached level {k}", opener=opener)
        chunks = dask_chunks(arr.shape, arr.chunks, (0, 1))
        levels.append(as_dask(level, chunks, stamp))
    shape = tuple(entry.attrs["shape"])
    sizes = plan_level_sizes(shape[0], shape[1])
    meta = {**metadata, "cache_path": str(entry.path), "cache_built": entry.built}
    return Pyramid(
        levels=tuple(levels),
        downsamples=downsample_factors(sizes),
        mpp=mpp,
        source=path,
        name=name,
        metadata=meta,
    )


def open_flat_image(
    path: Path, fmt: str, *, cache_dir: Any = None, progress: ProgressFn | None = None
) -> Pyramid:
    """Open a PNG or JPEG through the pyramid cache (built on first open).

    Parameters
    ----------
    path : Path
        The image.
    fmt : {"png", "jpeg"}
        Its format, from its signature.
    cache_dir : path-like, optional
        Cache folder.
    progress : callable, optional
        ``progress(done, total)`` during the one-time build.
    """
    mpp = _header(path, fmt)
    metadata = {
        "format": fmt.upper(),
        "mpp_source": None if mpp is None else f"{fmt.upper()} pixel density",
        "cache": "flat",
    }
    return cached_pyramid(
        path,
        kind=fmt,
        base_loader=partial(_decode, path, fmt),
        base_level=None,
        shape_hint=None,
        mpp=mpp,
        name=slide_name(path),
        metadata=metadata,
        cache_dir=cache_dir,
        progress=progress,
    )


def probe_flat(path: Path, fmt: str) -> None:
    """Check, from the header only, that :func:`open_flat_image` opens ``path``.

    Raises
    ------
    SlideError
        ``CorruptSlideError`` or ``UnsupportedSlideError`` naming the file and the problem.
    """
    _header(path, fmt)


def _header(path: Path, fmt: str) -> float | None:
    """µm/px from the file's header, which is checked to be a readable PNG/JPEG header."""
    with guard_open(path, f"{fmt.upper()} file"), open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    with guard_open(path, f"{fmt.upper()} file"):
        mpp, components = _png_header(head) if fmt == "png" else _jpeg_header(head)
    if fmt == "jpeg" and components == 4:
        raise UnsupportedSlideError(path, "is a CMYK JPEG; convert it to RGB")
    size = _declared_size(head, fmt)
    if size is not None:  # decoded whole: the declared size and the decode budget, first
        h, w, depth = size
        check_declared_level(path, "the image", h, w)
        check_read(path, f"the {fmt.upper()} image", (h, w, max(1, components)), depth)
    return mpp


def _declared_size(head: bytes, fmt: str) -> tuple[int, int, int] | None:
    """``(height, width, bytes per sample)`` from a PNG IHDR or a JPEG frame header."""
    if fmt == "png":
        if len(head) < 25:
            return None
        width, height, bits = struct.unpack(">IIB", head[16:25])
        return int(height), int(width), 2 if bits == 16 else 1
    pos = 2
    while pos + 9 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF or marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return int(height), int(width), 1
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


def _decode(path: Path, fmt: str) -> np.ndarray:
    log.info("decoding %s to build its pyramid cache", path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SlideError(path, f"cannot read it ({exc.strerror or exc})") from exc
    decode = imagecodecs.png_decode if fmt == "png" else imagecodecs.jpeg8_decode
    try:
        image = np.asarray(decode(data))
    except MemoryError as exc:
        raise UnsupportedSlideError(path, f"is too large to decode in memory ({exc})") from exc
    except Exception as exc:
        raise CorruptSlideError(
            path, f"cannot decode the {fmt.upper()} data ({type(exc).__name__}: {exc})"
        ) from exc
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha: keep the grey
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    check_pixels(image.shape, image.dtype, path)
    return image


def _png_header(head: bytes) -> tuple[float | None, int]:
    """µm/px from a PNG's ``pHYs`` chunk (pixels per metre) and the channel count."""
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ValueError("missing IHDR chunk (truncated PNG)")
    colour_type = head[25]
    components = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type, 0)
    pos, mpp = 8, None
    while pos + 8 <= len(head):
        length, ctype = struct.unpack(">I4s", head[pos : pos + 8])
        if ctype in (b"IDAT", b"IEND"):
            break
        if ctype == b"pHYs" and length == 9 and pos + 17 <= len(head):
            ppu_x, _, unit = struct.unpack(">IIB", head[pos + 8 : pos + 17])
            if unit == 1 and ppu_x > 0:
                mpp = plausible_resolution_mpp(1e6 / ppu_x)
        pos += 12 + length
    return mpp, components


def _jpeg_header(head: bytes) -> tuple[float | None, int]:
    """µm/px from a JFIF APP0 density and the component count from the SOF marker."""
    pos, mpp, components = 2, None, 0
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            raise ValueError(f"bad JPEG marker at byte {pos}")
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
        seg = head[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and seg[:5] == b"JFIF\x00" and len(seg) >= 12:
            units, xdens = seg[7], struct.unpack(">H", seg[8:10])[0]
            per_unit_um = {1: 25400.0, 2: 10000.0}.get(units)
            if per_unit_um and xdens > 0:
                mpp = plausible_resolution_mpp(per_unit_um / xdens)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(seg) >= 6:
            components = seg[5]
            break
        elif marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    return mpp, components
