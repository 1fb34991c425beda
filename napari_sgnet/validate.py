"""The one validator for numbers that come from outside: config files, the command line, slides.

Every number a person or a file gives napari-sgnet (µm/px, sizes, widths, heads, workers,
areas) is checked here for type, finiteness and range before it is used, so that a ``NaN``,
an ``inf``, a zero or an absurd value is refused with a message naming the setting (and the
file), never a traceback from deep inside numpy or torch.

It also holds the resource limits every slide reader applies before it builds anything
(:func:`resource_limits`): the largest level a slide may declare, the largest stored tile,
and the decode budget of one read. Each can be raised with an environment variable:

===============================  =========================  ================================
environment variable             default                    what it bounds
===============================  =========================  ================================
``NAPARI_SGNET_MAX_PIXELS``      ``1e11`` (316k x 316k px)  pixels one pyramid level declares
``NAPARI_SGNET_MAX_TILE_BYTES``  ``268435456`` (256 MiB)    bytes one stored tile decodes to
``NAPARI_SGNET_MAX_READ_BYTES``  ``4294967296`` (4 GiB)     bytes one read materialises (a
                                                            window, a flat image decoded)
===============================  =========================  ================================
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.errors import OptionError, ResourceLimitError, UserInputError

__all__ = [
    "MAX_PIXELS_ENV",
    "MAX_READ_BYTES_ENV",
    "MAX_TILE_BYTES_ENV",
    "MPP_RANGE",
    "ResourceLimits",
    "check_declared_level",
    "check_int",
    "check_mpp",
    "check_number",
    "check_read",
    "json_depth_problem",
    "mpp_problem",
    "resource_limits",
]

#: The µm/px a brightfield slide (or a model working on one) can plausibly have: from a
#: 0.05 µm/px super-resolution scan to a 100 µm/px overview. Outside it, a value in a file
#: is ignored with a warning and a value given on the command line or in a config refused.
MPP_RANGE = (0.05, 100.0)

MAX_PIXELS_ENV = "NAPARI_SGNET_MAX_PIXELS"
MAX_TILE_BYTES_ENV = "NAPARI_SGNET_MAX_TILE_BYTES"
MAX_READ_BYTES_ENV = "NAPARI_SGNET_MAX_READ_BYTES"

_DEFAULT_MAX_PIXELS = 10**11
_DEFAULT_MAX_TILE_BYTES = 256 * 2**20
_DEFAULT_MAX_READ_BYTES = 4 * 2**30


def check_number(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_inclusive: bool = True,
    unit: str = "",
    where: str | Path | None = None,
    error: type[UserInputError] = OptionError,
    allow_str: bool = True,
) -> float:
    """``value`` as a finite float within ``[lo, hi]``, else a typed error naming ``name``.

    Parameters
    ----------
    value : Any
        What was given (a number, or a string from the command line).
    name : str
        The setting, as the person knows it (``"--mpp"``, ``"mpp"``).
    lo, hi : float, optional
        Bounds; ``lo`` is excluded when ``lo_inclusive`` is False.
    unit : str
        Appended to the bounds in the message (``"µm/px"``).
    where : str or Path, optional
        The file the value came from, prefixed to the message.
    error : type
        The :class:`~napari_sgnet.errors.UserInputError` subclass raised.
    allow_str : bool
        Whether a string holding a number is accepted (the command line) or refused as the
        wrong type (a JSON config).

    Returns
    -------
    float

    Raises
    ------
    UserInputError
        ``error`` when the value is not a number, not finite or out of range.
    """
    prefix = f"{where}: " if where is not None else ""
    if isinstance(value, bool) or (isinstance(value, str) and not allow_str):
        raise error(f"{prefix}{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{prefix}{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise error(f"{prefix}{name} must be a finite number, got {value!r}")
    low_ok = lo is None or (number >= lo if lo_inclusive else number > lo)
    if not low_ok or (hi is not None and number > hi):
        bounds = _range_words(lo, hi, lo_inclusive, unit)
        raise error(f"{prefix}{name} must be {bounds}, got {value!r}")
    return number


def _range_words(lo: float | None, hi: float | None, lo_inclusive: bool, unit: str) -> str:
    u = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        if lo == 0 and not lo_inclusive:
            return f"greater than 0 and at most {hi:g}{u}"
        return f"between {lo:g} and {hi:g}{u}"
    if lo is not None:
        return f"{'at least' if lo_inclusive else 'greater than'} {lo:g}{u}"
    return f"at most {hi:g}{u}"


def check_int(
    value: Any,
    name: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
    multiple_of: int | None = None,
    where: str | Path | None = None,
    error: type[UserInputError] = OptionError,
    allow_str: bool = True,
) -> int:
    """``value`` as an int within ``[lo, hi]`` (and a multiple of ``multiple_of``).

    Floats with a fraction, booleans, ``NaN`` and strings that are not integers are refused
    (any string when ``allow_str`` is False).

    Raises
    ------
    UserInputError
        ``error`` naming ``name`` (and ``where``).
    """
    prefix = f"{where}: " if where is not None else ""
    if isinstance(value, bool) or (isinstance(value, str) and not allow_str):
        raise error(f"{prefix}{name} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    else:
        try:
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
            if not isinstance(value, str) and float(value) != number:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise error(f"{prefix}{name} must be a whole number, got {value!r}") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise error(f"{prefix}{name} must be {_range_words(lo, hi, True, '')}, got {value!r}")
    if multiple_of and number % multiple_of:
        raise error(f"{prefix}{name} must be a multiple of {multiple_of}, got {value!r}")
    return number


def mpp_problem(mpp: Any) -> str | None:
    """Why ``mpp`` cannot be a slide's µm/px (not a number, not finite, outside
    :data:`MPP_RANGE`), or None when it can."""
    try:
        value = float(mpp)
    except (TypeError, ValueError, OverflowError):
        return f"{mpp!r} is not a number"
    if not math.isfinite(value):
        return f"{mpp!r} is not finite"
    lo, hi = MPP_RANGE
    if not lo <= value <= hi:
        return f"{value:g} µm/px is outside the plausible {lo:g}-{hi:g} µm/px"
    return None


def check_mpp(
    value: Any,
    name: str = "mpp",
    *,
    where: str | Path | None = None,
    error: type[UserInputError] = OptionError,
    allow_str: bool = True,
) -> float:
    """A µm/px within :data:`MPP_RANGE` (finite, positive), else ``error`` naming ``name``."""
    lo, hi = MPP_RANGE
    return check_number(value, name, lo=lo, hi=hi, unit="µm/px", where=where, error=error,
                        allow_str=allow_str)


@dataclass(frozen=True)
class ResourceLimits:
    """What a slide may declare before napari-sgnet refuses to build anything on it.

    Attributes
    ----------
    max_pixels : int
        Pixels (width x height) one pyramid level may declare.
    max_tile_bytes : int
        Bytes one stored tile or chunk may decode to.
    max_read_bytes : int
        Bytes one read may materialise (a window of a level, a flat image decoded whole).
    """

    max_pixels: int = _DEFAULT_MAX_PIXELS
    max_tile_bytes: int = _DEFAULT_MAX_TILE_BYTES
    max_read_bytes: int = _DEFAULT_MAX_READ_BYTES


def _env_limit(var: str, default: int) -> int:
    text = os.environ.get(var)
    if text is None or not text.strip():
        return default
    value = check_number(text, f"${var}", lo=1, hi=1e18)
    return int(value)


def resource_limits() -> ResourceLimits:
    """The limits in force: the defaults, or the environment variables that raise them.

    Raises
    ------
    OptionError
        An environment variable that is not a positive number.
    """
    return ResourceLimits(
        max_pixels=_env_limit(MAX_PIXELS_ENV, _DEFAULT_MAX_PIXELS),
        max_tile_bytes=_env_limit(MAX_TILE_BYTES_ENV, _DEFAULT_MAX_TILE_BYTES),
        max_read_bytes=_env_limit(MAX_READ_BYTES_ENV, _DEFAULT_MAX_READ_BYTES),
    )


def _bytes_words(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_declared_level(
    path: str | Path,
    what: str,
    height: int,
    width: int,
    *,
    tile: Sequence[int] | None = None,
    bytes_per_pixel: int = 1,
    limits: ResourceLimits | None = None,
) -> None:
    """Refuse a level whose declared size or stored tile exceeds the limits, before any
    array, graph or cache is built on it.

    Parameters
    ----------
    path : str or Path
        The slide, named in the message.
    what : str
        The level (``"level 0"``).
    height, width : int
        Declared size in pixels.
    tile : sequence of int, optional
        Stored tile/chunk ``(height, width)``.
    bytes_per_pixel : int
        Bytes of one pixel (channels x item size), for the tile check.
    limits : ResourceLimits, optional
        Default :func:`resource_limits`.

    Raises
    ------
    ResourceLimitError
        Naming the file, the declared numbers, the limit and the variable that raises it.
    """
    limits = resource_limits() if limits is None else limits
    pixels = int(height) * int(width)
    if pixels > limits.max_pixels:
        raise ResourceLimitError(
            path,
            f"{what} declares {int(width)} x {int(height)} px ({pixels:.3g} px), more than the "
            f"limit of {limits.max_pixels:.3g} px per level; if the slide really is that large, "
            f"raise ${MAX_PIXELS_ENV}",
        )
    if tile is not None and len(tile) >= 2:
        tile_bytes = int(tile[0]) * int(tile[1]) * max(1, int(bytes_per_pixel))
        if tile_bytes > limits.max_tile_bytes:
            raise ResourceLimitError(
                path,
                f"{what} stores tiles of {int(tile[1])} x {int(tile[0])} px "
                f"({_bytes_words(tile_bytes)} each decoded), more than the limit of "
                f"{_bytes_words(limits.max_tile_bytes)}; raise ${MAX_TILE_BYTES_ENV} to read it",
            )


def check_read(
    path: str | Path, what: str, shape: Sequence[int], itemsize: int,
    limits: ResourceLimits | None = None,
) -> None:
    """Refuse one read that would materialise more than the decode budget.

    Raises
    ------
    ResourceLimitError
        Naming the file, the window's size and the budget.
    """
    limits = resource_limits() if limits is None else limits
    n = max(1, int(itemsize))
    for s in shape:
        n *= max(0, int(s))
    if n > limits.max_read_bytes:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ResourceLimitError(
            path,
            f"reading {what} as one {dims} array would decode {_bytes_words(n)}, more than the "
            f"decode budget of {_bytes_words(limits.max_read_bytes)} (${MAX_READ_BYTES_ENV})",
        )


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)

#: JSON nesting a header or config written by napari-sgnet never comes near.
MAX_JSON_DEPTH = 64


def json_depth_problem(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why JSON ``text`` is too deeply nested to parse safely, or None.

    Counts brackets outside strings (vectorised), so a 200,000-deep header is refused
    before :func:`json.loads` recurses into it.
    """
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    bare = _JSON_STRING.sub(b"", data)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int64) - np.isin(codes, _CLOSE).astype(np.int64)
    deepest = int(np.cumsum(steps).max()) if steps.size else 0
    if deepest > max_depth:
        return f"JSON nested {deepest} levels deep (more than {max_depth})"
    return None
