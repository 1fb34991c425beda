"""The export options form: a magicgui form per export kind that takes options.

The options are the export table's (:data:`napari_sgnet.app.exports.EXPORTS`, the same
ones ``napari-sgnet export`` takes); :meth:`ExportOptions.values` gives the keyword
arguments for :func:`napari_sgnet.app.exports.run_export`, leaving a writer's default
where the form's value means "default".
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox

from napari_sgnet.app.exports import EXPORTS

__all__ = ["ExportOptions"]


def _geojson_form() -> Container:
    return Container(widgets=[
        CheckBox(name="skip_background", value=False, text="Leave out the first class",
                 tooltip="No polygons for Stroma/background."),
        CheckBox(name="split", value=False, text="One feature per region",
                 tooltip="One GeoJSON feature per connected region, not one per class."),
        CheckBox(name="measurements", value=False, text="Area and mean confidence",
                 tooltip="Add area (µm²) and mean confidence to each feature."),
        FloatSpinBox(name="simplify", label="Simplify (µm)", value=0.0, min=0.0, max=100.0,
                     step=0.5, tooltip="Outline tolerance in µm; 0 keeps exact outlines."),
        FloatSpinBox(name="min_area", label="Min. area (px²)", value=0.0, min=0.0, max=1e9,
                     step=10.0, tooltip="Drop polygons smaller than this (slide pixels²)."),
    ], labels=True)


def _patches_form() -> Container:
    return Container(widgets=[
        ComboBox(name="masks", label="Label", value="edited", choices=["edited", "all"],
                 tooltip="edited: only corrected pixels; all: every labelled pixel."),
        ComboBox(name="layout", label="Layout", value="items", choices=["items", "pairs"],
                 tooltip="items: items/<id>/ folders and a manifest; pairs: images/ + "
                 "masks/ PNGs with patches.csv."),
    ], labels=True)


class ExportOptions:
    """One magicgui form per export kind with options (GeoJSON, training patches)."""

    def __init__(self) -> None:
        self.forms: dict[str, Container] = {"geojson": _geojson_form(),
                                            "patches": _patches_form()}
        for kind, form in self.forms.items():
            unknown = {w.name for w in form} - set(EXPORTS[kind].options)
            if unknown:  # pragma: no cover - a programming error, caught by the tests
                raise ValueError(f"{kind} takes no option {sorted(unknown)}")

    def values(self, kind: str) -> dict[str, Any]:
        """Keyword options of ``kind`` for ``run_export`` (empty for kinds without a form)."""
        form = self.forms.get(kind)
        if form is None:
            return {}
        out = {w.name: w.value for w in form}
        if kind == "geojson" and not out.get("simplify"):
            out["simplify"] = None  # exact outlines
        return out
