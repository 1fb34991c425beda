"""Shared reader machinery: guarded lazy level arrays, axis normalisation, µm/px units.

Every reader turns its stored levels into :class:`LevelArray` objects wrapped by
:func:`as_dask`. A ``LevelArray`` converts any exception raised while reading or
decoding pixels into a :class:`~napari_sgnet.errors.CorruptSlideError` naming the
file, so a corrupt tile deep inside a codec surfaces as a typed, readable error.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from napari_sgnet.errors import (
    CorruptSlideError,
    SlideError,
    UnsupportedSlideError,
    UserInputError,
)
from napari_sgnet.validate import check_declared_level, check_read, mpp_problem

__all__ = [
    "DASK_CHUNK_TARGET",
    "DECODE_ERRORS",
    "SUPPORTED_CHANNELS",
    "LevelArray",
    "as_dask",
    "axes_problem",
    "check_declared",
    "check_pixels",
    "checked_file_mpp",
    "dask_chunks",
    "downsample_factors",
    "file_stamp",
    "guard_open",
    "length_to_um",
    "normalise_axes",
    "pixels_problem",
    "plausible_resolution_mpp",
    "slide_name",
    "validate_levels",
]

log = logging.getLogger(__name__)

#: Channel counts a slide may have after singleton axes are dropped: grey, RGB, RGBA.
SUPPORTED_CHANNELS = (1, 3, 4)

#: Exceptions that reading or decoding stored pixels raises for damaged data: codecs
#: (imagecodecs, numcodecs) raise RuntimeError subclasses, tifffile ValueError, files OSError.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    EOFError,
    struct.error,
    zlib.error,
)

#: Default side (pixels) that dask chunks grow towards, as a multiple of the stored tile.
DASK_CHUNK_TARGET = 1024

# Length units (as written by OME-XML, OME-NGFF, TIFF tags) -> micrometres.
_UNIT_TO_UM: dict[str, float] = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micrometer": 1.0, "micrometre": 1.0, "micron": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
}  # fmt: skip


def length_to_um(value: float | str | None, unit: str | None) -> float | None:
    """Convert a physical length to micrometres; ``None`` when unknown or not positive."""
    if value is None or unit is None:
        return None
    factor = _UNIT_TO_UM.get(str(unit).strip().lower())
    try:
        v = float(value) * factor if factor is not None else math.nan
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def plausible_resolution_mpp(mpp: float | None) -> float | None:
    """Keep a µm/px derived from generic resolution tags only when it looks like microscopy.

    Generic writers stamp 72/96/300 dpi on everything (85-350 µm/px); such values say
    nothing about the specimen, so anything outside ``[0.01, 50]`` µm/px is dropped.
    """
    if mpp is None or not math.isfinite(mpp) or not 0.01 <= mpp <= 50.0:
        return None
    return float(mpp)


def file_stamp(path: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file or folder; identifies one version of a slide."""
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def slide_name(path: Path) -> str:
    """Display name: the file name without slide suffixes (``a.ome.tif`` -> ``a``)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".ome.btf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem or name


@contextmanager
def guard_open(path: Path, what: str) -> Iterator[None]:
    """Turn unexpected exceptions while parsing ``what`` into a :class:`CorruptSlideError`."""
    try:
        yield
    except UserInputError:  # a SlideError, or a limit set wrongly (OptionError)
        raise
    except MemoryError as exc:
        raise CorruptSlideError(path, f"{what} metadata is implausibly large ({exc})") from exc
    except PermissionError as exc:
        raise SlideError(path, f"permission denied ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise CorruptSlideError(path, f"not a valid {what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_key(key: Any) -> str:
    if not isinstance(key, tuple):
        key = (key,)
    parts = []
    for k in key:
        if isinstance(k, slice):
            parts.append(f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}")
        else:
            parts.append(str(k))
    return "[" + ", ".join(parts) + "]"


class LevelArray:
    """Array-like view of one stored level whose read errors become typed errors.

    Parameters
    ----------
    array : array-like
        The stored level (a zarr array over a TIFF or a zarr store, an OpenSlide level, ...),
        supporting ``shape``, ``dtype`` and basic-slicing ``__getitem__``.
    path : Path
        The slide, named in errors.
    what : str
        Which level this is, named in errors (``"level 2"``).
    opener : callable, optional
        A picklable zero-argument callable that reopens ``array``. With it the level can be
        pickled (for dask.distributed workers), the live handle being reopened on first use.
    """

    def __init__(
        self, array: Any, path: Path, what: str, opener: Callable[[], Any] | None = None
    ) -> None:
        self._array = array
        self._opener = opener
        self._lock = threading.Lock()
        self.path = Path(path)
        self.what = what
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def _live(self) -> Any:
        if self._array is None:
            with self._lock:
                if self._array is None:
                    try:
                        self._array = self._opener()  # type: ignore[misc]
                    except SlideError:
                        raise
                    except Exception as exc:
                        raise CorruptSlideError(
                            self.path, f"cannot reopen {self.what}: {_describe(exc)}"
                        ) from exc
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        out_shape = _result_shape(self.shape, key)
        if out_shape is not None:  # the decode budget: refuse before decoding anything
            check_read(self.path, f"{self.what} at {_format_key(key)}", out_shape,
                       self.dtype.itemsize)
        array = self._live()
        try:
            return np.asarray(array[key])
        except DECODE_ERRORS as exc:
            raise CorruptSlideError(
                self.path,
                f"cannot read {self.what} at {_format_key(key)}, the file is damaged or uses "
                f"an undecodable encoding ({_describe(exc)})",
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        if self._opener is None:
            raise TypeError(f"{self.path} {self.what}: this level cannot be pickled")
        state = dict(self.__dict__)
        state["_array"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LevelArray({str(self.path)!r}, {self.what}, shape={self.shape}, dtype={self.dtype})"
        )


def _result_shape(shape: Sequence[int], key: Any) -> tuple[int, ...] | None:
    """Shape that basic-slicing ``shape`` with ``key`` gives, or None for other keys."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis or k is None for k in key) or len(key) > len(shape):
        return None
    out: list[int] = []
    for dim, n in enumerate(shape):
        k = key[dim] if dim < len(key) else slice(None)
        if isinstance(k, slice):
            out.append(len(range(*k.indices(int(n)))))
        elif isinstance(k, (int, np.integer)):
            continue
        else:
            return None
    return tuple(out)


