"""Exported training-patch folders: one format shared by the exporter and the trainer.

Layout (documented in ``docs/training.md``)::

    FOLDER/
      manifest.json
      items/<id>/local.png         RGB uint8, P x P (the local patch)
      items/<id>/context.png       RGB uint8, C x C (the surrounding patch, C = alpha * P)
      items/<id>/local_mask.png    8-bit greyscale label ids (0 = no label), P x P
      items/<id>/context_mask.png  8-bit greyscale label ids, C x C

``manifest.json`` holds ``format``, ``version``, ``palette``, optional ``mpp`` / ``patch_size`` /
``context_factor`` and ``items``: one object per patch with ``id``, ``offset`` (``[x, y]`` of
the local patch's top-left corner inside the surrounding patch, in context pixels), ``slide``,
``level``, ``mpp``, ``local_box`` (``[x, y, w, h]`` at that level), ``model_id`` and free ``meta``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.palette import Palette, PaletteError

__all__ = [
    "PATCH_FORMAT",
    "PATCH_FORMAT_VERSION",
    "PatchFolder",
    "PatchFolderError",
    "PatchItem",
    "read_patch_folder",
    "write_patch_folder",
]

PATCH_FORMAT = "napari-sgnet-patches"
PATCH_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("local.png", "context.png", "local_mask.png", "context_mask.png")


class PatchFolderError(UserInputError):
    """A patch folder is missing, malformed, or would be overwritten."""


@dataclass(frozen=True)
class PatchItem:
    """One training sample: a local patch, its surrounding patch and both label maps.

    Parameters
    ----------
    local, context : numpy.ndarray
        ``(P, P, 3)`` and ``(C, C, 3)`` RGB uint8.
    local_mask, context_mask : numpy.ndarray
        ``(P, P)`` and ``(C, C)`` uint8 label ids (0 = no label).
    offset : tuple of int
        ``(x, y)`` of the local patch's top-left corner inside the surrounding patch.
    slide : str
        Where the patch comes from (path or name).
    level : int or None
        Pyramid level the patch was read at.
    mpp : float or None
        µm/px of that level.
    local_box : Box or None
        The local patch in that level's pixels.
    model_id : str or None
        The model whose prediction the mask started from, if any.
    meta : dict
        Free JSON-serialisable extras (e.g. the fraction a person edited).
    """

    local: np.ndarray
    context: np.ndarray
    local_mask: np.ndarray
    context_mask: np.ndarray
    offset: tuple[int, int]
    slide: str = ""
    level: int | None = None
    mpp: float | None = None
    local_box: Box | None = None
    model_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`PatchFolderError` when the arrays or the offset are inconsistent."""
        lh, lw = self.local_mask.shape[:2]
        ch, cw = self.context_mask.shape[:2]
        if self.local.shape != (lh, lw, 3) or self.context.shape != (ch, cw, 3):
            raise PatchFolderError(
                f"image/mask shapes disagree: local {self.local.shape} vs mask {(lh, lw)}, "
                f"context {self.context.shape} vs mask {(ch, cw)}"
            )
        ox, oy = self.offset
        if ox < 0 or oy < 0 or ox + lw > cw or oy + lh > ch:
            raise PatchFolderError(
                f"local patch {lw}x{lh} at offset {self.offset} does not fit the {cw}x{ch} context"
            )


