"""npe2 writers: save a Labels layer as OME-Zarr labels, GeoJSON (QuPath) or a label TIFF.

Each writer turns the layer into a :class:`~napari_sgnet.io.exporters.LabelSource`
(:func:`source_from_layer`) and writes it through the export table
(:func:`napari_sgnet.app.exports.run_export`), as the CLI and the dock do. Placement
on the slide, in order of preference:

1. ``metadata["napari_sgnet"]`` with ``base_downsample`` (and ``mpp``), or with the
   ``store`` the layer shows (this plugin's prediction and edit layers): the store's
   downsample, µm/px and slide size;
2. physical units (µm, nm, mm): the layer is taken to be at the slide's resolution,
   with µm/px = its scale;
3. pixel units: world coordinates are slide level-0 pixels, so the scale is the downsample.

The layer's ``translate`` becomes the offset on the slide (napari centres pixels on
their coordinates; a store layer placed with the store's half-pixel shift gets offset 0).
The palette is ``metadata["napari_sgnet"]["palette"]`` or the Gleason palette.
napari's save dialog confirms replacing a file, so these writers replace an existing
output, but never a label store or a folder that is not an OME-Zarr group.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sgnet.app.exports import run_export
from napari_sgnet.errors import UserInputError
from napari_sgnet.io.exporters import LabelSource
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.palette import GLEASON, Palette

__all__ = ["source_from_layer", "write_geojson", "write_omezarr", "write_tiff"]

log = logging.getLogger(__name__)

META_KEY = "napari_sgnet"
_UNIT_UM = {
    "micrometer": 1.0, "micrometre": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "μm": 1.0,
    "nanometer": 1e-3, "nanometre": 1e-3, "nm": 1e-3,
    "millimeter": 1e3, "millimetre": 1e3, "mm": 1e3,
}  # fmt: skip


def _unit_um(units: Any) -> float | None:
    """µm per world unit of the x axis, or ``None`` for pixels / unknown units."""
    if units is None:
        return None
    unit = units[-1] if isinstance(units, (list, tuple)) else units
    return _UNIT_UM.get(str(unit).strip().lower()) if unit is not None else None


def _squeeze2d(array: Any) -> Any:
    """Drop leading singleton axes; labels must be 2-D to export."""
    while len(array.shape) > 2 and array.shape[0] == 1:
        array = array[0]
    if len(array.shape) != 2:
        raise UserInputError(f"only 2-D labels can be exported, got shape {tuple(array.shape)}")
    return array


def _snap(v: float) -> float:
    return float(round(v)) if abs(v - round(v)) < 1e-6 else float(v)


def _store_placement(md: dict[str, Any]) -> dict[str, Any]:
    """Downsample, µm/px and slide size from the metadata or the store the layer shows."""
    if "base_downsample" in md:
        size = md.get("slide_size")
        return {
            "base": float(md["base_downsample"]),
            "mpp": md.get("mpp"),
            "size": tuple(size) if size else None,
        }
    store_path = md.get("store")
    if store_path and LabelStore.is_store(store_path):
        store = LabelStore.open(store_path, mode="r")
        ident = store.slide_identity
        size = (ident.get("width"), ident.get("height"))
        return {
            "base": store.base_downsample,
            "mpp": ident.get("mpp"),
            "size": size if None not in size else None,
        }
    return {}


def source_from_layer(data: Any, meta: dict[str, Any]) -> LabelSource:
    """A :class:`LabelSource` from a Labels layer's ``(data, meta)`` (see module doc)."""
    md = dict((meta.get("metadata") or {}).get(META_KEY) or {})
    palette = Palette.from_dict(md["palette"]) if "palette" in md else GLEASON
    multiscale = bool(meta.get("multiscale")) or (
        isinstance(data, Sequence) and not isinstance(data, np.ndarray)
    )
    levels = [_squeeze2d(a) for a in data] if multiscale else _squeeze2d(data)
    sy, sx = (float(v) for v in (meta.get("scale") or (1.0, 1.0))[-2:])
    ty, tx = (float(v) for v in (meta.get("translate") or (0.0, 0.0))[-2:])
    if not math.isclose(sy, sx, rel_tol=1e-3):
        raise UserInputError(f"labels with anisotropic scale ({sy}, {sx}) cannot be exported")
    unit_um = _unit_um(meta.get("units"))
    place = _store_placement(md)
    if place:
        base, mpp, size = place["base"], place["mpp"], place["size"]
        if mpp is None and unit_um is not None:
            mpp = sx * unit_um / base
    elif unit_um is not None:
        base, mpp, size = 1.0, sx * unit_um, None
    else:
        base, mpp, size = sx, None, None
    s0 = sx / base  # world units per slide level-0 pixel
    offset = (_snap(tx / s0 + 0.5 - 0.5 * base), _snap(ty / s0 + 0.5 - 0.5 * base))
    return LabelSource.from_array(
        levels,
        palette,
        mpp=mpp,
        base_downsample=base,
        offset=offset,
        slide_size=(int(size[0]), int(size[1])) if size else None,
        name=str(meta.get("name") or "labels"),
        provenance={"napari_layer": str(meta.get("name") or ""), **md},
    )


def _write(kind: str, path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a layer's labels as ``kind`` of the export table, replacing ``path``."""
    run_export(kind, source_from_layer(data, meta), path, overwrite=True)
    return [str(path)]


def write_omezarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer as an OME-Zarr (NGFF 0.5) image-label group."""
    return _write("ome-zarr", path, data, meta)


def write_geojson(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer's class polygons as QuPath GeoJSON (slide level-0 pixels)."""
    return _write("geojson", path, data, meta)


def write_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer as a tiled pyramidal OME-TIFF of label ids."""
    return _write("tiff", path, data, meta)
