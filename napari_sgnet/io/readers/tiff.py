"""TIFF-based slides through tifffile's zarr store: SVS, NDPI, OME-TIFF, tiled TIFF.

Pyramids come from the main series' levels (SubIFDs, Aperio/NDPI reduced pages), or,
when the main series has one level, from further series that are successive reductions
of it (multi-series pyramids). Untiled TIFFs and large single-level tiled TIFFs get
their missing levels from the pyramid cache (:mod:`.cache`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import tifffile
import zarr

from napari_sgnet.errors import CorruptSlideError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import (
    LevelArray,
    as_dask,
    axes_problem,
    check_declared,
    dask_chunks,
    downsample_factors,
    file_stamp,
    guard_open,
    length_to_um,
    normalise_axes,
    plausible_resolution_mpp,
    slide_name,
    validate_levels,
)
from napari_sgnet.io.readers.cache import find_entry, lazy_halvings
from napari_sgnet.io.readers.flat import ProgressFn, cached_pyramid

__all__ = ["SINGLE_LEVEL_MAX_SIDE", "open_tiff", "probe_tiff"]

log = logging.getLogger(__name__)

#: A single-level tiled image larger than this (either side) gets cached coarser levels.
SINGLE_LEVEL_MAX_SIDE = 4096

_AUX_NAME = re.compile(r"\b(thumbnail|label|macro|overview)\b", re.IGNORECASE)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.]+(?:[eE][-+]?\d+)?)")
_APERIO_MAG = re.compile(r"\|\s*AppMag\s*=\s*([0-9.]+)")
# ResolutionUnit tag values -> micrometres per unit (2 inch, 3 cm; 4/5 are tifffile extensions).
_RESUNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
_UNSUPPORTED_PHOTOMETRIC = {
    3: "palette colour",
    5: "CMYK (separated)",
    32844: "LogL",
    32845: "LogLuv",
}


def open_tiff(
    path: Path,
    *,
    cache_dir: Any = None,
    progress: ProgressFn | None = None,
    build_cache: bool = True,
) -> Pyramid:
    """Open a TIFF-based slide lazily.

    Parameters
    ----------
    path : Path
        An SVS, NDPI, OME-TIFF or (tiled or strip) TIFF file.
    cache_dir : path-like, optional
        Pyramid cache folder for images without a usable pyramid.
    progress : callable, optional
        ``progress(done, total)`` while a cache is built.
    build_cache : bool
        False: a large single-level tiled TIFF whose coarser levels are not cached yet gets
        lazy (uncomputed) coarser levels instead of a cache build, so describing it reads
        metadata only (``info``).

    Returns
    -------
    Pyramid
    """
    with guard_open(path, "TIFF file"), tifffile_errors(path):
        tf = tifffile.TiffFile(path)
    try:
        with guard_open(path, "TIFF file"), tifffile_errors(path):
            index, series, levels = _inspect(tf, path)
            pages = [lvl.keyframe for _, _, lvl in levels]
            mpp, mpp_source = _tiff_mpp(tf, series, pages[0])
            metadata: dict[str, Any] = {
                "format": _format_name(tf),
                "series": index,
                "mpp_source": mpp_source,
                "compression": _compression_name(pages[0].compression),
            }
            if tf.is_svs:
                mag = _APERIO_MAG.search(pages[0].description or "")
                if mag:
                    metadata["objective_power"] = float(mag.group(1))
            tiled = bool(pages[0].is_tiled)
            axes = series.axes
            arrays = [_level_array(path, tf, i, j, k) for k, (i, j, _) in enumerate(levels)]
        stamp = file_stamp(path)
        yx = (axes.index("Y"), axes.index("X"))
        dask_levels = []
        for arr in arrays:
            chunks = dask_chunks(arr.shape, arr.stored_chunks, yx)
            dask_levels.append(normalise_axes(as_dask(arr.level, chunks, stamp), axes, path))
    except BaseException:
        tf.close()
        raise
    name = slide_name(path)
    h0, w0 = dask_levels[0].shape[:2]
    big = len(dask_levels) == 1 and tiled and max(h0, w0) > SINGLE_LEVEL_MAX_SIDE
    if big and not build_cache and find_entry(path, f"tiff-{index}", False, cache_dir) is None:
        metadata["cache"] = "not built (built by the first command that reads pixels)"
        big = False  # lazy halvings below: nothing is read or built to describe the slide
    elif len(dask_levels) == 1 and (not tiled or big):
        include_base = not tiled
        metadata["cache"] = "flat" if include_base else "lower-levels"
        base = dask_levels[0]
        try:
            return cached_pyramid(
                path,
                kind=f"tiff-{index}",
                base_loader=lambda: base,
                base_level=None if include_base else base,
                shape_hint=tuple(base.shape),
                mpp=mpp,
                name=name,
                metadata=metadata,
                cache_dir=cache_dir,
                progress=progress,
            )
        finally:
            if include_base:
                tf.close()  # level 0 now lives in the cache
    if len(dask_levels) == 1:
        # A small single-level tiled slide: coarser levels are computed lazily on read, so
        # a model trained at a coarser µm/px still gets its resolution (nothing is cached).
        dask_levels = lazy_halvings(dask_levels[0])
        metadata["virtual_levels"] = len(dask_levels) - 1
    sizes = [tuple(d.shape[:2]) for d in dask_levels]
    validate_levels(sizes, path)
    return Pyramid(
        levels=tuple(dask_levels),
        downsamples=downsample_factors(sizes),
        mpp=mpp,
        source=path,
        name=name,
        metadata=metadata,
    )


def probe_tiff(path: Path) -> None:
    """Check, from metadata only, that :func:`open_tiff` opens ``path`` and its data is there.

    Runs the same checks as :func:`open_tiff` (main series, pyramid, compression,
    photometric, axes and channels) without building any array, and additionally refuses
    a file whose image data ends past the end of the file (a truncated copy); both refuse
    a level declaring more pixels or larger tiles than the resource limits allow, a tile
    table shorter than the declared tile grid, and whatever tifffile logs as an error
    while parsing.

    Parameters
    ----------
    path : Path
        A TIFF-based file.

    Raises
    ------
    SlideError
        ``CorruptSlideError`` or ``UnsupportedSlideError`` naming the file and the problem.
    """
    with guard_open(path, "TIFF file"), tifffile_errors(path):
        tf = tifffile.TiffFile(path)
    try:
        with guard_open(path, "TIFF file"), tifffile_errors(path):
            _inspect(tf, path)
    finally:
        tf.close()


def _inspect(tf: tifffile.TiffFile, path: Path) -> tuple[int, Any, list[tuple[int, int, Any]]]:
    """The main series, its index and pyramid levels, checked as :func:`open_tiff` needs."""
    index, series = _main_series(tf, path)
    levels = _pyramid_series(tf, index, series)
    for k, (_, _, lvl) in enumerate(levels):
        _check_declared(lvl, path, f"level {k}")
    for _, _, lvl in levels:
        _check_decodable(lvl.keyframe, path)
    size = path.stat().st_size
    for k, (_, _, lvl) in enumerate(levels):
        _check_tile_table(lvl, path, f"level {k}", size)
    problem = axes_problem(series.axes, series.shape, series.dtype)
    if problem is not None:
        raise UnsupportedSlideError(path, problem)
    return index, series, levels


class _ErrorRecords(logging.Handler):
    """Collects the ERROR records tifffile logs from one thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def tifffile_errors(path: Path) -> Iterator[None]:
    """Turn what tifffile only logs as an error while parsing (a tag it cannot read, a
    missing tile table, a series shape it gives up on) into a :class:`CorruptSlideError`
    naming the file, instead of opening with wrong pixels."""
    handler = _ErrorRecords()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.messages:
        first = handler.messages[0].replace(f"<tifffile.TiffFile {path.name!r}> ", "")
        more = f" (and {len(handler.messages) - 1} more)" if len(handler.messages) > 1 else ""
        raise CorruptSlideError(
            path, f"has damaged TIFF structures: tifffile reports {first}{more}"
        )