def _entry(item: PatchItem, item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "offset": [int(item.offset[0]), int(item.offset[1])],
        "local_size": [int(item.local_mask.shape[1]), int(item.local_mask.shape[0])],
        "context_size": [int(item.context_mask.shape[1]), int(item.context_mask.shape[0])],
        "slide": item.slide,
        "level": item.level,
        "mpp": item.mpp,
        "local_box": list(item.local_box.as_tuple()) if item.local_box is not None else None,
        "model_id": item.model_id,
        "meta": item.meta,
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def write_patch_folder(
    folder: str | Path,
    items: Iterable[PatchItem],
    palette: Palette,
    *,
    mpp: float | None = None,
    patch_size: int | None = None,
    context_factor: float | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write (or extend) a patch folder; the manifest is replaced atomically at the end.

    Parameters
    ----------
    folder : path
        Target folder; created when missing.
    items : iterable of PatchItem
        Samples, written one at a time (a generator is fine).
    palette : Palette
        The label ids' classes.
    mpp, patch_size, context_factor : optional
        Working resolution and geometry, recorded in the manifest.
    append : bool
        Add to an existing folder (its palette must have the same classes; its ``mpp``,
        ``patch_size`` and ``context_factor`` are kept unless given).
    overwrite : bool
        Replace an existing manifest instead of refusing.

    Returns
    -------
    Path
        The manifest path.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    entries: list[dict[str, Any]] = []
    if manifest_path.exists():
        if append:
            existing = read_patch_folder(folder)
            if not existing.palette.same_classes(palette):
                raise PatchFolderError(
                    f"{manifest_path}: palette {existing.palette.names} differs from "
                    f"{palette.names}"
                )
            entries = list(existing.entries)
            mpp = existing.mpp if mpp is None else mpp
            patch_size = existing.patch_size if patch_size is None else patch_size
            if context_factor is None:
                context_factor = existing.context_factor
        elif not overwrite:
            raise PatchFolderError(f"{manifest_path} exists; pass append=True or overwrite=True")
    folder.mkdir(parents=True, exist_ok=True)
    used = {e["id"] for e in entries}
    next_index = len(entries)
    for item in items:
        item.validate()
        while f"{next_index:06d}" in used:
            next_index += 1
        item_id = f"{next_index:06d}"
        used.add(item_id)
        item_dir = folder / "items" / item_id
        item_dir.mkdir(parents=True, exist_ok=True)
        arrays = (item.local, item.context, item.local_mask, item.context_mask)
        for name, array in zip(FILES, arrays, strict=True):
            Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(item_dir / name)
        entries.append(_entry(item, item_id))
    manifest = {
        "format": PATCH_FORMAT,
        "version": PATCH_FORMAT_VERSION,
        "palette": palette.to_dict(),
        "mpp": mpp,
        "patch_size": patch_size,
        "context_factor": context_factor,
        "items": entries,
    }
    _write_json_atomic(manifest_path, manifest)
    return manifest_path


@dataclass(frozen=True)
class PatchFolder:
    """A read patch folder: manifest fields plus lazy per-item loading (``folder[i]``)."""

    path: Path
    palette: Palette
    entries: tuple[dict[str, Any], ...]
    mpp: float | None = None
    patch_size: int | None = None
    context_factor: float | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[PatchItem]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> PatchItem:
        entry = self.entries[index]
        item_dir = self.path / "items" / str(entry["id"])
        arrays = []
        for name in FILES:
            file = item_dir / name
            try:
                with Image.open(file) as im:
                    want = "RGB" if "mask" not in name else None
                    arrays.append(np.asarray(im.convert(want) if want else im))
            except (OSError, ValueError) as exc:
                raise PatchFolderError(f"{file}: cannot read patch image: {exc}") from exc
        local, context, local_mask, context_mask = arrays
        if local_mask.ndim != 2 or context_mask.ndim != 2:
            raise PatchFolderError(f"{item_dir}: masks must be single-channel label-id images")
        box = entry.get("local_box")
        item = PatchItem(
            local=local,
            context=context,
            local_mask=local_mask.astype(np.uint8),
            context_mask=context_mask.astype(np.uint8),
            offset=(int(entry["offset"][0]), int(entry["offset"][1])),
            slide=str(entry.get("slide", "")),
            level=entry.get("level"),
            mpp=entry.get("mpp"),
            local_box=Box(*(int(v) for v in box)) if box else None,
            model_id=entry.get("model_id"),
            meta=dict(entry.get("meta") or {}),
        )
        try:
            item.validate()
        except PatchFolderError as exc:
            raise PatchFolderError(f"{item_dir}: {exc}") from exc
        return item


def read_patch_folder(folder: str | Path) -> PatchFolder:
    """Open a patch folder written by :func:`write_patch_folder` (pixels load lazily).

    Raises
    ------
    PatchFolderError
        When the folder or its manifest is missing or malformed; the message names the file.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PatchFolderError(f"{manifest_path}: cannot read patch manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PATCH_FORMAT:
        raise PatchFolderError(f"{manifest_path}: not a {PATCH_FORMAT} manifest")
    if int(data.get("version", 0)) > PATCH_FORMAT_VERSION:
        raise PatchFolderError(
            f"{manifest_path}: format version {data['version']} is newer than supported "
            f"({PATCH_FORMAT_VERSION})"
        )
    try:
        palette = Palette.from_dict(data["palette"])
        entries = tuple(data["items"])
        for e in entries:
            if "id" not in e or len(e["offset"]) != 2:
                raise PatchFolderError(f"item {e!r} lacks an id or an [x, y] offset")
    except (KeyError, TypeError, PaletteError) as exc:
        raise PatchFolderError(f"{manifest_path}: malformed manifest: {exc}") from exc
    except PatchFolderError as exc:
        raise PatchFolderError(f"{manifest_path}: {exc}") from exc
    return PatchFolder(
        path=folder,
        palette=palette,
        entries=entries,
        mpp=data.get("mpp"),
        patch_size=data.get("patch_size"),
        context_factor=data.get("context_factor"),
    )
