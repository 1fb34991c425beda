"""Lazy slide readers and the dispatcher :func:`open_pyramid`.

The format is decided by content (the file signature), the extension only breaking
ties and naming what a damaged file was meant to be:

============================  ================================================
TIFF signature                SVS, NDPI, OME-TIFF, tiled/strip TIFF (tifffile)
PNG / JPEG signature          flat image, pyramid built once into the cache
folder with zarr metadata     OME-Zarr (NGFF 0.4 zarr v2, 0.5 zarr v3)
.mrxs .vms .vmu .svslide .dcm OpenSlide (optional ``slides`` extra)
============================  ================================================

:func:`probe` (and :func:`can_open`) runs the same checks from metadata alone and never
raises; the npe2 reader claims only what it accepts.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import replace
from pathlib import Path

from napari_sgnet.errors import (
    CorruptSlideError,
    SlideError,
    UnsupportedSlideError,
)
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.readers._common import checked_file_mpp
from napari_sgnet.io.readers.cache import CACHE_ENV, default_cache_dir
from napari_sgnet.io.readers.flat import ProgressFn, open_flat_image
from napari_sgnet.io.readers.omezarr import is_zarr_folder, open_omezarr
from napari_sgnet.io.readers.openslide_reader import OPENSLIDE_EXTENSIONS, open_openslide
from napari_sgnet.io.readers.probe import Probe, can_open, probe
from napari_sgnet.io.readers.tiff import open_tiff
from napari_sgnet.validate import check_mpp, mpp_problem

__all__ = [
    "CACHE_ENV",
    "SLIDE_EXTENSIONS",
    "Probe",
    "ProgressFn",
    "can_open",
    "default_cache_dir",
    "detect_format",
    "open_pyramid",
    "probe",
]

log = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

_TIFF_EXTENSIONS = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".btf", ".tf8", ".qptiff")
_EXPECTED = {
    **{ext: "TIFF" for ext in _TIFF_EXTENSIONS},
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}
#: File extensions :func:`open_pyramid` knows (OME-Zarr folders aside).
SLIDE_EXTENSIONS = (*_TIFF_EXTENSIONS, ".png", ".jpg", ".jpeg", *OPENSLIDE_EXTENSIONS)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The reader a path goes to: ``tiff``, ``png``, ``jpeg``, ``omezarr`` or ``openslide``.

    Reads at most the file's first 8 bytes.

    Raises
    ------
    SlideError
        The path does not exist or cannot be read.
    CorruptSlideError
        The file is empty, or its content does not match its slide extension.
    UnsupportedSlideError
        Neither content nor extension is a supported format.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise SlideError(p, "no such file or folder") from exc
    except OSError as exc:
        raise SlideError(p, f"cannot access it ({exc.strerror or exc})") from exc
    if p.is_dir():
        if is_zarr_folder(p):
            return "omezarr"
        raise UnsupportedSlideError(
            p, "is a folder but not a zarr store (no zarr.json, .zgroup or .zattrs inside)"
        )
    if not p.is_file():
        raise UnsupportedSlideError(p, "is not a regular file (device, pipe or socket?)")
    ext = p.suffix.lower()
    if ext in OPENSLIDE_EXTENSIONS:
        return "openslide"
    if st.st_size == 0:
        raise CorruptSlideError(p, "the file is empty (0 bytes)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SlideError(p, "permission denied") from exc
        raise SlideError(p, f"cannot read it ({exc.strerror or exc})") from exc
    if head.startswith(_TIFF_MAGIC):
        return "tiff"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    expected = _EXPECTED.get(ext)
    if expected is not None:
        raise CorruptSlideError(
            p, f"is not a valid {expected} file (its first bytes are {head[:4].hex(' ')})"
        )
    raise UnsupportedSlideError(
        p,
        "is not a supported slide format; supported: TIFF-based slides (SVS, NDPI, OME-TIFF, "
        "tiled TIFF), PNG, JPEG, OME-Zarr folders, and with OpenSlide "
        + " ".join(OPENSLIDE_EXTENSIONS),
    )


def open_pyramid(
    path: str | os.PathLike[str],
    mpp: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    build_cache: bool = True,
) -> Pyramid:
    """Open a slide as a lazy :class:`~napari_sgnet.io.pyramid.Pyramid`.

    Only metadata is read, except for images without a usable pyramid (PNG, JPEG,
    strip TIFF, single-level tiled TIFF larger than 4096 px): those are decoded once into
    the pyramid cache and reused by later opens.

    Parameters
    ----------
    path : str or PathLike
        A slide file or an OME-Zarr folder.
    mpp : float, optional
        Level-0 µm/px overriding what the file says (or supplying it when unknown).
    cache_dir : str or PathLike, optional
        Pyramid cache folder; default ``$NAPARI_SGNET_CACHE`` or
        ``~/.cache/napari-sgnet/pyramids``.
    progress : callable, optional
        ``progress(done, total)`` called while a pyramid cache is built.
    build_cache : bool
        False: describe a large single-level tiled TIFF from metadata alone (lazy coarser
        levels) instead of building its cache first (``info``).

    Returns
    -------
    Pyramid
        Lazy levels, largest first; ``metadata`` holds ``format`` and ``mpp_source``.

    Raises
    ------
    SlideError
        Missing or unreadable path.
    CorruptSlideError
        Empty, truncated or damaged file (also raised later, at read time, by a damaged
        tile).
    UnsupportedSlideError
        A format, compression, channel count or dimensionality napari-sgnet does not read.
    OptionError
        ``mpp`` is not a finite number within :data:`napari_sgnet.validate.MPP_RANGE`
        (a ``ValueError``).
    ResourceLimitError
        A level declares more pixels, or larger tiles, than
        :func:`napari_sgnet.validate.resource_limits` allows.
    """
    if mpp is not None:
        mpp = check_mpp(mpp, "the µm/px override (--mpp)")
    p = Path(path).expanduser()
    kind = detect_format(p)
    if kind == "omezarr":
        pyramid = open_omezarr(p)
    elif kind == "tiff":
        pyramid = open_tiff(p, cache_dir=cache_dir, progress=progress, build_cache=build_cache)
    elif kind in ("png", "jpeg"):
        pyramid = open_flat_image(p, kind, cache_dir=cache_dir, progress=progress)
    else:
        pyramid = open_openslide(p)
    if mpp is None and pyramid.mpp is not None and mpp_problem(pyramid.mpp) is not None:
        checked_file_mpp(p, pyramid.mpp, pyramid.metadata.get("mpp_source"))  # warns
        metadata = {**pyramid.metadata, "mpp_source": None, "file_mpp": pyramid.mpp,
                    "mpp_ignored": mpp_problem(pyramid.mpp)}
        pyramid = replace(pyramid, mpp=None, metadata=metadata)
    if mpp is not None:
        metadata = {**pyramid.metadata, "mpp_source": "override", "file_mpp": pyramid.mpp}
        pyramid = replace(pyramid, mpp=float(mpp), metadata=metadata)
    log.debug("opened %s: %s", p, pyramid.summary())
    return pyramid