def check_declared(
    path: Path, what: str, axes: str, shape: Sequence[int], chunks: Sequence[int] | None,
    dtype: Any,
) -> None:
    """Refuse a stored level whose declared size or tile exceeds the resource limits.

    ``axes`` has one letter per dimension of ``shape`` (and of ``chunks``, the stored tile);
    see :func:`napari_sgnet.validate.check_declared_level`, run before any array is built.

    Raises
    ------
    ResourceLimitError
        Naming the file, the level and the numbers.
    """
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        return
    y, x = axes.index("Y"), axes.index("X")
    per_pixel = int(np.dtype(dtype).itemsize) if np.dtype(dtype).kind in "uifb" else 1
    for ax, n in zip(axes, shape, strict=True):
        if ax not in "YX":
            per_pixel *= max(1, int(n))
    tile = None if chunks is None else (int(chunks[y]), int(chunks[x]))
    check_declared_level(path, what, int(shape[y]), int(shape[x]), tile=tile,
                         bytes_per_pixel=per_pixel)


def checked_file_mpp(path: Path, mpp: float | None, source: str | None) -> float | None:
    """A µm/px read from a file, or None (with a warning) when it is implausible.

    A file that says 1e308, 1e-30 or NaN µm/px is treated as one without µm/px, so a run
    on it is refused with the hint to pass ``--mpp`` instead of running at an absurd scale.
    """
    if mpp is None:
        return None
    problem = mpp_problem(mpp)
    if problem is None:
        return float(mpp)
    log.warning(
        "%s: ignoring the µm/px the file states (%s, from %s); pass --mpp to give it",
        path, problem, source or "its metadata",
    )
    return None


