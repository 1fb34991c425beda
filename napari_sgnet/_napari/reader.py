"""npe2 reader: slides (SVS, NDPI, TIFF/OME-TIFF, flat images), OME-Zarr, label stores."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from napari_sgnet._napari.layers import LayerData, image_layer_data

__all__ = ["get_reader", "read_slide"]

log = logging.getLogger(__name__)

_SUFFIXES = (
    ".svs", ".ndpi", ".tif", ".tiff", ".scn", ".mrxs", ".bif", ".png", ".jpg", ".jpeg", ".zarr",
)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_slide` when ``path`` looks like something this plugin opens."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        p = Path(p)
        if not (p.suffix.lower() in _SUFFIXES or (p.is_dir() and _looks_like_zarr(p))):
            return None
    return read_slide


def _looks_like_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zattrs", ".zgroup"))


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open each path lazily as one multiscale image layer with its physical scale.

    Raises
    ------
    napari_sgnet.errors.SlideError
        With a message naming the file and the problem; napari shows it as a notification.
    """
    from napari_sgnet.io import open_pyramid

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    from napari_sgnet.io.labelstore import LabelStore

    for p in paths:
        if LabelStore.is_store(p):  # a napari-sgnet label store: its slide + the labels
            from napari_sgnet._napari.session import store_layers

            layers.extend(store_layers(p))
            continue
        if _is_label_image(Path(p)):  # an exported OME-Zarr label image: a coloured labels layer
            layers.append(_label_image_layer(Path(p)))
            continue
        pyramid = open_pyramid(p)
        log.info("opened %s", pyramid.summary())
        layers.append(image_layer_data(pyramid))
    return layers


def _is_label_image(path: Path) -> bool:
    """True for an OME-Zarr group whose attributes carry ``image-label`` (NGFF 0.4 or 0.5)."""
    import json

    for meta in ("zarr.json", ".zattrs"):
        f = path / meta
        if path.is_dir() and f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)
            return "image-label" in attrs.get("ome", attrs)
    return False


def _label_image_layer(path: Path) -> LayerData:
    """A labels layer (palette colours, µm scale) for an exported OME-Zarr label image."""
    from napari_sgnet._napari.layers import labels_layer_data
    from napari_sgnet.io.exporters import read_omezarr_labels

    source = read_omezarr_labels(path)
    step = (source.mpp or 1.0) * source.base_downsample
    return labels_layer_data(
        list(source.levels), source.palette, scale=(step, step), name=source.name or path.stem
    )
