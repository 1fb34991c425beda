"""A QuPath GeoJSON file as an outline layer over the slide (the npe2 reader's part).

The reader claims a ``.geojson`` only when it holds Polygon/MultiPolygon features
(:func:`napari_sgnet.io.importers.looks_like_geojson`) and returns one Shapes layer of the
rings (exteriors and holes as closed paths, in the file's class colours), placed on the
slide open in the current viewer (its scale and translate; slide level-0 pixel corners
map to pixel-centre coordinates minus half a pixel). Its metadata marks it as an import
(``{"napari_sgnet": {"role": "geojson-import", "path": ...}}``): the SGNet dock adopts it as
a pending edit to review and commit (:mod:`napari_sgnet._qt.geojson_drop`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet._napari.layers import LayerData
from napari_sgnet._napari.session import META_KEY, layer_role, slide_transform

__all__ = ["IMPORT_ROLE", "geojson_layer_data", "is_geojson_path"]

log = logging.getLogger(__name__)

#: ``metadata["napari_sgnet"]["role"]`` of an imported GeoJSON layer.
IMPORT_ROLE = "geojson-import"


def is_geojson_path(path: Any) -> bool:
    """True when ``path`` is a ``.geojson`` file of polygon annotations (parses it)."""
    from napari_sgnet.io.importers import looks_like_geojson

    try:
        return Path(path).suffix.lower() == ".geojson" and looks_like_geojson(path)
    except TypeError:
        return False


def _class_colours(path: Path) -> list[Any]:
    """The ``classification.color`` of every feature (``None`` when missing)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return []
    feats = doc.get("features", []) if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    out = []
    for f in feats if isinstance(feats, list) else []:
        cls = (f.get("properties") or {}).get("classification") if isinstance(f, dict) else None
        colour = cls.get("color") if isinstance(cls, dict) else None
        ok = isinstance(colour, list) and len(colour) == 3
        out.append((*(int(v) / 255 for v in colour), 1.0) if ok else None)
    return out


def _slide_placement() -> tuple[tuple[float, float], tuple[float, float]]:
    """Scale and translate of the slide in the current viewer (identity when none)."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # no viewer (headless reader call)
        viewer = None
    if viewer is not None:
        for layer in viewer.layers:
            if isinstance(layer, Image) and layer_role(layer) is None:
                return slide_transform(layer)
    return (1.0, 1.0), (0.0, 0.0)


def geojson_layer_data(path: str | Path) -> LayerData:
    """The outline Shapes layer of a GeoJSON file (see the module doc)."""
    from napari_sgnet.io.importers import read_geojson

    path = Path(path)
    annotations = read_geojson(path)  # classes are checked when the dock adopts it
    colours = _class_colours(path)
    shapes, edge = [], []
    for feature in annotations.features:
        c = colours[feature.index] if feature.index < len(colours) else None
        for part in feature.parts:
            for ring in part.rings:
                closed = np.concatenate([ring, ring[:1]])
                shapes.append(closed[:, ::-1] - 0.5)  # (y, x), pixel-centre coordinates
                edge.append(c or (1.0, 1.0, 0.0, 1.0))
    scale, translate = _slide_placement()
    kwargs = {
        "name": f"QuPath: {path.name}",
        "shape_type": "path",
        "edge_color": edge,
        "edge_width": 2.0 * max(scale),
        "scale": scale,
        "translate": translate,
        "metadata": {
            META_KEY: {
                "role": IMPORT_ROLE,
                "path": str(path),
                "sha256": annotations.sha256,
                "features": len(annotations.features),
            }
        },
    }
    log.info("read %d annotation(s) from %s", len(annotations.features), path)
    return shapes, kwargs, "shapes"