def dask_chunks(
    shape: Sequence[int],
    stored: Sequence[int],
    yx_axes: tuple[int, int],
    target: int | None = None,
) -> tuple[int, ...]:
    """Dask chunks for a stored array: whole multiples of the stored tile along y/x.

    Along y and x the stored chunk is multiplied towards ``target`` so that a dask task
    decodes several tiles at once (fewer, cheaper tasks) while staying tile aligned; the
    other axes (channels, singleton t/z) take one chunk spanning the axis. ``target``
    defaults to :data:`DASK_CHUNK_TARGET`.
    """
    target = DASK_CHUNK_TARGET if target is None else int(target)
    out = list(int(s) for s in shape)
    for ax in yx_axes:
        tile = max(1, min(int(stored[ax]), int(shape[ax]) or 1))
        out[ax] = max(1, min(int(shape[ax]), tile * max(1, round(target / tile))))
    return tuple(out)


def as_dask(level: LevelArray, chunks: Sequence[int], stamp: Any = None) -> da.Array:
    """Wrap a :class:`LevelArray` as a dask array without touching its pixels."""
    name = "sgnet-" + tokenize(str(level.path), level.what, stamp, level.shape, tuple(chunks))
    meta = np.empty((0,) * level.ndim, dtype=level.dtype)
    return da.from_array(  # type: ignore[no-untyped-call,no-any-return]
        level, chunks=tuple(chunks), name=name, asarray=False, meta=meta
    )


def axes_problem(axes: str, shape: Sequence[int], dtype: Any) -> str | None:
    """Why an image with these axes, shape and dtype cannot be read, or None when it can.

    The one statement of what a slide may look like, used by :func:`normalise_axes` when
    a slide is opened and by :mod:`napari_sgnet.io.readers.probe` from metadata alone:
    ``Y`` and ``X`` once each, at most one channel axis (``C`` or ``S``) of 1, 3 or 4
    channels, every other axis singleton, a number dtype, a non-empty plane.

    Parameters
    ----------
    axes : str
        One letter per dimension (any case).
    shape : sequence of int
        The stored shape.
    dtype : dtype-like
        The stored pixel type.

    Returns
    -------
    str or None
        The problem, phrased to follow the file's name; None when the image is readable.
    """
    axes = axes.upper()
    problem = _layout_problem(axes, shape)
    if problem is not None:
        return problem
    sizes = {ax: int(n) for ax, n in zip(axes, shape, strict=True) if ax in "YX"}
    channels = [int(n) for ax, n in zip(axes, shape, strict=True) if ax in "CS" and n != 1]
    out_shape = (sizes["Y"], sizes["X"], *channels)
    return pixels_problem(out_shape, dtype)


def _layout_problem(axes: str, shape: Sequence[int]) -> str | None:
    """The axes part of :func:`axes_problem` (upper-case ``axes``)."""
    if len(axes) != len(shape) or axes.count("Y") != 1 or axes.count("X") != 1:
        return f"cannot interpret image axes {axes!r} (need Y and X)"
    kept: list[tuple[str, int]] = []
    for ax, size in zip(axes, shape, strict=True):
        if ax in "YX":
            kept.append((ax, int(size)))
        elif size == 1:
            continue
        elif ax in "CS":
            kept.append(("C", int(size)))
        else:
            return (
                f"has {size} planes along axis {ax!r}; only single-plane 2-D slides are "
                "supported (export one plane first)"
            )
    if [ax for ax, _ in kept].count("C") > 1:
        return f"has several channel axes ({axes!r} {tuple(shape)})"
    return None


