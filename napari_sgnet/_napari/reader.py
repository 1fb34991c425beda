"""npe2 reader: slides (SVS, NDPI, TIFF/OME-TIFF, flat images), OME-Zarr, label stores, and
QuPath GeoJSON annotations (an outline layer the dock adopts as corrections to review)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from napari_sgnet._napari.layers import LayerData, image_layer_data

__all__ = ["get_reader", "read_geojson_files", "read_slide"]

log = logging.getLogger(__name__)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_slide` when napari-sgnet can open every path, else None.

    The decision reads metadata only (TIFF tags, image headers, zarr attributes) through
    :func:`napari_sgnet.io.readers.probe`, the same checks the readers run when opening:
    RGB(A) or greyscale single-plane slides and images, NGFF OME-Zarr images and
    image-label groups, and napari-sgnet label stores. Anything else (fluorescence
    channels, z-stacks, time series, plain zarr arrays, damaged files) gets None so that
    napari can offer another reader. Never raises.
    """
    from napari_sgnet.io.readers import probe

    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    except TypeError:
        return None
    if not paths:
        return None
    from napari_sgnet._napari.geojson_layer import is_geojson_path

    if all(str(p).lower().endswith(".geojson") for p in paths):  # QuPath annotations
        return read_geojson_files if all(is_geojson_path(p) for p in paths) else None
    for p in paths:
        verdict = probe(p)
        if not verdict.ok:
            log.debug("not claiming %s", verdict.error)
            return None
    return read_slide


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open each path lazily as one multiscale image layer with its physical scale.

    Raises
    ------
    napari_sgnet.errors.SlideError
        With a message naming the file and the problem; napari shows it as a notification.
    """
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.readers import probe

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        kind = probe(p).kind
        if kind == "labelstore":  # a napari-sgnet label store: its slide + the labels
            from napari_sgnet._napari.session import store_layers

            layers.extend(store_layers(p))
            continue
        if kind == "label-image":  # an exported OME-Zarr label image: a coloured labels layer
            layers.append(_label_image_layer(Path(p)))
            continue
        pyramid = open_pyramid(p)
        log.info("opened %s", pyramid.summary())
        layers.append(image_layer_data(pyramid))
    return layers


def read_geojson_files(path: str | list[str]) -> list[LayerData]:
    """Each GeoJSON file as an outline layer marked as an import (the dock adopts it)."""
    from napari_sgnet._napari.geojson_layer import geojson_layer_data

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [geojson_layer_data(p) for p in paths]


def _label_image_layer(path: Path) -> LayerData:
    """A labels layer (palette colours, µm scale) for an exported OME-Zarr label image."""
    from napari_sgnet._napari.layers import labels_layer_data
    from napari_sgnet.io.exporters import read_omezarr_labels

    source = read_omezarr_labels(path)
    step = (source.mpp or 1.0) * source.base_downsample
    return labels_layer_data(
        list(source.levels), source.palette, scale=(step, step), name=source.name or path.stem
    )
