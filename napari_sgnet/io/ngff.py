"""The one OME-NGFF (0.4 and 0.5) metadata builder and parser.

Every NGFF group napari-sgnet writes (the label store, OME-Zarr label exports, the
synthetic slide writer's images and labels) gets its attributes from
:func:`multiscale_attributes` and :func:`labels_attributes`, and every NGFF group it
reads (the OME-Zarr slide reader, the label-export reader, store validation) is
parsed by :func:`parse_multiscale` and :func:`parse_image_label`. Both sides work on
plain values (:class:`Axis`, :class:`Dataset`, :class:`Multiscale`,
:class:`ImageLabel`); nothing here touches zarr, so any caller can build the
attributes first and write them wherever its group lives.

Conventions (the same in every output):

- NGFF 0.5 nests everything under ``"ome"`` with ``"version": "0.5"`` (zarr v3);
  NGFF 0.4 puts ``multiscales`` (and ``image-label``) at the top with per-object
  ``"version": "0.4"`` (zarr v2).
- Label value 0 means "no label": its colour is transparent ``[0, 0, 0, 0]`` and its
  property is ``{"label-value": 0, "class": "no label"}``; palette class ``k`` is label
  value ``k + 1`` with its colour (alpha 255) and ``{"class": <name>}``. Every colour has
  a property with the same label value, as the spec's validators require.
- Label pyramids place each level's pixel centres where the slide's are: level pixel
  ``i`` of a level with factor ``f`` (slide level-0 pixels per pixel) has its centre at
  slide pixel ``offset + i * f + (f - 1) / 2`` (see :func:`level_datasets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from napari_sgnet.palette import ClassInfo, Palette, PaletteError

__all__ = [
    "CLASS_KEY",
    "NGFF_VERSIONS",
    "NO_LABEL",
    "Axis",
    "Dataset",
    "ImageLabel",
    "Multiscale",
    "NgffVersion",
    "check_version",
    "label_multiscale",
    "labels_attributes",
    "level_datasets",
    "multiscale_attributes",
    "ngff_version",
    "ome_attributes",
    "parse_image_label",
    "parse_labels",
    "parse_multiscale",
    "spatial_axes",
]

NgffVersion = Literal["0.4", "0.5"]
#: NGFF versions napari-sgnet writes (0.4 on zarr v2, 0.5 on zarr v3).
NGFF_VERSIONS: tuple[NgffVersion, ...] = ("0.4", "0.5")
#: The image-label property key that carries a label value's class name.
CLASS_KEY = "class"
#: The class name of label value 0.
NO_LABEL = "no label"
#: ``metadata.method`` of napari-sgnet's label pyramids (``type`` is ``"mode"``).
MODE_METHOD = "2x2 mode preferring non-zero labels, ties to smaller id"
#: Axis names of NGFF < 0.4 data, which had no ``axes``, by number of dimensions.
_IMPLICIT_AXES = {2: "yx", 3: "cyx", 4: "czyx", 5: "tczyx"}

#: JSON-like attribute dictionaries.
Attrs = dict[str, Any]
RGBA = tuple[int, int, int, int]


def check_version(version: str) -> NgffVersion:
    """``version`` as an :data:`NgffVersion`, or ``ValueError`` naming the supported ones."""
    if version not in NGFF_VERSIONS:
        raise ValueError(f"NGFF version must be one of {NGFF_VERSIONS}, got {version!r}")
    return cast(NgffVersion, version)


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Axis:
    """One NGFF axis: a name, an optional type (space, channel, time) and unit."""

    name: str
    type: str | None = None
    unit: str | None = None

    def to_dict(self) -> Attrs:
        """The axis as NGFF JSON."""
        out: Attrs = {"name": self.name}
        if self.type is not None:
            out["type"] = self.type
        if self.unit is not None:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True)
class Dataset:
    """One multiscale level: its array path, scale and optional translation per axis."""

    path: str
    scale: tuple[float, ...] | None
    translation: tuple[float, ...] | None = None

    def to_dict(self) -> Attrs:
        """The dataset as NGFF JSON (a dataset written by napari-sgnet always has a scale)."""
        if self.scale is None:
            raise ValueError(f"dataset {self.path!r} needs a scale to be written")
        transforms: list[Attrs] = [{"type": "scale", "scale": list(self.scale)}]
        if self.translation is not None:
            transforms.append({"type": "translation", "translation": list(self.translation)})
        return {"path": self.path, "coordinateTransformations": transforms}


@dataclass(frozen=True)
class Multiscale:
    """An NGFF ``multiscales`` entry.

    Parameters
    ----------
    axes : tuple of Axis
        Axes, slowest first. Parsed metadata without ``axes`` (NGFF < 0.4) gets the
        implicit names of its dimensionality.
    datasets : tuple of Dataset
        Levels, largest first.
    name : str, optional
        Multiscale name.
    type : str, optional
        Downscaling method (``"mode"`` for label pyramids).
    metadata : dict, optional
        Free-form details of the downscaling.
    scale : tuple of float, optional
        A scale that applies to every dataset (multiscale-level transformation).
    """

    axes: tuple[Axis, ...]
    datasets: tuple[Dataset, ...]
    name: str | None = None
    type: str | None = None
    metadata: Mapping[str, Any] | None = field(default=None, compare=False)
    scale: tuple[float, ...] | None = None

    @property
    def axis_names(self) -> tuple[str, ...]:
        """Axis names, in order."""
        return tuple(a.name for a in self.axes)

    def level_scale(self, level: int) -> tuple[float, ...] | None:
        """Dataset ``level``'s scale times the multiscale-level scale, when both fit the axes."""
        scale = self.datasets[level].scale
        if scale is None or len(scale) != len(self.axes):
            return None
        if self.scale is not None and len(self.scale) == len(scale):
            scale = tuple(a * b for a, b in zip(scale, self.scale, strict=True))
        return scale

    def to_dict(self, version: NgffVersion) -> Attrs:
        """The multiscale as NGFF JSON for ``version``."""
        out: Attrs = {
            "axes": [a.to_dict() for a in self.axes],
            "datasets": [d.to_dict() for d in self.datasets],
        }
        if self.name is not None:
            out["name"] = self.name
        if self.type is not None:
            out["type"] = self.type
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.scale is not None:
            out["coordinateTransformations"] = [{"type": "scale", "scale": list(self.scale)}]
        if version == "0.4":
            out["version"] = "0.4"
        return out


