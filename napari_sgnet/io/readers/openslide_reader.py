"""Optional OpenSlide reader for formats tifffile cannot read (MIRAX ``.mrxs``, ...).

Needs the ``slides`` extra (``pip install 'napari-sgnet[slides]'``: ``openslide-python``
and the ``openslide-bin`` library); without it these formats raise a clear
:class:`~napari_sgnet.errors.UnsupportedSlideError`.
"""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.errors import CorruptSlideError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import (
    LevelArray,
    as_dask,
    check_declared,
    dask_chunks,
    downsample_factors,
    file_stamp,
    length_to_um,
    slide_name,
    validate_levels,
)

__all__ = ["OPENSLIDE_EXTENSIONS", "open_openslide", "probe_openslide"]

#: Extensions routed to OpenSlide (formats tifffile does not read).
OPENSLIDE_EXTENSIONS = (".mrxs", ".vms", ".vmu", ".svslide", ".dcm")

_INSTALL_HINT = "install the optional OpenSlide support: pip install 'napari-sgnet[slides]'"


def _import_openslide(path: Path) -> Any:
    try:
        return importlib.import_module("openslide")
    except ImportError as exc:
        raise UnsupportedSlideError(
            path, f"this format needs OpenSlide, which is not installed; {_INSTALL_HINT}"
        ) from exc
    except OSError as exc:  # the Python module is there but the C library is not
        raise UnsupportedSlideError(
            path, f"the OpenSlide library cannot be loaded ({exc}); {_INSTALL_HINT}"
        ) from exc


def probe_openslide(path: Path) -> None:
    """Check that OpenSlide is installed and recognises ``path`` (reads its header only).

    Raises
    ------
    UnsupportedSlideError
        OpenSlide is missing, or does not recognise the file.
    """
    openslide = _import_openslide(path)
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise CorruptSlideError(path, f"OpenSlide cannot inspect it ({exc})") from exc
    if vendor is None:
        raise UnsupportedSlideError(path, "OpenSlide does not recognise this file")


class OpenSlideLevel:
    """Array-like ``(H, W, 3)`` uint8 view of one OpenSlide level (RGBA composited on white)."""

    def __init__(self, slide: Any, level: int) -> None:
        self._slide = slide
        self._level = level
        w, h = slide.level_dimensions[level]
        self.shape = (int(h), int(w), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._ds = float(slide.level_downsamples[level])
        self._error = importlib.import_module("openslide").OpenSlideError

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = key
        if not isinstance(ys, slice) or not isinstance(xs, slice):
            raise TypeError("OpenSlide levels support slicing only")
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        w, h = max(0, x1 - x0), max(0, y1 - y0)
        if w == 0 or h == 0:
            return np.zeros((h, w, 3), np.uint8)[:, :, cs]
        location = (round(x0 * self._ds), round(y0 * self._ds))
        try:
            region = self._slide.read_region(location, self._level, (w, h))
        except self._error as exc:
            raise RuntimeError(f"OpenSlide: {exc}") from exc
        rgba = np.asarray(region)
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255  # no scanned data: white glass, not black
        return rgb[:, :, cs]


def _open_level(path: str, level: int) -> OpenSlideLevel:
    openslide = importlib.import_module("openslide")
    return OpenSlideLevel(openslide.OpenSlide(path), level)


def open_openslide(path: Path) -> Pyramid:
    """Open a slide with OpenSlide (RGB uint8 levels).

    Parameters
    ----------
    path : Path
        A slide OpenSlide can read.

    Returns
    -------
    Pyramid
    """
    openslide = _import_openslide(path)
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise UnsupportedSlideError(path, "OpenSlide does not recognise this file") from exc
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise CorruptSlideError(path, f"OpenSlide cannot open it ({exc})") from exc
    props = slide.properties
    stamp = file_stamp(path)
    levels = []
    for k in range(slide.level_count):
        tile = int(props.get(f"openslide.level[{k}].tile-width", 512) or 512)
        raw = OpenSlideLevel(slide, k)
        check_declared(path, f"level {k}", "YXC", raw.shape, (tile, tile, 3), raw.dtype)
        level = LevelArray(raw, path, f"level {k}", opener=partial(_open_level, str(path), k))
        chunks = dask_chunks(raw.shape, (tile, tile, 3), (0, 1))
        levels.append(as_dask(level, chunks, stamp))
    sizes = [tuple(lvl.shape[:2]) for lvl in levels]
    validate_levels(sizes, path)
    mpp = length_to_um(props.get("openslide.mpp-x"), "µm")
    return Pyramid(
        levels=tuple(levels),
        downsamples=downsample_factors(sizes),
        mpp=mpp,
        source=path,
        name=slide_name(path),
        metadata={
            "format": f"OpenSlide ({props.get('openslide.vendor', 'unknown vendor')})",
            "mpp_source": None if mpp is None else "OpenSlide openslide.mpp-x",
            "objective_power": props.get("openslide.objective-power"),
        },
    )
