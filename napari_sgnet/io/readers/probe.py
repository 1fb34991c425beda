"""Decide, from metadata only, whether napari-sgnet can open a path: :func:`probe`.

The npe2 reader hook claims exactly what :func:`probe` accepts, so napari falls back to
another reader for the rest (fluorescence stacks, z-stacks, plain zarr arrays, damaged
files). The slide checks are those :func:`~napari_sgnet.io.readers.open_pyramid` runs
while opening (``probe_tiff``, ``probe_omezarr``, ``probe_flat``, ``probe_openslide``
beside each reader), so a refusal here carries the same message ``open_pyramid`` raises.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sgnet.errors import SlideError, UnsupportedSlideError

__all__ = ["Probe", "can_open", "probe"]

log = logging.getLogger(__name__)

#: What :attr:`Probe.kind` may be.
KINDS = ("tiff", "png", "jpeg", "openslide", "omezarr", "label-image", "labelstore")


@dataclass(frozen=True)
class Probe:
    """The verdict on one path.

    Attributes
    ----------
    path : Path
        The path inspected.
    kind : str or None
        What it is (one of :data:`KINDS`), when that could be told.
    error : SlideError or None
        The refusal, naming the path and the problem, exactly as opening would raise it;
        None when napari-sgnet can open the path.
    """

    path: Path
    kind: str | None
    error: SlideError | None = None

    @property
    def ok(self) -> bool:
        """True when napari-sgnet can open the path."""
        return self.error is None

    @property
    def problem(self) -> str | None:
        """Why napari-sgnet cannot open the path (follows the path's name); None when it can."""
        return None if self.error is None else self.error.problem


def can_open(path: str | os.PathLike[str]) -> bool:
    """True when napari-sgnet can open ``path``; reads metadata only and never raises."""
    return probe(path).ok


def probe(path: str | os.PathLike[str]) -> Probe:
    """Inspect ``path`` cheaply (headers, TIFF tags, zarr attributes) and say what it is.

    Accepted: TIFF-based slides (SVS, NDPI, OME-TIFF, tiled/strip TIFF) and PNG/JPEG
    images that are single-plane greyscale, RGB or RGBA with their data present;
    OpenSlide formats when OpenSlide recognises them; OME-Zarr (NGFF) images with the
    same pixel rules; OME-Zarr image-label groups; napari-sgnet label stores.

    Parameters
    ----------
    path : str or PathLike
        A file or folder.

    Returns
    -------
    Probe
        Never raises: every problem, including unexpected ones, becomes
        :attr:`Probe.error`.
    """
    p = Path(path).expanduser()
    kind: str | None = None
    try:
        from napari_sgnet.io.readers import detect_format

        kind = detect_format(p)
        if kind == "omezarr":
            kind = _probe_zarr(p)
        elif kind == "tiff":
            from napari_sgnet.io.readers.tiff import probe_tiff

            probe_tiff(p)
        elif kind in ("png", "jpeg"):
            from napari_sgnet.io.readers.flat import probe_flat

            probe_flat(p, kind)
        else:
            from napari_sgnet.io.readers.openslide_reader import probe_openslide

            probe_openslide(p)
    except SlideError as exc:
        return Probe(p, kind, exc)
    except Exception as exc:  # a probe must not raise; the reader reports details on open
        log.debug("probing %s failed", p, exc_info=True)
        problem = f"cannot be inspected ({type(exc).__name__}: {exc})"
        return Probe(p, kind, UnsupportedSlideError(p, problem))
    return Probe(p, kind)


def _probe_zarr(path: Path) -> str:
    """``labelstore``, ``label-image`` or ``omezarr`` for a zarr folder napari-sgnet opens."""
    import zarr

    from napari_sgnet.io.ngff import ome_attributes
    from napari_sgnet.io.readers.omezarr import probe_omezarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise UnsupportedSlideError(path, f"is not a readable zarr store ({exc})") from exc
    if isinstance(node, zarr.Array):
        raise UnsupportedSlideError(
            path, "is a single zarr array, not an OME-Zarr image; open the image group above it"
        )
    attrs: dict[str, Any] = node.attrs.asdict()
    sgnet = attrs.get("sgnet")
    if isinstance(sgnet, dict):
        from napari_sgnet.io.labelstore.meta import is_store_meta

        if is_store_meta(sgnet):
            return "labelstore"
    if "image-label" in ome_attributes(attrs):
        return "label-image"
    probe_omezarr(path)
    return "omezarr"
