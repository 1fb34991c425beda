"""The one OME-NGFF (0.4 and 0.5) metadata builder and parser.

Every NGFF group napari-sgnet writes (the label store, OME-Zarr label exports, the
synthetic slide writer's images and labels) gets its attributes from
:func:`multiscale_attributes` and :func:`labels_attributes`, and every NGFF group it
reads (the OME-Zarr slide reader, the label-export reader, store validation) is
parsed by :func:`parse_multiscale` and :func:`parse_image_label`. Both sides work on
plain values (:class:`Axis`, :class:`Dataset`, :class:`Multiscale`,
:class:`ImageLabel`); nothing here touches zarr, so any caller can build the
attributes first and write them wherever its group lives. The values live in
:mod:`.values`, the builder in :mod:`.build`, the parser in :mod:`.parse`; import them
from here.

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

from napari_sgnet.io.ngff.build import (
    label_multiscale,
    labels_attributes,
    level_datasets,
    multiscale_attributes,
    spatial_axes,
)
from napari_sgnet.io.ngff.parse import (
    ngff_version,
    ome_attributes,
    parse_image_label,
    parse_labels,
    parse_multiscale,
)
from napari_sgnet.io.ngff.values import (
    CLASS_KEY,
    LEGACY_CLASS_KEYS,
    MODE_METHOD,
    NGFF_VERSIONS,
    NO_LABEL,
    Axis,
    Dataset,
    ImageLabel,
    Multiscale,
    NgffVersion,
    check_version,
)

__all__ = [
    "CLASS_KEY",
    "LEGACY_CLASS_KEYS",
    "MODE_METHOD",
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
