"""The one export table: every way labels leave napari-sgnet, with one spelling per kind.

Each :class:`ExportFormat` row names a kind (``"ome-zarr"``, ``"geojson"``, ``"tiff"``,
``"patches"``, ``"probabilities"``), the suffix of its default file name, the file-dialog
filter, the options it takes and the function that writes it. The CLI's ``export`` command
(its ``--format`` choices and options), the dock's export buttons and dialogs, the
headless demo and the npe2 writers (``napari_sgnet._napari.writer``) all go through
:data:`EXPORTS` and :func:`run_export`; nothing here imports Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_sgnet.app.store_paths import STORE_SUFFIX, slide_stem
from napari_sgnet.errors import OptionError

if TYPE_CHECKING:
    from napari_sgnet.io.pyramid import Pyramid

__all__ = [
    "DOCK_EXPORT_KINDS",
    "EXPORTS",
    "EXPORT_KINDS",
    "ExportFormat",
    "default_export_path",
    "export_format",
    "run_export",
]

Progress = Callable[[int, int], None]


def _omezarr(labels: Any, path: Path, **kw: Any) -> Path:
    from napari_sgnet.io.exporters import export_omezarr

    return Path(export_omezarr(labels, path, **kw))


def _probabilities(labels: Any, path: Path, **kw: Any) -> Path:
    from napari_sgnet.io.exporters.probabilities import export_probabilities

    return Path(export_probabilities(labels, path, **kw))


def _geojson(labels: Any, path: Path, **kw: Any) -> Path:
    from napari_sgnet.io.exporters import export_geojson

    return Path(export_geojson(labels, path, **kw))


def _tiff(labels: Any, path: Path, **kw: Any) -> Path:
    from napari_sgnet.io.exporters import export_tiff

    return Path(export_tiff(labels, path, **kw))


def _patches(labels: Any, path: Path, *, slide: Any = None, **kw: Any) -> Path:
    from napari_sgnet.training.export_patches import export_patches

    if slide is None:
        raise OptionError("exporting training patches needs the slide")
    return Path(export_patches(labels, slide, path, **kw))


@dataclass(frozen=True)
class ExportFormat:
    """One row of the export table.

    Attributes
    ----------
    kind : str
        The one spelling of the format (CLI ``--format``, dock, npe2 writers).
    title : str
        Human name (button text, dialog title).
    suffix : str
        Appended to the slide's stem for the default output name.
    extensions : tuple of str
        File extensions the format is saved with (the dialog's filter).
    tooltip : str
        What the export is for.
    options : tuple of str
        Keyword options the writer takes beyond ``overwrite`` and ``progress`` (the CLI
        passes its arguments of these names).
    folder : bool
        The output is a folder picked with a folder dialog (training patches).
    needs_slide : bool
        The writer needs the slide's pixels (``slide=``), not only the labels.
    write : callable
        ``write(labels, path, *, overwrite, progress, **options) -> Path``; ``labels`` is a
        :class:`~napari_sgnet.io.labelstore.LabelStore` or a
        :class:`~napari_sgnet.io.exporters.LabelSource`.
    in_dock : bool
        The dock shows a button for it (:data:`DOCK_EXPORT_KINDS`); the probabilities
        export is CLI/API only (only stores made with ``--probabilities`` have any).
    """

    kind: str
    title: str
    suffix: str
    extensions: tuple[str, ...]
    tooltip: str
    options: tuple[str, ...]
    folder: bool
    needs_slide: bool
    write: Callable[..., Path]
    in_dock: bool = True

    @property
    def file_filter(self) -> str:
        """The file-dialog filter, e.g. ``"GeoJSON (*.geojson *.json)"``."""
        if not self.extensions:
            return ""
        return f"{self.title} ({' '.join('*' + e for e in self.extensions)})"


#: The export table, by kind.
EXPORTS: dict[str, ExportFormat] = {
    row.kind: row
    for row in (
        ExportFormat(
            "ome-zarr", "OME-Zarr", ".labels.ome.zarr", (".ome.zarr", ".zarr"),
            "Label pyramid with class names and colours (any OME-Zarr viewer, napari, "
            "QuPath via OME-Zarr); with image=SLIDE, an OME-Zarr image of the slide holding "
            "the labels.", ("ngff", "image"), False, False, _omezarr,
        ),
        ExportFormat(
            "geojson", "GeoJSON", ".geojson", (".geojson", ".json"),
            "One polygon per class region, with class names (QuPath: File > Import objects).",
            ("level", "min_area", "skip_background", "split", "measurements", "simplify"),
            False, False, _geojson,
        ),
        ExportFormat(
            "tiff", "TIFF", ".labels.tif", (".tif", ".tiff"),
            "Pyramidal OME-TIFF of grey label ids at the slide's resolution (QuPath, "
            "OpenSlide, Fiji); tiff_level='working' keeps the label resolution.",
            ("tiff_level",), False, False, _tiff,
        ),
        ExportFormat(
            "patches", "Training patches", "-patches", (),
            "Image + label patches of the corrected regions, for fine-tuning.",
            ("patch_size", "masks", "layout"), True, True, _patches,
        ),
        ExportFormat(
            "probabilities", "Probabilities (OME-Zarr)", ".probabilities.ome.zarr",
            (".ome.zarr", ".zarr"),
            "Per-class probabilities (uint8, softmax x 255) as an OME-Zarr image, one channel "
            "per class; only stores predicted with --probabilities keep them.",
            (), False, False, _probabilities, in_dock=False,
        ),
    )
}  # fmt: skip
#: The kinds, in table order.
EXPORT_KINDS = tuple(EXPORTS)
#: The kinds the dock has a button for, in table order.
DOCK_EXPORT_KINDS = tuple(kind for kind, row in EXPORTS.items() if row.in_dock)


def export_format(kind: str) -> ExportFormat:
    """The table row of ``kind``.

    Raises
    ------
    OptionError
        For a kind not in the table (the message lists the known ones).
    """
    try:
        return EXPORTS[kind]
    except KeyError:
        known = ", ".join(EXPORT_KINDS)
        raise OptionError(f"unknown export kind {kind!r}; known: {known}") from None


def default_export_path(kind: str, store_path: Path, slide: Pyramid | None = None) -> Path:
    """``<store folder>/<slide stem><suffix>`` for an export kind.

    The stem is the slide's (:func:`~napari_sgnet.app.store_paths.slide_stem`), else the
    store's name without ``.sgnet.zarr``.
    """
    row = export_format(kind)
    store_path = Path(store_path)
    if slide is not None:
        stem = slide_stem(slide)
    else:
        name = store_path.name
        stem = name[: -len(STORE_SUFFIX)] if name.endswith(STORE_SUFFIX) else store_path.stem
    return store_path.parent / f"{stem}{row.suffix}"


def run_export(
    kind: str,
    labels: Any,
    path: str | Path,
    *,
    slide: Any = None,
    progress: Progress | None = None,
    overwrite: bool = True,
    **options: Any,
) -> Path:
    """Export labels as ``kind`` (the CLI, the dock, the demo and the npe2 writers call this).

    Parameters
    ----------
    kind : str
        A kind of :data:`EXPORTS`.
    labels : LabelStore or LabelSource
        The labels (a store's predictions and committed corrections, or a layer's labels).
    path : str or Path
        Destination file or folder.
    slide : Pyramid, str or Path, optional
        The slide (needed for training patches, ignored otherwise).
    progress : callable, optional
        ``progress(done, total)``.
    overwrite : bool
        Replace an earlier export at ``path`` (the app asks first).
    **options
        The row's :attr:`ExportFormat.options` (``None`` values are left to the writer).

    Returns
    -------
    Path
        What was written.

    Raises
    ------
    OptionError
        For an unknown kind, an option the kind does not take, or patches without a slide.
    StoreError
        When ``path`` is (or is inside, or holds) the input store or the slide, or the store
        does not match its own metadata (nothing is written).
    """
    row = export_format(kind)
    unknown = set(options) - set(row.options)
    if unknown:
        raise OptionError(f"{kind} export does not take {', '.join(sorted(unknown))}")
    kw: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    _check_inputs(labels, Path(path), slide)
    if row.needs_slide:
        kw["slide"] = slide
    return row.write(labels, Path(path), overwrite=overwrite, progress=progress, **kw)


def _check_inputs(labels: Any, path: Path, slide: Any) -> None:
    """Refuse an output that is (or is inside, or holds) the input store or slide, and a
    store whose structure does not match its metadata, before anything is written."""
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.labelstore.outputs import check_output_path

    store_path = None
    sources: list[Any] = []
    if isinstance(labels, LabelStore):
        labels.validate()
        store_path = labels.path
        sources.append(labels.slide_identity.get("source"))
    else:
        provenance = getattr(labels, "provenance", None) or {}
        store_path = provenance.get("store")
        sources.append((provenance.get("slide") or {}).get("source"))
    if slide is not None:
        sources.append(getattr(slide, "source", slide))
    check_output_path(path, store=store_path)
    for source in sources:
        if source:
            check_output_path(path, slide=source)
