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
    napari can offer another reader. ``.geojson`` files are claimed (with
    :func:`read_geojson_files`) only when they hold Polygon/MultiPolygon features. Never raises.
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
    from napari_sgnet._napari.preload import preload_dock_modules
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.readers import probe

    preload_dock_modules()
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
        if kind == "omezarr":  # label images listed in the image's labels/ group
            layers.extend(_label_image_layer(q) for q in _child_label_images(Path(p)))
    return layers


def read_geojson_files(path: str | list[str]) -> list[LayerData]:
    """Each GeoJSON file as an outline layer marked as an import (the dock adopts it)."""
    from napari_sgnet._napari.geojson_layer import geojson_layer_data

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [geojson_layer_data(p) for p in paths]


def _child_label_images(path: Path) -> list[Path]:
    """The label image groups an OME-Zarr image lists in its ``labels`` group (NGFF)."""
    import zarr

    from napari_sgnet.io.ngff import ome_attributes, parse_labels

    labels = path / "labels"
    if not labels.is_dir():
        return []
    try:
        names = parse_labels(zarr.open_group(labels, mode="r").attrs.asdict())
        found = []
        for name in names:
            attrs = zarr.open_group(labels / name, mode="r").attrs.asdict()
            if "image-label" in ome_attributes(attrs):
                found.append(labels / name)
        return found
    except (OSError, ValueError, KeyError, zarr.errors.GroupNotFoundError):
        log.warning("%s: cannot read its labels group; showing the image only", path)
        return []


def _label_image_layer(path: Path) -> LayerData:
    """A labels layer for an OME-Zarr label image: palette colours, µm scale and placement.

    The layer's scale and translate are those of its NGFF level 0 (one convention,
    :func:`napari_sgnet.io.ngff.level_datasets`): a pixel of a label level with ``f``
    slide pixels per pixel has its centre where the slide pixels it covers have theirs.
    """
    from napari_sgnet._napari.layers import labels_layer_data
    from napari_sgnet.io.exporters import read_omezarr_labels
    from napari_sgnet.io.ngff import level_datasets

    source = read_omezarr_labels(path)
    step = source.mpp if source.mpp is not None else 1.0
    level0 = level_datasets([source.base_downsample], step, centred=True, offset=source.offset)[0]
    scale = level0.scale or (step, step)
    data = labels_layer_data(
        list(source.levels),
        source.palette,
        scale=(scale[-2], scale[-1]),
        name=source.name or path.stem,
    )
    kwargs = data[1]
    if level0.translation is not None:
        kwargs["translate"] = (level0.translation[-2], level0.translation[-1])
    if source.mpp is not None:
        kwargs["units"] = ("µm", "µm")
    return data