@dataclass(frozen=True)
class ImageLabel:
    """NGFF ``image-label`` metadata: colours and properties per label value, and the source.

    Parameters
    ----------
    colors : tuple of (int, RGBA)
        ``(label value, (r, g, b, a))`` pairs, 0-255.
    properties : tuple of dict
        One mapping per label value: ``"label-value"`` and further keys
        (napari-sgnet writes :data:`CLASS_KEY`).
    source_image : str, optional
        Relative path to the image the labels belong to (``"../../"`` inside an image).
    """

    colors: tuple[tuple[int, RGBA], ...] = ()
    properties: tuple[Mapping[str, Any], ...] = ()
    source_image: str | None = None

    @classmethod
    def from_palette(cls, palette: Palette, source_image: str | None = None) -> ImageLabel:
        """Colours and class names of ``palette``, with label 0 as transparent "no label"."""
        colors: list[tuple[int, RGBA]] = [(0, (0, 0, 0, 0))]
        properties: list[Mapping[str, Any]] = [{"label-value": 0, CLASS_KEY: NO_LABEL}]
        for i, cls_info in enumerate(palette.classes, start=1):
            r, g, b = (int(v) for v in cls_info.color)
            colors.append((i, (r, g, b, 255)))
            properties.append({"label-value": i, CLASS_KEY: cls_info.name})
        return cls(tuple(colors), tuple(properties), source_image)

    def class_names(self) -> dict[int, str]:
        """``{label value: class name}`` of the properties that carry one."""
        out: dict[int, str] = {}
        for prop in self.properties:
            value, name = prop.get("label-value"), prop.get(CLASS_KEY)
            if isinstance(value, int) and isinstance(name, str):
                out[value] = name
        return out

    def to_palette(self, name: str = "imported") -> Palette:
        """The palette of label values ``1..n`` (value 0 is "no label").

        Raises
        ------
        PaletteError
            When the non-zero label values are not ``1..n``.
        """
        colors = dict(self.colors)
        names = self.class_names()
        ids = sorted(v for v in set(colors) | set(names) if v > 0)
        if not ids or ids != list(range(1, len(ids) + 1)):
            raise PaletteError(f"label values {ids} are not 1..n")
        classes = []
        for i in ids:
            r, g, b, _ = colors.get(i, (128, 128, 128, 255))
            classes.append(ClassInfo(names.get(i, f"label {i}"), (r, g, b)))
        return Palette(name, tuple(classes))

    def to_dict(self, version: NgffVersion) -> Attrs:
        """The image-label as NGFF JSON for ``version``."""
        out: Attrs = {}
        if version == "0.4":
            out["version"] = "0.4"
        if self.colors:
            out["colors"] = [{"label-value": v, "rgba": list(rgba)} for v, rgba in self.colors]
        if self.properties:
            out["properties"] = [dict(p) for p in self.properties]
        if self.source_image is not None:
            out["source"] = {"image": self.source_image}
        return out


