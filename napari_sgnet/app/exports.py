"""One entry point for the app's export buttons and the headless demo: :func:`run_export`.

Each kind maps to the core exporter the CLI also uses; nothing here imports Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["EXPORT_KINDS", "default_export_path", "run_export"]

EXPORT_KINDS = ("omezarr", "geojson", "tiff", "patches")
_SUFFIX = {
    "omezarr": ".labels.ome.zarr",
    "geojson": ".geojson",
    "tiff": ".labels.tif",
    "patches": "-patches",
}

Progress = Callable[[int, int], None]


def default_export_path(kind: str, store_path: Path, slide: Pyramid | None = None) -> Path:
    """``<store folder>/<slide name><suffix>`` for an export kind."""
    if kind not in _SUFFIX:
        raise ValueError(f"unknown export kind {kind!r}; known: {EXPORT_KINDS}")
    name = slide.name if slide is not None else Path(store_path).name.split(".")[0]
    return Path(store_path).parent / f"{name}{_SUFFIX[kind]}"


def run_export(
    kind: str,
    store: LabelStore,
    slide: Pyramid | None,
    path: str | Path,
    *,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> Path:
    """Export a label store.

    Parameters
    ----------
    kind : {"omezarr", "geojson", "tiff", "patches"}
        What to write.
    store : LabelStore
        The labels (predictions and committed corrections).
    slide : Pyramid or None
        The slide (needed for training patches).
    path : str or Path
        Destination file or folder.
    progress : callable, optional
        ``progress(done, total)``.
    overwrite : bool
        Replace an earlier export of the same kind at ``path`` (the app asks first).

    Returns
    -------
    Path
        What was written.
    """
    path = Path(path)
    if kind == "omezarr":
        from napari_sgnet.io.exporters import export_omezarr

        return Path(export_omezarr(store, path, overwrite=overwrite, progress=progress))
    if kind == "geojson":
        from napari_sgnet.io.exporters import export_geojson

        return Path(export_geojson(store, path, overwrite=overwrite, progress=progress))
    if kind == "tiff":
        from napari_sgnet.io.exporters import export_tiff

        return Path(export_tiff(store, path, overwrite=overwrite, progress=progress))
    if kind == "patches":
        from napari_sgnet.training.export_patches import export_patches

        if slide is None:
            raise ValueError("exporting training patches needs the slide")
        result: Any = export_patches(store, slide, path, overwrite=overwrite, progress=progress)
        return Path(getattr(result, "path", result))
    raise ValueError(f"unknown export kind {kind!r}; known: {EXPORT_KINDS}")