def normalise_axes(array: da.Array, axes: str, path: Path) -> da.Array:
    """Reorder a lazy array to ``(Y, X)`` or ``(Y, X, C)``.

    Parameters
    ----------
    array : dask.array.Array
        The stored level.
    axes : str
        One upper-case letter per dimension; ``Y`` and ``X`` are required, ``C`` and ``S``
        (samples) are channel axes; any other axis (``T``, ``Z``, ...) must be singleton.
    path : Path
        The slide, named in errors.

    Raises
    ------
    UnsupportedSlideError
        When :func:`axes_problem` finds a problem.
    CorruptSlideError
        When the image plane is empty.
    """
    axes = axes.upper()
    problem = _layout_problem(axes, array.shape)
    if problem is not None:
        raise UnsupportedSlideError(path, problem)
    index: list[Any] = []
    kept: list[str] = []
    for ax, size in zip(axes, array.shape, strict=True):
        if ax in "YX":
            index.append(slice(None))
            kept.append(ax)
        elif size == 1:
            index.append(0)
        else:
            index.append(slice(None))
            kept.append("C")
    array = array[tuple(index)]
    order = [kept.index("Y"), kept.index("X")] + ([kept.index("C")] if "C" in kept else [])
    if order != list(range(len(order))):
        array = array.transpose(order)  # type: ignore[no-untyped-call]
    check_pixels(array.shape, array.dtype, path)
    return array


def pixels_problem(shape: Sequence[int], dtype: Any) -> str | None:
    """Why a ``(Y, X[, C])`` image cannot be a brightfield slide, or None when it can."""
    if len(shape) == 3 and shape[2] not in SUPPORTED_CHANNELS:
        return (
            f"has {shape[2]} channels; napari-sgnet reads greyscale, RGB or RGBA slides "
            "(1, 3 or 4 channels), not multiplexed/fluorescence images"
        )
    if np.dtype(dtype).kind not in "uif":
        return f"has pixel type {np.dtype(dtype)}, not a number type"
    if min(shape[:2], default=0) <= 0:
        return f"has an empty image ({shape[1]} x {shape[0]} px)"
    return None


def check_pixels(shape: Sequence[int], dtype: Any, path: Path) -> None:
    """Refuse channel counts and dtypes that a brightfield slide cannot have.

    Raises
    ------
    UnsupportedSlideError
        For a channel count or pixel type napari-sgnet does not read.
    CorruptSlideError
        For an empty image plane.
    """
    problem = pixels_problem(shape, dtype)
    if problem is None:
        return
    if min(shape[:2], default=0) <= 0:
        raise CorruptSlideError(path, problem)
    raise UnsupportedSlideError(path, problem)


def downsample_factors(sizes: Sequence[tuple[int, int]]) -> tuple[float, ...]:
    """Downsample factor of each level from ``(height, width)`` sizes, largest first.

    A level whose size is ``size0 / d`` rounded either way for an integer ``d`` gets
    exactly ``d``; otherwise the mean of the two axis ratios.
    """
    h0, w0 = sizes[0]
    factors = []
    for h, w in sizes:
        ratio = (w0 / w + h0 / h) / 2.0
        d = round(ratio)
        exact = d >= 1 and abs(w0 / d - w) <= 1.0 and abs(h0 / d - h) <= 1.0
        factors.append(float(d) if exact else float(ratio))
    factors[0] = 1.0
    return tuple(factors)


def validate_levels(sizes: Sequence[tuple[int, int]], path: Path) -> None:
    """Levels must shrink strictly from one to the next."""
    for (h_a, w_a), (h_b, w_b) in itertools.pairwise(sizes):
        if not (h_b <= h_a and w_b <= w_a and h_b * w_b < h_a * w_a):
            raise CorruptSlideError(
                path, f"pyramid levels do not shrink: {w_a} x {h_a} followed by {w_b} x {h_b}"
            )
