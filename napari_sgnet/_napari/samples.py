"""npe2 sample data: the real CMU-1 Aperio slide and a synthetic Gleason-like slide."""

from __future__ import annotations

from pathlib import Path

from napari_sgnet._napari.layers import (
    LayerData,
    image_layer_data,
    labels_layer_data,
    pyramid_scale,
)

__all__ = [
    "SAMPLE_SVS",
    "SYNTHETIC_SAMPLE_SEED",
    "SYNTHETIC_SAMPLE_SIZE",
    "cmu_sample",
    "sample_data_dir",
    "synthetic_cache_path",
    "synthetic_sample",
]


def sample_data_dir() -> Path:
    """Folder holding the bundled sample slide (``sample_data/`` beside the package)."""
    return Path(__file__).resolve().parents[1] / "sample_data"


SAMPLE_SVS = "CMU-1-Small-Region.svs"

#: The synthetic sample of napari's File > Open Sample menu.
SYNTHETIC_SAMPLE_SIZE = 16384
SYNTHETIC_SAMPLE_SEED = 2024


def synthetic_cache_path(size: int, seed: int) -> Path:
    """The shipped cache of a synthetic sample's coarse levels (may not exist)."""
    return sample_data_dir() / f"synthetic-{size}-seed{seed}-coarse.tif"


def cmu_sample() -> list[LayerData]:
    """The real CMU-1 small-region Aperio SVS (CC0), opened lazily."""
    from napari_sgnet._napari.preload import preload_dock_modules
    from napari_sgnet.io import open_pyramid

    preload_dock_modules()
    pyramid = open_pyramid(sample_data_dir() / SAMPLE_SVS)
    return [image_layer_data(pyramid, name="CMU-1-Small-Region")]


def synthetic_sample(
    size: int = SYNTHETIC_SAMPLE_SIZE, seed: int = SYNTHETIC_SAMPLE_SEED
) -> list[LayerData]:
    """A synthetic Gleason-like slide (lazy, ``size`` x ``size``) with its ground truth.

    The coarse levels napari draws first come from the exact shipped cache
    (``sample_data/``, see :mod:`napari_sgnet.synthetic.cache`) when it matches the
    generator; every other pixel renders on demand.
    """
    from napari_sgnet._napari.preload import preload_dock_modules
    from napari_sgnet.synthetic import sample_slide
    from napari_sgnet.synthetic.cache import with_coarse_cache

    preload_dock_modules()
    slide = with_coarse_cache(sample_slide(size=size, seed=seed), synthetic_cache_path(size, seed))
    image = image_layer_data(slide.image, name=f"synthetic-gleason-{seed}")
    truth = labels_layer_data(
        slide.labels.levels,
        slide.palette,
        scale=pyramid_scale(slide.labels),
        name=f"ground truth {seed}",
        opacity=0.4,
    )
    if "units" in image[1]:  # napari warns when layers' units differ
        truth[1]["units"] = image[1]["units"]
    return [image, truth]
