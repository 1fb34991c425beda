"""LabelStore records: slide identity, timestamps and the ``sgnet`` attributes.

The store keeps two attribute namespaces on its root group: ``"ome"`` (what any
OME-NGFF 0.5 reader needs to place and colour the labels over the slide; built by
:mod:`napari_sgnet.io.ngff`) and ``"sgnet"`` (what napari-sgnet needs: slide
identity, palette, tiling, model, requests and commits), kept by :class:`StoreRecords`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore.guard import StoreGuard
from napari_sgnet.io.pyramid import Pyramid

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_REQUEST_RECORDS",
    "StoreRecords",
    "compare_slide_identity",
    "is_store_meta",
    "now_iso",
    "slide_identity",
    "store_meta",
]

FORMAT_NAME = "napari-sgnet-labelstore"
FORMAT_VERSION = 1
#: The store keeps the records of this many most recent requests.
MAX_REQUEST_RECORDS = 200

log = logging.getLogger(__name__)

#: Side of the window whose bytes fingerprint the slide's pixel content.
_THUMB_SIDE = 512


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _thumbnail_digest(slide: Pyramid) -> str:
    """SHA-256 of the central (at most 512 x 512) window of the slide's coarsest level."""
    level = slide.n_levels - 1
    w, h = slide.level_size(level)
    tw, th = min(w, _THUMB_SIDE), min(h, _THUMB_SIDE)
    box = Box((w - tw) // 2, (h - th) // 2, tw, th)
    data = np.ascontiguousarray(slide.read(box, level))
    digest = hashlib.sha256()
    digest.update(f"{data.shape}|{data.dtype.str}|{level}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:16]


_DIGESTS: OrderedDict[tuple[str, tuple[int, ...]], str] = OrderedDict()
_DIGEST_LOCK = threading.Lock()


def _cached_digest(slide: Pyramid) -> str:
    """The thumbnail digest, cached by the coarsest level's dask token (stable per content)."""
    arr = slide.levels[-1]
    name = getattr(arr, "name", None)
    if not isinstance(name, str):
        return _thumbnail_digest(slide)
    key = (name, tuple(arr.shape))
    with _DIGEST_LOCK:  # one read per slide: a second caller waits for the first's digest
        if key not in _DIGESTS:
            _DIGESTS[key] = _thumbnail_digest(slide)
            while len(_DIGESTS) > 32:
                _DIGESTS.popitem(last=False)
        return _DIGESTS[key]


def slide_identity(slide: Pyramid) -> dict[str, Any]:
    """A cheap identity record of a slide: size, µm/px and a pixel fingerprint.

    Reads at most one 512 x 512 window of the coarsest level (once per slide and
    process: the digest is cached by the level's dask token).
    """
    return {
        "name": slide.name,
        # Absolute, so a store opened from another folder still finds its slide; the path
        # relative to the store is recorded beside it (``slide_ref.slide_reference``).
        "source": os.path.abspath(slide.source) if slide.source is not None else None,
        "width": slide.width,
        "height": slide.height,
        "mpp": slide.mpp,
        "n_levels": slide.n_levels,
        "fingerprint": _cached_digest(slide),
    }


def compare_slide_identity(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two identity records (empty when they match).

    The name and source path are not compared (files get renamed and moved). A store made
    before fingerprints were recorded is compared by size and µm/px only (logged).
    """
    problems = []
    if (stored.get("width"), stored.get("height")) != (current["width"], current["height"]):
        problems.append(
            f"size differs (store: {stored.get('width')} x {stored.get('height')} px, "
            f"slide: {current['width']} x {current['height']} px)"
        )
    s_mpp, c_mpp = stored.get("mpp"), current["mpp"]
    if (s_mpp is None) != (c_mpp is None) or (
        s_mpp is not None and not math.isclose(s_mpp, c_mpp, rel_tol=1e-6)
    ):
        problems.append(f"µm/px differs (store: {s_mpp}, slide: {c_mpp})")
    if not problems and stored.get("fingerprint") is None:
        log.warning(
            "the store records no pixel fingerprint of slide %r; only its size and µm/px "
            "were checked",
            stored.get("name"),
        )
    elif not problems and stored.get("fingerprint") != current["fingerprint"]:
        problems.append(
            "pixel content differs (store fingerprint "
            f"{stored.get('fingerprint')}, slide {current['fingerprint']})"
        )
    return problems


def is_store_meta(meta: Any) -> bool:
    """True when ``meta`` (a group's ``sgnet`` attribute) marks a napari-sgnet label store."""
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def store_meta(path: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``sgnet`` attributes of a store's group attributes, checked for format and version.

    Raises
    ------
    StoreError
        When they are missing, or written by a newer napari-sgnet.
    """
    meta = attrs.get("sgnet")
    if not isinstance(meta, dict) or not is_store_meta(meta):
        raise StoreError(path, "is not a napari-sgnet label store (no 'sgnet' attributes)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(
            path,
            f"label store format {meta['format_version']} is newer than this napari-sgnet "
            f"understands ({FORMAT_VERSION}); upgrade napari-sgnet",
        )
    return meta


class StoreRecords:
    """The ``sgnet`` attributes of one store: what it is, and what was done to it.

    Fields that change while the store is open (model, requests, commits) are re-read
    before they are returned, and every change is a re-read, change and rewrite under
    the store's lock, so two open instances of one store never clobber each other.

    Parameters
    ----------
    group : zarr.Group
        The store's root group.
    guard : StoreGuard
        The store's lock and writability.
    meta : dict
        The ``sgnet`` attributes as read when the store was opened.
    """

    def __init__(self, group: zarr.Group, guard: StoreGuard, meta: dict[str, Any]) -> None:
        self._group = group
        self._guard = guard
        self._meta = meta

    @property
    def snapshot(self) -> dict[str, Any]:
        """A copy of the attributes as last read (no re-read)."""
        return copy.deepcopy(self._meta)

    def fresh(self, key: str, default: Any = None) -> Any:
        """A copy of attribute ``key`` as it is on disk now."""
        self.refresh()
        return copy.deepcopy(self._meta.get(key, default))

    def refresh(self) -> None:
        """Re-read the attributes (another instance may have changed them)."""
        with contextlib.suppress(OSError, ValueError):
            fresh = zarr.open_group(self._guard.path, mode="r").attrs.asdict().get("sgnet")
            if isinstance(fresh, dict):
                self._meta = fresh

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Re-read, change and rewrite the attributes under the store lock."""
        self._guard.check_writable()
        with self._guard.writing():
            self.refresh()
            meta = copy.deepcopy(self._meta)
            change(meta)
            self._group.update_attributes({"sgnet": meta})
            self._meta = meta

    def set_model(self, info: dict[str, Any]) -> None:
        """Record the model that predictions (and the done-map) now come from."""
        self.update(lambda m: m.__setitem__("model", dict(info)))

    def add_request(self, record: dict[str, Any]) -> int:
        """Append a request record (keeping the last :data:`MAX_REQUEST_RECORDS`); its number."""
        number: list[int] = []

        def _add(meta: dict[str, Any]) -> None:
            meta["n_requests"] = int(meta.get("n_requests", 0)) + 1
            number.append(meta["n_requests"])
            meta["requests"] = [*meta.get("requests", []), {"number": number[0], **record}][
                -MAX_REQUEST_RECORDS:
            ]

        self.update(_add)
        return number[0]

    def update_request(self, number: int, fields: dict[str, Any]) -> None:
        """Update fields of request ``number``."""

        def _set(meta: dict[str, Any]) -> None:
            for rec in meta.get("requests", []):
                if rec.get("number") == number:
                    rec.update(fields)

        self.update(_set)

    def add_commit(self, record: dict[str, Any]) -> None:
        """Append a commit record."""
        self.update(lambda m: m.setdefault("commits", []).append(record))
