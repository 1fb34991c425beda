"""Exports of label pyramids: OME-Zarr labels, GeoJSON for QuPath, pyramidal OME-TIFF masks.

Every exporter takes a :class:`LabelSource` or anything :func:`as_label_source`
turns into one (a :class:`~napari_sgnet.io.labelstore.store.LabelStore`, a label array or
a multiscale list), streams over blocks or tile rows with bounded memory, reports
``progress(done, total)``, writes to a staging path that is moved into place when
complete, and refuses to replace an existing output unless ``overwrite=True``.
Formats and conventions: ``docs/exports.md``.
"""

from napari_sgnet.io.exporters.geojson import export_geojson, label_features
from napari_sgnet.io.exporters.omezarr import (
    NGFF_VERSIONS,
    export_omezarr,
    ngff_label_attributes,
    read_omezarr_labels,
)
from napari_sgnet.io.exporters.polygons import BoundaryTracer, mask_polygons
from napari_sgnet.io.exporters.source import LabelSource, as_label_source, mode_pyramid
from napari_sgnet.io.exporters.tiff import export_tiff, read_tiff_record

__all__ = [
    "NGFF_VERSIONS",
    "BoundaryTracer",
    "LabelSource",
    "as_label_source",
    "export_geojson",
    "export_omezarr",
    "export_tiff",
    "label_features",
    "mask_polygons",
    "mode_pyramid",
    "ngff_label_attributes",
    "read_omezarr_labels",
    "read_tiff_record",
]