def _check_declared(lvl: Any, path: Path, what: str) -> None:
    """The resource limits on a level's declared size and stored tile (metadata only)."""
    page = lvl.keyframe
    axes = str(lvl.axes)
    if page.is_tiled:
        tile_yx = (int(page.tilelength), int(page.tilewidth))
    else:
        rows = int(getattr(page, "rowsperstrip", 0) or page.imagelength)
        tile_yx = (min(rows, int(page.imagelength)), int(page.imagewidth))
    chunks = tuple(
        tile_yx[0] if ax == "Y" else tile_yx[1] if ax == "X" else 1 for ax in axes.upper()
    )
    check_declared(path, what, axes, tuple(lvl.shape), chunks, lvl.dtype)


def _check_tile_table(lvl: Any, path: Path, what: str, file_size: int) -> None:
    """The tile (or strip) table must cover the declared grid and lie inside the file."""
    page = lvl.keyframe
    h, w = int(page.imagelength), int(page.imagewidth)
    planes = int(page.samplesperpixel) if int(page.planarconfig) == 2 else 1
    if page.is_tiled:
        th, tw = int(page.tilelength), int(page.tilewidth)
        depth = max(1, math.ceil(int(page.imagedepth) / max(1, int(page.tiledepth))))
        expected = math.ceil(h / th) * math.ceil(w / tw) * depth * planes
        unit = "tiles"
    else:
        rows = int(getattr(page, "rowsperstrip", 0) or h) or h
        expected = math.ceil(h / max(1, min(rows, h))) * planes
        unit = "strips"
    offsets, counts = page.dataoffsets, page.databytecounts
    if len(offsets) < expected or len(counts) < expected:
        raise CorruptSlideError(
            path,
            f"{what} ({w} x {h} px) needs {expected} {unit} but its tile table lists "
            f"{min(len(offsets), len(counts))}: the file is damaged",
        )
    missing = [
        i for i, (o, n) in enumerate(zip(offsets, counts, strict=False))
        if n and int(o) + int(n) > file_size
    ]
    if missing:
        raise CorruptSlideError(
            path,
            f"is truncated: {len(missing)} of the {expected} {unit} of {what} end past the end "
            f"of the file ({file_size} bytes; first missing: {unit[:-1]} {missing[0]})",
        )


