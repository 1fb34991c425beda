"""napari glue without Qt: slide layers -> pyramids, label stores -> layers.

- :func:`pyramid_from_layer` turns the slide's image layer back into a lazy
  :class:`~napari_sgnet.io.pyramid.Pyramid` (what the engine runs on);
- :func:`prediction_layer_data` shows a LabelStore as a read-only multiscale Labels layer
  (scale = slide µm/px x the store's downsample, so it sits on the slide at every zoom);
- :func:`confidence_layer_data` shows the store's confidence as an image layer whose
  colormap highlights uncertain pixels;
- :func:`edit_layer_data` places an edit crop (store level 0) over the slide.

Where a slide's store is and how the camera is read are app matters
(:mod:`napari_sgnet.app.store_paths`, :func:`napari_sgnet.app.viewport.view_of_viewer`);
:func:`camera_of` is re-exported here for the layer code.

The stores' dask arrays are read with napari's chunk cache off (``cache=False``):
chunks change as tiles land, and ``layer.refresh()`` must show the new ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet._napari.layers import LayerData, labels_layer_data
from napari_sgnet.app.review import EditRegion, store_transform
from napari_sgnet.app.viewport import camera_of
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import Palette

__all__ = [
    "CONFIDENCE_NAME",
    "EDIT_NAME",
    "META_KEY",
    "PLACEHOLDER_KEY",
    "PREDICTION_NAME",
    "camera_of",
    "confidence_colormap",
    "confidence_layer_data",
    "edit_layer_data",
    "layer_role",
    "prediction_layer_data",
    "pyramid_from_layer",
    "slide_transform",
    "store_layers",
]

META_KEY = "napari_sgnet"
PREDICTION_NAME = "SGNet labels"
PLACEHOLDER_KEY = "placeholder"  # metadata flag of a prediction layer made before its store
CONFIDENCE_NAME = "SGNet confidence"
EDIT_NAME = "SGNet edit"


def layer_role(layer: Any) -> str | None:
    """The napari-sgnet role of a layer (``"prediction"``, ``"confidence"``, ``"edit"``)."""
    meta = getattr(layer, "metadata", {}) or {}
    return (meta.get(META_KEY) or {}).get("role")


def slide_transform(layer: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """World ``(scale, translate)`` of an image layer's two spatial axes ``(y, x)``."""
    scale = tuple(float(v) for v in layer.scale[-2:])
    translate = tuple(float(v) for v in layer.translate[-2:])
    return (scale[0], scale[1]), (translate[0], translate[1])


def pyramid_from_layer(layer: Any) -> Pyramid:
    """The lazy pyramid behind a (multiscale) image layer.

    Uses the metadata written by this plugin's reader (µm/px, downsamples, source)
    when present; otherwise downsamples come from the level shapes and µm/px from
    the layer's scale when its units are micrometres.
    """
    meta = (getattr(layer, "metadata", {}) or {}).get(META_KEY) or {}
    data = layer.data
    levels = list(data) if getattr(layer, "multiscale", False) else [data]
    levels = [lv if isinstance(lv, da.Array) else da.asarray(lv) for lv in levels]
    downsamples = meta.get("downsamples")
    if not downsamples or len(downsamples) != len(levels):
        h0 = float(levels[0].shape[0])
        downsamples = [h0 / float(lv.shape[0]) for lv in levels]
        downsamples[0] = 1.0
    mpp = meta.get("mpp")
    if mpp is None:
        units = [str(u) for u in getattr(layer, "units", ())[-2:]]
        if units and all(u in ("micrometer", "µm", "um") for u in units):
            mpp = float(layer.scale[-1])
    source = meta.get("source")
    return Pyramid(
        tuple(levels),
        tuple(float(d) for d in downsamples),
        mpp=float(mpp) if mpp is not None else None,
        source=Path(source) if source else None,
        name=str(layer.name),
    )


def _with_units(kwargs: dict[str, Any], units: Any) -> dict[str, Any]:
    """Give our layers the slide layer's units (napari warns when layers disagree)."""
    if units is not None:
        kwargs["units"] = tuple(units)[-2:]
    return kwargs


def _meta(role: str, store: LabelStore, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"role": role, "store": str(store.path), **(extra or {})}


def prediction_layer_data(
    store: LabelStore,
    *,
    slide_scale: tuple[float, float],
    slide_translate: tuple[float, float] = (0.0, 0.0),
    units: Any = None,
    palette: Palette | None = None,
    opacity: float = 0.5,
) -> LayerData:
    """A read-only multiscale Labels layer showing a label store over its slide."""
    scale, translate = store_transform(store.base_downsample, slide_scale, slide_translate)
    data, kwargs, kind = labels_layer_data(
        store.level_views(),  # one zarr read per refresh (not a dask task per chunk)
        palette or store.palette,
        scale=scale,
        name=PREDICTION_NAME,
        opacity=opacity,
        metadata=_meta("prediction", store),
    )
    kwargs.update(translate=translate, cache=False)
    return data, _with_units(kwargs, units), kind


