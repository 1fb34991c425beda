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
    napari_sgnet.io.errors.SlideError
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
        pyramid = open_pyramid(p)
        log.info("opened %s", pyramid.summary())
        layers.append(image_layer_data(pyramid))
    return layers
