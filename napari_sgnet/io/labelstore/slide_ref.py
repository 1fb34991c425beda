"""Which slide a label store belongs to, and where that slide is now.

A store records its slide's identity (:func:`~napari_sgnet.io.labelstore.meta.slide_identity`):
the name, the **absolute** path of the file (``source``), the path relative to the store's
folder (``source_relative``), the level-0 size, µm/px and a pixel fingerprint.

The fingerprint is the first 16 hex digits of a SHA-256 over the shape, dtype and level
index of the central (at most) 512 x 512 window of the slide's coarsest level, and that
window's pixel bytes. It reads one small window (cached per process), does not depend on
the file's name, folder or container (the same pixels in an SVS and in an OME-TIFF with the
same pyramid match), and changes when the pixels do. Size and µm/px are compared beside it.
Stores made before fingerprints were recorded are checked on size and µm/px only, with a
warning.

:func:`find_slide` opens a store's slide from anywhere: the recorded absolute path, then
the recorded path relative to the store, then a file of the recorded name beside the
store; every candidate is checked against the identity (a different slide with the same
name is refused, never shown under these labels). :func:`relink_slide` records a moved
slide's new place after checking it is the same slide.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_sgnet.errors import SlideError, StoreError
from napari_sgnet.io.pyramid import Pyramid

if TYPE_CHECKING:
    from napari_sgnet.io.labelstore.store import LabelStore

__all__ = ["candidate_paths", "find_slide", "relink_slide", "slide_reference"]

log = logging.getLogger(__name__)


def slide_reference(source: str | os.PathLike[str] | None, store_path: Path) -> dict[str, Any]:
    """The ``source`` / ``source_relative`` fields of a store's slide identity.

    Parameters
    ----------
    source : str or Path, optional
        The slide's file (``Pyramid.source``).
    store_path : Path
        The store folder (its final name, not a temporary one).

    Returns
    -------
    dict
        ``{"source": absolute path, "source_relative": path relative to the store's folder}``
        (``None`` values for a slide without a file, or on another drive).
    """
    if source is None:
        return {"source": None, "source_relative": None}
    absolute = os.path.abspath(source)
    try:
        relative: str | None = os.path.relpath(absolute, os.path.abspath(store_path.parent))
    except ValueError:  # another drive (Windows)
        relative = None
    return {"source": absolute, "source_relative": relative}


def candidate_paths(store: LabelStore) -> list[Path]:
    """Where the store's slide may be, in the order :func:`find_slide` tries them."""
    ident = store.slide_identity
    folder = store.path.absolute().parent
    out: list[Path] = []
    source = ident.get("source")
    if source:
        src = Path(source)
        out.append(src if src.is_absolute() else Path.cwd() / src)
        if not src.is_absolute():  # a store from before absolute paths were recorded
            out.append(folder / src)
    relative = ident.get("source_relative")
    if relative:
        out.append(folder / relative)
    name = Path(source).name if source else None
    if name:
        out.append(folder / name)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            unique.append(Path(key))
    return unique


def _open(path: Path, mpp: float | None) -> Pyramid:
    from napari_sgnet.io.readers import open_pyramid

    return open_pyramid(path, mpp=mpp)


def _stored_mpp(store: LabelStore) -> float | None:
    mpp = store.slide_identity.get("mpp")
    return float(mpp) if mpp is not None else None


def find_slide(
    store: LabelStore, slide: str | os.PathLike[str] | Pyramid | None = None
) -> Pyramid:
    """Open the slide ``store`` was made for, checked against the store's slide identity.

    Parameters
    ----------
    store : LabelStore
        The store.
    slide : str, Path or Pyramid, optional
        The slide to use instead of the recorded one (a moved slide; see
        :func:`relink_slide` to record its new place).

    Returns
    -------
    Pyramid
        The slide (opened with the store's recorded µm/px, so an ``--mpp`` override given
        when the store was made still applies).

    Raises
    ------
    StoreError
        When ``slide`` (or every recorded place) is missing, unreadable, or a different
        slide; the message lists the places looked at and says how to re-link.
    """
    if isinstance(slide, Pyramid):
        store.check_slide(slide)
        return slide
    mpp = _stored_mpp(store)
    if slide is not None:
        path = Path(slide)
        if not path.exists():
            raise StoreError(path, "slide file not found")
        pyramid = _open(path, mpp)
        store.check_slide(pyramid)
        return pyramid
    ident = store.slide_identity
    tried: list[str] = []
    for path in candidate_paths(store):
        if not path.exists():
            tried.append(f"{path} (missing)")
            continue
        try:
            pyramid = _open(path, mpp)
            store.check_slide(pyramid)
        except StoreError as exc:
            tried.append(f"{path} (a different slide: {exc.problem})")
            continue
        except SlideError as exc:
            tried.append(f"{path} (cannot be read: {exc.problem})")
            continue
        if os.path.normpath(str(path)) != os.path.normpath(str(ident.get("source") or "")):
            log.info("%s: found its slide %r at %s", store.path, ident.get("name"), path)
        return pyramid
    where = "; ".join(tried) if tried else "the store records no slide file"
    raise StoreError(
        store.path,
        f"cannot find the slide {ident.get('name')!r} this store was made for (looked at: "
        f"{where}); pass the slide's new path with --slide to re-link it",
    )


def relink_slide(store: LabelStore, slide: str | os.PathLike[str] | Pyramid) -> Pyramid:
    """Check ``slide`` is the store's slide and record its (new) place in the store.

    Returns
    -------
    Pyramid
        The opened slide.

    Raises
    ------
    StoreError
        A different slide, a missing or unreadable file, or a read-only store.
    """
    pyramid = find_slide(store, slide)
    if pyramid.source is None:
        raise StoreError(store.path, "cannot re-link to a slide that has no file")
    ref = slide_reference(pyramid.source, store.path)
    if ref["source"] != store.slide_identity.get("source"):
        store.records.update(lambda m: m.setdefault("slide", {}).update(ref))
        log.info("%s: slide re-linked to %s", store.path, ref["source"])
    return pyramid