def confidence_colormap() -> Any:
    """Colormap for confidence 0-255 that highlights doubt and hides certainty.

    0 (not predicted) and confident pixels (>= 80 %) are transparent; below that the
    overlay goes from a faint orange to opaque magenta for the least confident pixels.
    """
    from napari.utils.colormaps import Colormap

    colors = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],  # 0: not predicted
            [0.85, 0.0, 0.85, 0.9],  # least confident
            [0.95, 0.1, 0.55, 0.75],
            [1.0, 0.55, 0.1, 0.4],
            [1.0, 0.8, 0.2, 0.0],  # confident enough: transparent from here on
            [1.0, 0.8, 0.2, 0.0],
        ]
    )
    controls = np.array([0.0, 1.0 / 255.0, 0.4, 0.6, 0.8, 1.0])
    return Colormap(colors=colors, controls=controls, name="sgnet-uncertainty")


def _confidence_dask(store: LabelStore) -> da.Array:
    """The store's level-0 ``confidence`` array (documented layout) as a lazy dask array."""
    if hasattr(store, "confidence_as_dask"):
        return store.confidence_as_dask()
    import zarr

    arr = zarr.open_array(store.path / "confidence", mode="r")
    return da.from_array(arr, chunks=arr.chunks, asarray=True, lock=False, inline_array=True)


def confidence_layer_data(
    store: LabelStore,
    *,
    slide_scale: tuple[float, float],
    slide_translate: tuple[float, float] = (0.0, 0.0),
    units: Any = None,
    opacity: float = 0.8,
) -> LayerData:
    """The store's confidence (max softmax x 255) as a multiscale image layer.

    Coarser levels are strided views of the level-0 confidence, matching the label
    pyramid's level shapes.
    """
    scale, translate = store_transform(store.base_downsample, slide_scale, slide_translate)
    base = _confidence_dask(store)
    levels = [base] + [base[:: 2**k, :: 2**k] for k in range(1, store.n_levels)]
    kwargs: dict[str, Any] = {
        "name": CONFIDENCE_NAME,
        "scale": scale,
        "translate": translate,
        "multiscale": len(levels) > 1,
        "colormap": confidence_colormap(),
        "contrast_limits": [0, 255],
        "opacity": opacity,
        "blending": "translucent",
        "interpolation2d": "nearest",
        "cache": False,
        "metadata": {META_KEY: _meta("confidence", store)},
    }
    return (levels if len(levels) > 1 else levels[0], _with_units(kwargs, units), "image")


def edit_layer_data(
    edit: EditRegion,
    store: LabelStore,
    *,
    slide_scale: tuple[float, float],
    slide_translate: tuple[float, float] = (0.0, 0.0),
    units: Any = None,
    palette: Palette | None = None,
    opacity: float = 0.75,
) -> LayerData:
    """A single-scale, paintable Labels layer holding an edit crop at its place on the slide."""
    (sy, sx), (ty, tx) = store_transform(store.base_downsample, slide_scale, slide_translate)
    data, kwargs, kind = labels_layer_data(
        [edit.labels],
        palette or store.palette,
        scale=(sy, sx),
        name=EDIT_NAME,
        opacity=opacity,
        metadata=_meta("edit", store, {"box": list(edit.box.as_tuple())}),
    )
    kwargs["translate"] = (ty + edit.box.y * sy, tx + edit.box.x * sx)
    return data, _with_units(kwargs, units), kind


def store_layers(path: str | Path, *, with_slide: bool = True) -> list[LayerData]:
    """Layers for a label store opened on its own (``napari <store>``).

    The slide it was made for and the labels over it, read-only. The slide is looked for
    where the store recorded it (absolute path, then relative to the store, then beside it;
    :func:`napari_sgnet.io.labelstore.slide_ref.find_slide`) and checked to be the same
    slide; when it is not found (or a different slide has its name), the labels are shown
    alone and a warning says why and how to re-link the slide.
    """
    import warnings

    from napari_sgnet._napari.layers import image_layer_data
    from napari_sgnet.errors import StoreError
    from napari_sgnet.io.labelstore.slide_ref import find_slide

    store = LabelStore.open(path, mode="r")
    store.validate()
    ident = store.slide_identity
    mpp = ident.get("mpp") or 1.0
    layers: list[LayerData] = []
    if with_slide:
        try:
            slide = find_slide(store)
        except StoreError as exc:
            message = f"showing the labels without their slide: {exc}"
            warnings.warn(message, stacklevel=2)
        else:
            layers.append(image_layer_data(slide))
            mpp = slide.mpp or mpp
    units = ("µm", "µm") if ident.get("mpp") else None
    layers.append(prediction_layer_data(store, slide_scale=(mpp, mpp), units=units))
    return layers