class _Stored:
    """A level's guarded array plus its stored chunk shape."""

    def __init__(self, level: LevelArray, stored_chunks: tuple[int, ...]) -> None:
        self.level = level
        self.shape = level.shape
        self.stored_chunks = stored_chunks


def _open_level(path: str, series_index: int, level: int) -> zarr.Array[Any]:
    """Open one level of one series as a zarr array (also used to reopen after pickling)."""
    tf = tifffile.TiffFile(path)
    try:
        return _zarr_level(tf.series[series_index], level)
    except BaseException:
        tf.close()
        raise


def _zarr_level(series: tifffile.TiffPageSeries, level: int) -> zarr.Array[Any]:
    return zarr.open_array(series.aszarr(level=level), mode="r")


def _level_array(path: Path, tf: tifffile.TiffFile, s_index: int, s_level: int, k: int) -> _Stored:
    arr = _zarr_level(tf.series[s_index], s_level)
    opener = partial(_open_level, str(path), s_index, s_level)
    level = LevelArray(arr, path, f"level {k}", opener=opener)
    return _Stored(level, tuple(int(c) for c in arr.chunks))


def _yx(series: Any) -> tuple[int, int]:
    axes, shape = series.axes, series.shape
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def _is_aux(series: Any) -> bool:
    """Thumbnail, label, macro or overview images that sit beside the main image."""
    return bool(_AUX_NAME.search(series.name or ""))


def _main_series(tf: tifffile.TiffFile, path: Path) -> tuple[int, Any]:
    """The largest series that is not a thumbnail, label or macro image."""
    candidates = [
        (i, s)
        for i, s in enumerate(tf.series)
        if "Y" in s.axes and "X" in s.axes and not _is_aux(s)
    ]
    if not candidates:
        size = tf.filehandle.size
        raise CorruptSlideError(
            path,
            "contains no readable 2-D image: only labels/thumbnails, or the file is truncated or "
            f"damaged ({size:,} bytes; tifffile found {len(tf.pages)} readable page(s))",
        )
    return max(candidates, key=lambda item: (_yx(item[1])[0] * _yx(item[1])[1], -item[0]))


