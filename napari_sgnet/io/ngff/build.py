"""NGFF builder: group attributes of multiscale images, label images and ``labels`` groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari_sgnet.io.ngff.values import (
    MODE_METHOD,
    Attrs,
    Axis,
    Dataset,
    ImageLabel,
    Multiscale,
    check_version,
)

__all__ = [
    "label_multiscale",
    "labels_attributes",
    "level_datasets",
    "multiscale_attributes",
    "spatial_axes",
]


def spatial_axes(unit: str | None, *, channel: bool = False) -> tuple[Axis, ...]:
    """``y, x`` space axes with ``unit`` (``None``: pixels), after a ``c`` axis if ``channel``."""
    yx = (Axis("y", "space", unit), Axis("x", "space", unit))
    return (Axis("c", "channel"), *yx) if channel else yx


def level_datasets(
    factors: Sequence[float],
    step: float,
    *,
    centred: bool = False,
    offset: tuple[float, float] = (0.0, 0.0),
    leading: Sequence[float] = (),
) -> tuple[Dataset, ...]:
    """Datasets ``"0", "1", ...`` of a 2-D pyramid.

    Parameters
    ----------
    factors : sequence of float
        Level-0 pixels (of the frame the scales refer to) per pixel of each level.
    step : float
        Physical size of one level-0 pixel (µm/px, or 1 for pixel units).
    centred : bool
        Add translations that put each level's pixel centres where the level-0 pixels
        they cover have theirs: ``(offset + (f - 1) / 2) * step`` on y and x. Omitted
        for levels where it is zero.
    offset : tuple of float
        ``(x, y)`` of level 0's top-left pixel corner, in level-0 pixels (with ``centred``).
    leading : sequence of float
        Scales of axes before ``y, x`` (``(1.0,)`` for a channel axis); their translation is 0.
    """
    out = []
    for k, f in enumerate(factors):
        scale = (*(float(v) for v in leading), float(f) * step, float(f) * step)
        translation = None
        if centred:
            ty = (offset[1] + (f - 1.0) / 2.0) * step
            tx = (offset[0] + (f - 1.0) / 2.0) * step
            if ty != 0 or tx != 0:
                translation = (*(0.0 for _ in leading), float(ty), float(tx))
        out.append(Dataset(str(k), scale, translation))
    return tuple(out)


def label_multiscale(
    name: str,
    factors: Sequence[float],
    mpp: float | None,
    *,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Multiscale:
    """The multiscale of a 2-D label pyramid made by 2 x 2 modes, placed on its slide.

    Parameters
    ----------
    name : str
        Multiscale name.
    factors : sequence of float
        Slide level-0 pixels per pixel of each level.
    mpp : float or None
        µm/px of the slide's level 0: scales are in µm when known, else slide pixels.
    offset : tuple of float
        ``(x, y)`` of level 0's top-left corner in slide level-0 pixels.
    """
    step = mpp if mpp is not None else 1.0
    return Multiscale(
        axes=spatial_axes("micrometer" if mpp is not None else None),
        datasets=level_datasets(factors, step, centred=True, offset=offset),
        name=name,
        type="mode",
        metadata={"method": MODE_METHOD},
    )


def multiscale_attributes(
    multiscale: Multiscale,
    version: str,
    *,
    image_label: ImageLabel | None = None,
    omero: Mapping[str, Any] | None = None,
) -> Attrs:
    """The group attributes of an NGFF image (or, with ``image_label``, a label image).

    Parameters
    ----------
    multiscale : Multiscale
        The one multiscale of the group.
    version : {"0.4", "0.5"}
        NGFF version; 0.5 nests everything under ``"ome"``.
    image_label : ImageLabel, optional
        Makes the group a label image.
    omero : dict, optional
        OMERO rendering settings (for images).

    Returns
    -------
    dict
        Ready for ``group.attrs.update``.
    """
    v = check_version(version)
    ome: Attrs = {"multiscales": [multiscale.to_dict(v)]}
    if omero is not None:
        ome["omero"] = dict(omero)
    if image_label is not None:
        ome["image-label"] = image_label.to_dict(v)
    return ome if v == "0.4" else {"ome": {"version": "0.5", **ome}}


def labels_attributes(names: Sequence[str], version: str) -> Attrs:
    """The attributes of an NGFF ``labels`` group listing the label images ``names``."""
    v = check_version(version)
    listing: Attrs = {"labels": list(names)}
    return listing if v == "0.4" else {"ome": {"version": "0.5", **listing}}