# --------------------------------------------------------------------------- building
def spatial_axes(unit: str | None, *, channel: bool = False) -> tuple[Axis, ...]:
    """``y, x`` space axes with ``unit`` (``None``: pixels), after a ``c`` axis if ``channel``."""
    yx = (Axis("y", "space", unit), Axis("x", "space", unit))
    return (Axis("c", "channel"), *yx) if channel else yx


def level_datasets(
    factors: Sequence[float],
    step: float,
    *,
    centred: bool = False,
    offset: tuple[float, float] = (0.0, 0.0),
    leading: Sequence[float] = (),
) -> tuple[Dataset, ...]:
    """Datasets ``"0", "1", ...`` of a 2-D pyramid.

    Parameters
    ----------
    factors : sequence of float
        Level-0 pixels (of the frame the scales refer to) per pixel of each level.
    step : float
        Physical size of one level-0 pixel (µm/px, or 1 for pixel units).
    centred : bool
        Add translations that put each level's pixel centres where the level-0 pixels
        they cover have theirs: ``(offset + (f - 1) / 2) * step`` on y and x. Omitted
        for levels where it is zero.
    offset : tuple of float
        ``(x, y)`` of level 0's top-left pixel corner, in level-0 pixels (with ``centred``).
    leading : sequence of float
        Scales of axes before ``y, x`` (``(1.0,)`` for a channel axis); their translation is 0.
    """
    out = []
    for k, f in enumerate(factors):
        scale = (*(float(v) for v in leading), float(f) * step, float(f) * step)
        translation = None
        if centred:
            ty = (offset[1] + (f - 1.0) / 2.0) * step
            tx = (offset[0] + (f - 1.0) / 2.0) * step
            if ty != 0 or tx != 0:
                translation = (*(0.0 for _ in leading), float(ty), float(tx))
        out.append(Dataset(str(k), scale, translation))
    return tuple(out)


def label_multiscale(
    name: str,
    factors: Sequence[float],
    mpp: float | None,
    *,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Multiscale:
    """The multiscale of a 2-D label pyramid made by 2 x 2 modes, placed on its slide.

    Parameters
    ----------
    name : str
        Multiscale name.
    factors : sequence of float
        Slide level-0 pixels per pixel of each level.
    mpp : float or None
        µm/px of the slide's level 0: scales are in µm when known, else slide pixels.
    offset : tuple of float
        ``(x, y)`` of level 0's top-left corner in slide level-0 pixels.
    """
    step = mpp if mpp is not None else 1.0
    return Multiscale(
        axes=spatial_axes("micrometer" if mpp is not None else None),
        datasets=level_datasets(factors, step, centred=True, offset=offset),
        name=name,
        type="mode",
        metadata={"method": MODE_METHOD},
    )


def multiscale_attributes(
    multiscale: Multiscale,
    version: str,
    *,
    image_label: ImageLabel | None = None,
    omero: Mapping[str, Any] | None = None,
) -> Attrs:
    """The group attributes of an NGFF image (or, with ``image_label``, a label image).

    Parameters
    ----------
    multiscale : Multiscale
        The one multiscale of the group.
    version : {"0.4", "0.5"}
        NGFF version; 0.5 nests everything under ``"ome"``.
    image_label : ImageLabel, optional
        Makes the group a label image.
    omero : dict, optional
        OMERO rendering settings (for images).

    Returns
    -------
    dict
        Ready for ``group.attrs.update``.
    """
    v = check_version(version)
    ome: Attrs = {"multiscales": [multiscale.to_dict(v)]}
    if omero is not None:
        ome["omero"] = dict(omero)
    if image_label is not None:
        ome["image-label"] = image_label.to_dict(v)
    return ome if v == "0.4" else {"ome": {"version": "0.5", **ome}}


def labels_attributes(names: Sequence[str], version: str) -> Attrs:
    """The attributes of an NGFF ``labels`` group listing the label images ``names``."""
    v = check_version(version)
    listing: Attrs = {"labels": list(names)}
    return listing if v == "0.4" else {"ome": {"version": "0.5", **listing}}


# --------------------------------------------------------------------------- parsing
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