def _pyramid_series(tf: tifffile.TiffFile, index: int, main: Any) -> list[tuple[int, int, Any]]:
    """Levels of the main image, largest first, as ``(series index, level index, level)``."""
    if len(main.levels) > 1:
        return [(index, k, lvl) for k, lvl in enumerate(main.levels)]
    # Multi-series pyramid: other series that are successive reductions of the main one.
    h0, w0 = _yx(main)
    others = []
    for i, s in enumerate(tf.series):
        if i == index or _is_aux(s) or s.axes != main.axes or s.dtype != main.dtype:
            continue
        h, w = _yx(s)
        same_rest = all(
            a == b for ax, a, b in zip(s.axes, s.shape, main.shape, strict=True) if ax not in "YX"
        )
        if h < h0 and w < w0 and same_rest and abs((w0 / w) / (h0 / h) - 1.0) < 0.02:
            others.append((i, s))
    others.sort(key=lambda item: -_yx(item[1])[0] * _yx(item[1])[1])
    chain, last = [(index, 0, main)], (h0, w0)
    for i, s in others:
        h, w = _yx(s)
        if h < last[0] and w < last[1]:
            chain.append((i, 0, s))
            last = (h, w)
    if len(chain) > 1:
        log.debug("assembled a %d-level multi-series pyramid", len(chain))
    return chain


def _check_decodable(page: Any, path: Path) -> None:
    code = int(page.compression)
    if code != 1:
        try:
            tifffile.TIFF.DECOMPRESSORS[code]
        except (KeyError, ValueError) as exc:
            raise UnsupportedSlideError(
                path,
                f"uses compression {_compression_name(code)} which cannot be decoded here "
                "(tifffile/imagecodecs); convert the slide, e.g. with vips or bfconvert",
            ) from exc
    photometric = int(page.photometric)
    if photometric in _UNSUPPORTED_PHOTOMETRIC:
        raise UnsupportedSlideError(
            path, f"stores {_UNSUPPORTED_PHOTOMETRIC[photometric]} pixels; convert it to RGB"
        )


def _compression_name(code: int) -> str:
    try:
        return f"{tifffile.COMPRESSION(int(code)).name} ({int(code)})"
    except ValueError:
        return f"code {int(code)}"


def _format_name(tf: tifffile.TiffFile) -> str:
    for flag, label in (
        ("is_svs", "Aperio SVS"),
        ("is_ndpi", "Hamamatsu NDPI"),
        ("is_ome", "OME-TIFF"),
        ("is_scn", "Leica SCN"),
        ("is_philips", "Philips TIFF"),
        ("is_bif", "Ventana BIF"),
    ):
        if getattr(tf, flag, False):
            return label
    return "TIFF"


def _tiff_mpp(tf: tifffile.TiffFile, series: Any, page: Any) -> tuple[float | None, str | None]:
    """Level-0 µm/px and where it came from: Aperio, OME-XML, then resolution tags."""
    description = page.description or ""
    if tf.is_svs or description.startswith("Aperio"):
        m = _APERIO_MPP.search(description)
        mpp = length_to_um(m.group(1), "µm") if m else None
        if mpp is not None:
            return mpp, "Aperio ImageDescription MPP"
    if tf.is_ome and tf.ome_metadata:
        mpp = _ome_mpp(tf.ome_metadata, _yx(series))
        if mpp is not None:
            return mpp, "OME-XML PhysicalSizeX"
    try:
        xres = float(page.resolution[0])
        unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError, IndexError):
        return None, None
    if xres > 0 and unit in _RESUNIT_UM:
        mpp = plausible_resolution_mpp(_RESUNIT_UM[unit] / xres)
        if mpp is not None:
            return mpp, "TIFF XResolution/ResolutionUnit"
    return None, None


def _ome_mpp(xml: str, size_yx: tuple[int, int]) -> float | None:
    """PhysicalSizeX (in µm) of the OME Pixels element matching the main image's size."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        log.warning("unparseable OME-XML; µm/px unknown")
        return None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    h, w = size_yx
    matching = [p for p in pixels if p.get("SizeX") == str(w) and p.get("SizeY") == str(h)]
    for p in matching or pixels[:1]:
        value = p.get("PhysicalSizeX")
        if value is not None:
            return length_to_um(value, p.get("PhysicalSizeXUnit", "µm"))
    return None
