"""Where a slide's label store lives: the one naming rule of the app, the CLI and the demo.

The rule
--------
A slide's label store is ``<folder>/<stem>.sgnet.zarr`` where

- ``<stem>`` is the slide's file name (its :attr:`Pyramid.source`, else its
  :attr:`Pyramid.name`) with every trailing slide extension removed, ``.ome`` included:
  ``CMU-1-Small-Region.svs`` -> ``CMU-1-Small-Region``, ``synthetic-8192-s7.ome.tif`` and
  ``synthetic-8192-s7.ome.zarr`` -> ``synthetic-8192-s7``. Only known extensions
  (:data:`SLIDE_EXTENSIONS`) are removed, so ``case.v2.svs`` keeps ``case.v2``.
- ``<folder>`` is the folder given (``napari-sgnet predict --out DIR``, the demo's ``--out``,
  the dock's ``store_dir``); else ``$NAPARI_SGNET_STORE_DIR``; else the slide's own folder
  when it is writable; else ``~/napari-sgnet/stores``.

So ``napari-sgnet predict --out DIR slide.svs`` writes exactly the store that the app opens
for ``slide.svs`` with ``store_dir=DIR`` (or, for ``DIR`` = the slide's folder, by default).

Two different slides with the same stem
-----------------------------------------
Slides named alike in different folders (``a/case.svs``, ``b/case.svs``) stored into one folder
would share ``case.sgnet.zarr``. :func:`unique_store_path` keeps ``<stem>.sgnet.zarr`` for the
common case and, only when that store exists and was made for a *different* slide (size,
µm/px or pixel fingerprint differ), names the store ``<stem>-<fp8>.sgnet.zarr`` with the first
8 hex digits of the slide's fingerprint. ``predict`` and the app (:func:`find_store_path` on an
open pyramid) use it, so both find the same store.

Before this rule the app named stores after the whole file name (``CMU-1-Small-Region.svs
.sgnet.zarr``). :func:`find_store_path` still opens such a store when it exists and no store
with the new name does, so nobody loses their labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from napari_sgnet.io.pyramid import Pyramid

__all__ = [
    "SLIDE_EXTENSIONS",
    "STORE_DIR_ENV",
    "STORE_SUFFIX",
    "find_store_path",
    "legacy_store_path",
    "slide_stem",
    "store_folder",
    "store_path_for",
    "unique_store_path",
]

#: Suffix of every label store folder.
STORE_SUFFIX = ".sgnet.zarr"
#: Environment variable naming the folder for label stores (overrides "beside the slide").
STORE_DIR_ENV = "NAPARI_SGNET_STORE_DIR"
#: Extensions removed from a slide's file name to make its store name (case-insensitive).
SLIDE_EXTENSIONS = (
    ".zarr", ".ome", ".tiff", ".tif", ".svs", ".ndpi", ".scn", ".mrxs", ".bif", ".vms",
    ".png", ".jpg", ".jpeg",
)  # fmt: skip

SlideLike = Union[str, "os.PathLike[str]", "Pyramid"]


def _source(slide: SlideLike) -> Path | None:
    """The slide's file, when it has one (a pyramid's ``source``; this module stays light)."""
    if isinstance(slide, (str, os.PathLike)):
        return Path(slide)
    source = slide.source
    return Path(source) if source is not None else None


def _file_name(slide: SlideLike) -> str:
    source = _source(slide)
    if source is not None:
        return source.name
    return str(getattr(slide, "name", "") or "slide")


def slide_stem(slide: SlideLike) -> str:
    """A slide's file name without its slide extensions (``.ome`` included).

    Parameters
    ----------
    slide : str, Path or Pyramid
        A slide file or folder, or an open pyramid (its ``source``, else its ``name``).

    Returns
    -------
    str
        ``"CMU-1-Small-Region"`` for ``CMU-1-Small-Region.svs``; ``"slide"`` when nothing is
        left.
    """
    name = _file_name(slide)
    stripped = True
    while stripped:
        stripped = False
        for ext in SLIDE_EXTENSIONS:
            if name.lower().endswith(ext) and len(name) > len(ext):
                name, stripped = name[: -len(ext)], True
                break
    return name or "slide"


def store_folder(slide: SlideLike, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder a slide's store goes in (see the module's rule)."""
    folder = store_dir if store_dir is not None else os.environ.get(STORE_DIR_ENV) or None
    if folder is not None:
        return Path(folder)
    source = _source(slide)
    if source is not None and os.access(source.parent, os.W_OK):
        return source.parent
    return Path.home() / "napari-sgnet" / "stores"


def store_path_for(slide: SlideLike, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """The label store of a slide: ``<folder>/<stem>.sgnet.zarr`` (see the module's rule).

    Parameters
    ----------
    slide : str, Path or Pyramid
        The slide.
    store_dir : str or Path, optional
        The folder for stores; default ``$NAPARI_SGNET_STORE_DIR``, else beside the slide
        when writable, else ``~/napari-sgnet/stores``.

    Returns
    -------
    Path
        The store folder (it may not exist yet).
    """
    return store_folder(slide, store_dir) / f"{slide_stem(slide)}{STORE_SUFFIX}"


def legacy_store_path(slide: SlideLike, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """The name the app used before :func:`store_path_for`: the whole file name + suffix."""
    return store_folder(slide, store_dir) / f"{_file_name(slide)}{STORE_SUFFIX}"


def unique_store_path(slide: Pyramid, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`store_path_for`, or ``<stem>-<fp8>.sgnet.zarr`` when that name is taken by the
    store of a different slide (see the module's rule).

    Parameters
    ----------
    slide : Pyramid
        The open slide (its identity is compared with the existing store's).
    store_dir : str or Path, optional
        As in :func:`store_path_for`.

    Returns
    -------
    Path
        The store folder for this slide (it may not exist yet).
    """
    from napari_sgnet.errors import StoreError
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.labelstore.meta import compare_slide_identity, slide_identity

    path = store_path_for(slide, store_dir)
    if not LabelStore.is_store(path):
        return path
    current = slide_identity(slide)
    try:
        stored = LabelStore.open(path, mode="r").slide_identity
    except StoreError:
        return path  # damaged: the run that opens it says so
    if not compare_slide_identity(stored, current):
        return path
    fingerprint = str(current["fingerprint"])[:8]
    return path.with_name(f"{slide_stem(slide)}-{fingerprint}{STORE_SUFFIX}")


def find_store_path(slide: SlideLike, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """The store the app opens for a slide.

    :func:`store_path_for` (for an open pyramid, :func:`unique_store_path`: a store of
    another slide with the same stem is never used), unless only a store with the app's
    earlier name (:func:`legacy_store_path`) exists: then that one, so existing labels
    stay in use.
    """
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.pyramid import Pyramid

    path = store_path_for(slide, store_dir)
    if isinstance(slide, Pyramid):
        path = unique_store_path(slide, store_dir)
    if LabelStore.is_store(path):
        return path
    legacy = legacy_store_path(slide, store_dir)
    if legacy != path and LabelStore.is_store(legacy):
        return legacy
    return path
