"""Class palettes: names and colours shared by every layer and export.

Label id 0 means "no label" (transparent, ignored in training); model class ``k``
is label id ``k + 1``.

**Glass is label 0.** Pixels the tissue mask calls glass (see
:mod:`napari_sgnet.inference.tissue`) are written as 0, "no label", never as a class:
transparent in the overlay, no polygon in GeoJSON, 0 in TIFF and OME-Zarr. So label 0
means "glass, or not predicted yet" (the store's done-map tells which tiles were run);
:data:`NO_LABEL_MEANING` says so in the exports (the OME-Zarr ``image-label`` property of
value 0, the TIFF's label map, the GeoJSON's ``napari_sgnet`` record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sgnet.errors import UserInputError

__all__ = [
    "GLASS_LABEL",
    "GLEASON",
    "NO_LABEL",
    "NO_LABEL_MEANING",
    "ClassInfo",
    "Palette",
    "PaletteError",
    "load_palette",
]

#: The label id of "no label".
NO_LABEL = 0
#: The label id glass pixels get: "no label" (no palette has a glass class).
GLASS_LABEL = NO_LABEL
#: What label 0 means, written beside the palette in stores and exports.
NO_LABEL_MEANING = "no label: glass (no tissue) or not predicted; transparent"


class PaletteError(UserInputError):
    """A palette file or description is invalid."""


@dataclass(frozen=True)
class ClassInfo:
    """One segmentation class.

    Parameters
    ----------
    name : str
        Human-readable name, used as QuPath classification name.
    color : tuple of int
        RGB colour, 0-255.
    """

    name: str
    color: tuple[int, int, int]

    def hex(self) -> str:
        """Colour as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass(frozen=True)
class Palette:
    """An ordered set of classes; class index ``k`` is label id ``k + 1``."""

    name: str
    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise PaletteError(f"palette {self.name!r} has no classes")
        if len(self.classes) > 254:
            raise PaletteError(f"palette {self.name!r} has {len(self.classes)} classes; max 254")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise PaletteError(f"palette {self.name!r} has duplicate class names: {names}")
        for c in self.classes:
            if len(c.color) != 3 or not all(0 <= int(v) <= 255 for v in c.color):
                raise PaletteError(f"class {c.name!r} colour {c.color} is not RGB 0-255")

    @property
    def num_classes(self) -> int:
        """Number of model classes (label ids ``1..num_classes``)."""
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Class names in class-index order."""
        return [c.name for c in self.classes]

    def label_of(self, name: str) -> int:
        """Label id of the class called ``name``."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i + 1
        raise KeyError(f"no class named {name!r} in palette {self.name!r}")

    def class_of_label(self, label: int) -> ClassInfo | None:
        """The class of a label id, ``None`` for 0 (no label)."""
        if label == 0:
            return None
        return self.classes[label - 1]

    def napari_colors(self, opacity: float = 1.0) -> dict[int | None, tuple[float, ...]]:
        """A ``{label: RGBA}`` mapping for napari's ``DirectLabelColormap``."""
        colors: dict[int | None, tuple[float, ...]] = {
            None: (0.0, 0.0, 0.0, 0.0),
            0: (0.0, 0.0, 0.0, 0.0),
        }
        for i, c in enumerate(self.classes):
            colors[i + 1] = (c.color[0] / 255, c.color[1] / 255, c.color[2] / 255, opacity)
        return colors

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (part of a checkpoint's architecture hash: keep it
        to the classes; what label 0 means is :data:`NO_LABEL_MEANING`)."""
        return {
            "name": self.name,
            "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Palette:
        """Inverse of :meth:`to_dict`; raises :class:`PaletteError` on malformed input."""
        try:
            classes = tuple(
                ClassInfo(str(c["name"]), tuple(int(v) for v in c["color"]))  # type: ignore[arg-type]
                for c in data["classes"]
            )
            return cls(str(data.get("name", "custom")), classes)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PaletteError):
                raise
            raise PaletteError(f"malformed palette description: {exc}") from exc

    def same_classes(self, other: Palette) -> bool:
        """True when both palettes have the same class names in the same order."""
        return self.names == other.names


#: The Gleason classes. Class 0 keeps the name "Stroma/background" that the bundled models
#: were trained with (their training data, the synthetic slides, label glass and stroma 1, and
#: the name is saved in each checkpoint's palette and checked against stores and fine-tuning
#: data), so a model may still call a missed bit of glass that; glass found by the tissue
#: mask is label 0, never this class.
GLEASON = Palette(
    "gleason",
    (
        ClassInfo("Stroma/background", (196, 160, 190)),
        ClassInfo("Benign", (60, 180, 75)),
        ClassInfo("Gleason 3", (255, 225, 25)),
        ClassInfo("Gleason 4", (245, 130, 48)),
        ClassInfo("Gleason 5", (230, 25, 75)),
    ),
)


def load_palette(path: str | Path) -> Palette:
    """Load a palette from a JSON file ``{"name": ..., "classes": [{"name", "color"}]}``.

    Raises
    ------
    PaletteError
        If the file is missing, not JSON, or malformed; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PaletteError(f"{path}: cannot read palette: {exc}") from exc
    try:
        return Palette.from_dict(data)
    except PaletteError as exc:
        raise PaletteError(f"{path}: {exc}") from exc
