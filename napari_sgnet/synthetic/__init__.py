"""Synthetic Gleason-like whole-slide images: lazy, chunk-deterministic, with exact labels.

>>> from napari_sgnet.synthetic import SynthConfig, generate_slide
>>> slide = generate_slide(SynthConfig(width=32768, seed=1))
>>> tile = slide.image.read(Box(0, 0, 256, 256), level=2)   # renders only what it reads

See ``docs/synthetic.md`` for the model, its scales in µm, and the knobs.
"""

from napari_sgnet.synthetic.config import SynthConfig, SynthConfigError
from napari_sgnet.synthetic.slide import (
    SyntheticLevel,
    SyntheticSlide,
    generate_slide,
    sample_slide,
)

__all__ = [
    "SynthConfig",
    "SynthConfigError",
    "SyntheticLevel",
    "SyntheticSlide",
    "generate_slide",
    "sample_slide",
]
