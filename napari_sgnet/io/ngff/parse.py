"""NGFF parser: multiscales, image-label and ``labels`` listings from group attributes.

Tolerant of older data (NGFF 0.3 axis names, no ``axes`` before 0.4); malformed
metadata raises ``ValueError`` with what is wrong, for callers to wrap in a typed
error naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari_sgnet.io.ngff.values import RGBA, Attrs, Axis, Dataset, ImageLabel, Multiscale

__all__ = [
    "ngff_version",
    "ome_attributes",
    "parse_image_label",
    "parse_labels",
    "parse_multiscale",
]

#: Axis names of NGFF < 0.4 data, which had no ``axes``, by number of dimensions.
_IMPLICIT_AXES = {2: "yx", 3: "cyx", 4: "czyx", 5: "tczyx"}


def ome_attributes(attrs: Mapping[str, Any]) -> Attrs:
    """The NGFF part of a group's attributes: ``attrs["ome"]`` (0.5) or ``attrs`` (<= 0.4)."""
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, Mapping) else dict(attrs)


def ngff_version(attrs: Mapping[str, Any]) -> str | None:
    """The NGFF version the attributes declare (0.5: ``ome.version``; 0.4: per multiscale)."""
    ome = ome_attributes(attrs)
    if ome.get("version"):
        return str(ome["version"])
    for key in ("multiscales", "image-label"):
        entry = ome.get(key)
        if isinstance(entry, list):
            entry = entry[0] if entry else None
        if isinstance(entry, Mapping) and entry.get("version"):
            return str(entry["version"])
    return None


def _floats(values: Any, what: str) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{what} is not a list of numbers: {values!r}")
    return tuple(float(v) for v in values)


def _transforms(raw: Any, what: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(scale, translation)`` of a list of coordinate transformations (first of each)."""
    scale = translation = None
    if raw is None:
        return None, None
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ValueError(f"{what} coordinateTransformations is not a list")
    for t in raw:
        if not isinstance(t, Mapping):
            raise ValueError(f"{what} has a coordinate transformation that is not an object")
        if t.get("type") == "scale" and scale is None and "scale" in t:
            scale = _floats(t["scale"], f"{what} scale")
        elif t.get("type") == "translation" and translation is None and "translation" in t:
            translation = _floats(t["translation"], f"{what} translation")
    return scale, translation


def _axis(raw: Any) -> Axis:
    if isinstance(raw, str):  # NGFF 0.3: axes were names
        return Axis(raw)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ValueError(f"axis {raw!r} has no name")
    kind, unit = raw.get("type"), raw.get("unit")
    return Axis(raw["name"], str(kind) if kind else None, str(unit) if unit else None)


def parse_multiscale(attrs: Mapping[str, Any], index: int = 0) -> Multiscale:
    """Multiscale ``index`` of a group's attributes (NGFF 0.4 / 0.5; older data tolerated).

    Raises
    ------
    ValueError
        When there is no such multiscale or it is malformed; the message says what.
    """
    entries = ome_attributes(attrs).get("multiscales")
    if not isinstance(entries, list) or len(entries) <= index:
        raise ValueError("no OME-NGFF 'multiscales' metadata")
    raw = entries[index]
    if not isinstance(raw, Mapping):
        raise ValueError("'multiscales' entry is not an object")
    raw_sets = raw.get("datasets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise ValueError("multiscales lists no datasets")
    datasets = []
    for d in raw_sets:
        if not isinstance(d, Mapping) or not isinstance(d.get("path"), str):
            raise ValueError(f"dataset {d!r} has no path")
        scale, translation = _transforms(d.get("coordinateTransformations"), f"dataset {d['path']}")
        datasets.append(Dataset(d["path"], scale, translation))
    raw_axes = raw.get("axes")
    if raw_axes is None:
        ndim = len(datasets[0].scale or ()) or 5
        axes = tuple(Axis(n) for n in _IMPLICIT_AXES.get(ndim, ""))
    elif isinstance(raw_axes, list):
        axes = tuple(_axis(a) for a in raw_axes)
    else:
        raise ValueError("multiscales 'axes' is not a list")
    outer, _ = _transforms(raw.get("coordinateTransformations"), "multiscale")
    name, kind, meta = raw.get("name"), raw.get("type"), raw.get("metadata")
    return Multiscale(
        axes=axes,
        datasets=tuple(datasets),
        name=str(name) if name is not None else None,
        type=str(kind) if kind is not None else None,
        metadata=dict(meta) if isinstance(meta, Mapping) else None,
        scale=outer,
    )


def _rgba(raw: Any) -> RGBA:
    values = tuple(int(v) for v in raw)
    if len(values) != 4:
        raise ValueError(f"rgba {raw!r} does not have 4 values")
    return values[0], values[1], values[2], values[3]


def parse_image_label(attrs: Mapping[str, Any]) -> ImageLabel | None:
    """The ``image-label`` metadata of a group's attributes, or ``None`` when it has none.

    Raises
    ------
    ValueError
        When ``image-label`` is present but malformed.
    """
    raw = ome_attributes(attrs).get("image-label")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("'image-label' is not an object")
    colors = []
    for c in raw.get("colors") or []:
        if not isinstance(c, Mapping) or not isinstance(c.get("label-value"), int):
            raise ValueError(f"image-label colour {c!r} has no integer label-value")
        colors.append((int(c["label-value"]), _rgba(c.get("rgba") or (0, 0, 0, 0))))
    properties = []
    for p in raw.get("properties") or []:
        if not isinstance(p, Mapping) or not isinstance(p.get("label-value"), int):
            raise ValueError(f"image-label property {p!r} has no integer label-value")
        properties.append(dict(p))
    source = raw.get("source")
    image = source.get("image") if isinstance(source, Mapping) else None
    return ImageLabel(tuple(colors), tuple(properties), str(image) if image is not None else None)


def parse_labels(attrs: Mapping[str, Any]) -> list[str]:
    """The label image names a ``labels`` group lists (empty when it lists none)."""
    names = ome_attributes(attrs).get("labels")
    return [str(n) for n in names] if isinstance(names, list) else []
