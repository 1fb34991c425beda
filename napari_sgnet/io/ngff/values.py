"""NGFF values: axes, datasets, multiscales and image-label metadata, with constants.

Plain frozen dataclasses that :mod:`.build` turns into group attributes and
:mod:`.parse` reads back; see the package docstring for the conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from napari_sgnet.palette import NO_LABEL_MEANING, ClassInfo, Palette, PaletteError

__all__ = [
    "CLASS_KEY",
    "LEGACY_CLASS_KEYS",
    "MODE_METHOD",
    "NGFF_VERSIONS",
    "NO_LABEL",
    "RGBA",
    "Attrs",
    "Axis",
    "Dataset",
    "ImageLabel",
    "Multiscale",
    "NgffVersion",
    "check_version",
]

NgffVersion = Literal["0.4", "0.5"]
#: NGFF versions napari-sgnet writes (0.4 on zarr v2, 0.5 on zarr v3).
NGFF_VERSIONS: tuple[NgffVersion, ...] = ("0.4", "0.5")
#: The image-label property key that carries a label value's class name.
CLASS_KEY = "class"
#: Property keys read as the class name when :data:`CLASS_KEY` is absent (older files).
LEGACY_CLASS_KEYS = ("name",)
#: The class name of label value 0.
NO_LABEL = "no label"
#: ``metadata.method`` of napari-sgnet's label pyramids (``type`` is ``"mode"``).
MODE_METHOD = "2x2 mode preferring non-zero labels, ties to smaller id"

#: JSON-like attribute dictionaries.
Attrs = dict[str, Any]
RGBA = tuple[int, int, int, int]


def check_version(version: str) -> NgffVersion:
    """``version`` as an :data:`NgffVersion`, or ``ValueError`` naming the supported ones."""
    if version == "0.4":
        return "0.4"
    if version == "0.5":
        return "0.5"
    raise ValueError(f"NGFF version must be one of {NGFF_VERSIONS}, got {version!r}")


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
        properties: list[Mapping[str, Any]] = [
            {"label-value": 0, CLASS_KEY: NO_LABEL, "description": NO_LABEL_MEANING}
        ]
        for i, cls_info in enumerate(palette.classes, start=1):
            r, g, b = (int(v) for v in cls_info.color)
            colors.append((i, (r, g, b, 255)))
            properties.append({"label-value": i, CLASS_KEY: cls_info.name})
        return cls(tuple(colors), tuple(properties), source_image)

    def class_names(self) -> dict[int, str]:
        """``{label value: class name}`` of the properties that carry one.

        The name is read from :data:`CLASS_KEY`, else from an older key
        (:data:`LEGACY_CLASS_KEYS`: files written before the keys were unified).
        """
        out: dict[int, str] = {}
        for prop in self.properties:
            value = prop.get("label-value")
            name = next(
                (prop[k] for k in (CLASS_KEY, *LEGACY_CLASS_KEYS) if isinstance(prop.get(k), str)),
                None,
            )
            if isinstance(value, int) and name is not None:
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
