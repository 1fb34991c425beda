"""npe2 sample data: the real CMU-1 Aperio slide and a synthetic Gleason-like slide."""

from __future__ import annotations

from pathlib import Path

from napari_sgnet._napari.layers import (
    LayerData,
    image_layer_data,
    labels_layer_data,
    pyramid_scale,
)

__all__ = ["SAMPLE_SVS", "cmu_sample", "sample_data_dir", "synthetic_sample"]


def sample_data_dir() -> Path:
    """Folder holding the bundled sample slide (``sample_data/`` beside the package)."""
    return Path(__file__).resolve().parents[1] / "sample_data"


SAMPLE_SVS = "CMU-1-Small-Region.svs"


def cmu_sample() -> list[LayerData]:
    """The real CMU-1 small-region Aperio SVS (CC0), opened lazily."""
    from napari_sgnet.io import open_pyramid

    pyramid = open_pyramid(sample_data_dir() / SAMPLE_SVS)
    return [image_layer_data(pyramid, name="CMU-1-Small-Region")]


def synthetic_sample(size: int = 16384, seed: int = 2024) -> list[LayerData]:
    """A synthetic Gleason-like slide (lazy, ``size`` x ``size``) with its ground truth."""
    from napari_sgnet.synthetic import sample_slide

    slide = sample_slide(size=size, seed=seed)
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
