"""Building :class:`~.dataset.SlideSource` objects from files or from the synthetic generator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_sgnet.errors import OptionError
from napari_sgnet.io import open_pyramid
from napari_sgnet.palette import GLEASON, Palette
from napari_sgnet.training.dataset import SlideSource

__all__ = ["describe_sources", "file_source", "parse_seeds", "synthetic_source"]


def synthetic_source(seed: int, size: int, version: int = 2, **options: Any) -> SlideSource:
    """A generated Gleason-like slide (``size`` x ``size`` level-0 px at 0.5 µm/px) and its
    ground truth.

    Parameters
    ----------
    seed, size : int
        Slide seed and side.
    version : int
        Generator version (:attr:`~napari_sgnet.synthetic.SynthConfig.version`): 1 labels
        glass 1 like stroma, 2 labels glass 0 (ignored by the loss).
    **options
        Further :class:`~napari_sgnet.synthetic.SynthConfig` fields. The source is named
        ``name`` if given, else ``synthetic-{seed}`` whatever the version.
    """
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    name = options.pop("name", f"synthetic-{seed}")
    config = SynthConfig(width=size, height=size, seed=seed, name=name, version=version, **options)
    slide = generate_slide(config)
    return SlideSource(slide.image, slide.labels, name, tissue=slide.tissue)


def file_source(
    image: str | Path,
    labels: str | Path,
    mpp: float | None = None,
    palette: Palette | None = None,
) -> SlideSource:
    """A slide file and its ground truth: a label image (any format :func:`open_pyramid`
    reads) or QuPath GeoJSON annotations.

    Parameters
    ----------
    image, labels : path
        The slide and a label-id image of the same size (or with a level of the working
        size), or a ``.geojson`` file of classified polygons in slide level-0 pixels
        (rasterised lazily at the level read, see :func:`napari_sgnet.io.importers.label_pyramid`;
        pixels outside every polygon are label 0, ignored).
    mpp : float, optional
        Override the slide's level-0 µm/px.
    palette : Palette, optional
        The classes a GeoJSON file's names map onto (default: Gleason).
    """
    pyramid = open_pyramid(image)
    if mpp is not None:
        pyramid = pyramid.with_mpp(mpp)
    if Path(labels).suffix.lower() == ".geojson":
        from napari_sgnet.io import importers

        size = (pyramid.width, pyramid.height)
        annotations = importers.read_geojson(labels, palette or GLEASON, slide_size=size)
        truth = importers.label_pyramid(annotations, pyramid)
        return SlideSource(pyramid, truth, Path(image).stem)
    label_pyramid = open_pyramid(labels)
    if label_pyramid.mpp is None and pyramid.mpp is not None:
        ratio = pyramid.width / label_pyramid.width
        label_pyramid = label_pyramid.with_mpp(pyramid.mpp * ratio)
    return SlideSource(pyramid, label_pyramid, Path(image).stem)


def parse_seeds(text: str | None) -> list[int]:
    """Non-negative seeds: ``"0,1,2"``, ``"0-3"`` (inclusive) or a mix -> list of ints.

    Raises :class:`~napari_sgnet.errors.OptionError` (a ``ValueError``) on anything else;
    ``None`` or ``""`` give an empty list.
    """
    seeds: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError as exc:
            message = f"seeds must be N, N-M or a comma list of them, got {text!r}"
            raise OptionError(message) from exc
    return seeds


def describe_sources(sources: Sequence[SlideSource]) -> list[dict[str, Any]]:
    """JSON provenance of slide sources: name, file, size, µm/px."""
    out = []
    for s in sources:
        out.append(
            {
                "name": s.name,
                "source": str(s.image.source) if s.image.source is not None else None,
                "size": [s.image.width, s.image.height],
                "mpp": s.image.mpp,
            }
        )
    return out
