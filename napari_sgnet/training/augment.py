"""Training samples and their augmentations (numpy, float32, vectorised).

Geometric augmentations (flips, 90-degree rotations) are applied identically to the local
patch, the surrounding patch, both label maps **and** the local patch's box inside the
surrounding patch, so the local patch stays the crop of the surrounding patch at the reported
offset. Colour augmentations (HED stain jitter, brightness/contrast) use one draw of parameters
for both images of a sample: they show the same tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "RGB_FROM_HED",
    "AugmentConfig",
    "Sample",
    "augment",
    "color_jitter",
    "flip_rotate",
    "flip_rotate_box",
    "hed_jitter",
]

#: Ruifrok & Johnston's H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB), as in
#: ``skimage.color.rgb_from_hed``.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_EPS = float(np.log(1e-6))


@dataclass(frozen=True)
class Sample:
    """One training sample at the model's working resolution.

    Parameters
    ----------
    local, context : numpy.ndarray
        ``(P, P, 3)`` / ``(C, C, 3)`` RGB uint8.
    local_mask, context_mask : numpy.ndarray
        ``(P, P)`` / ``(C, C)`` uint8 label ids (0 = no label).
    offset : tuple of int
        ``(x, y)`` of the local patch's top-left corner in the surrounding patch.
    """

    local: np.ndarray
    context: np.ndarray
    local_mask: np.ndarray
    context_mask: np.ndarray
    offset: tuple[int, int]

    @property
    def local_box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the local patch in surrounding-patch pixels."""
        h, w = self.local_mask.shape[:2]
        return (self.offset[0], self.offset[1], w, h)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (all off with :meth:`none`).

    Parameters
    ----------
    flips, rotations : bool
        Random horizontal flip; random multiple of 90 degrees (with the flip: all 8 symmetries).
    hed_scale, hed_bias : float
        Per-stain multiplicative ``U(1 - s, 1 + s)`` and additive ``U(-b, b)`` jitter of the
        haematoxylin / eosin / DAB densities (Tellez et al. 2018), in ``skimage.color.rgb2hed``
        units, where H&E tissue is typically 0.01-0.05: keep the bias well below that.
    brightness, contrast : float
        Additive brightness ``U(-b, b)`` and contrast factor ``U(1 - c, 1 + c)`` on ``[0, 1]`` RGB.
    """

    flips: bool = True
    rotations: bool = True
    hed_scale: float = 0.05
    hed_bias: float = 0.004
    brightness: float = 0.08
    contrast: float = 0.1

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0)


def flip_rotate(array: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Horizontal flip (optional) then ``k`` counter-clockwise quarter turns (``np.rot90``)."""
    if flip:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, k % 4, axes=(0, 1)))


def flip_rotate_box(
    box: tuple[int, int, int, int], size: tuple[int, int], flip: bool, k: int
) -> tuple[int, int, int, int]:
    """Where ``box`` ``(x, y, w, h)`` of a ``size`` ``(width, height)`` image goes under
    :func:`flip_rotate` with the same ``flip`` and ``k``."""
    x, y, w, h = box
    width, height = size
    if flip:
        x = width - x - w
    for _ in range(k % 4):
        # np.rot90: input (row r, col c) -> output (row width - 1 - c, col r)
        x, y, w, h = y, width - x - w, h, w
        width, height = height, width
    return (x, y, w, h)


def hed_jitter(images: list[np.ndarray], scale: np.ndarray, bias: np.ndarray) -> list[np.ndarray]:
    """Jitter stain optical densities: ``hed' = hed * scale + bias`` per stain.

    Parameters
    ----------
    images : list of numpy.ndarray
        Float32 RGB in ``[0, 1]``, each ``(..., 3)``.
    scale, bias : numpy.ndarray
        ``(3,)`` per-stain factors (H, E, DAB).

    Returns
    -------
    list of numpy.ndarray
        Float32 RGB in ``[0, 1]``; identity for ``scale = 1, bias = 0``.
    """
    # rgb -> od (linear) -> hed: fold the jitter into one 3x3 matrix plus an offset.
    m = (HED_FROM_RGB * scale[None, :]) @ RGB_FROM_HED
    offset = (bias @ RGB_FROM_HED) * _LOG_EPS  # bias in normalised-od units
    m32, off32 = m.astype(np.float32), offset.astype(np.float32)
    out = []
    for img in images:
        od = np.log(np.maximum(img, 1e-6, dtype=np.float32))  # = -od * |log eps|
        od = od @ m32 + off32
        out.append(np.clip(np.exp(od), 0.0, 1.0))
    return out


def color_jitter(images: list[np.ndarray], brightness: float, contrast: float) -> list[np.ndarray]:
    """``(x - 0.5) * contrast + 0.5 + brightness`` on float ``[0, 1]`` RGB, clipped."""
    return [np.clip((img - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) for img in images]


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig) -> Sample:
    """Apply random geometric and colour augmentations to a sample.

    Parameters
    ----------
    sample : Sample
        Input sample.
    rng : numpy.random.Generator
        Source of randomness (the only one; same state -> same output).
    config : AugmentConfig
        Strengths.

    Returns
    -------
    Sample
        The augmented sample; ``offset`` follows the geometric transform.
    """
    flip = bool(config.flips and rng.random() < 0.5)
    k = int(rng.integers(4)) if config.rotations else 0
    hed = config.hed_scale > 0 or config.hed_bias > 0
    scale = rng.uniform(1 - config.hed_scale, 1 + config.hed_scale, 3) if hed else None
    bias = rng.uniform(-config.hed_bias, config.hed_bias, 3) if hed else None
    bright = rng.uniform(-config.brightness, config.brightness) if config.brightness else 0.0
    contr = rng.uniform(1 - config.contrast, 1 + config.contrast) if config.contrast else 1.0

    if flip or k:
        ch, cw = sample.context_mask.shape[:2]
        x, y, _, _ = flip_rotate_box(sample.local_box, (cw, ch), flip, k)
        sample = Sample(
            local=flip_rotate(sample.local, flip, k),
            context=flip_rotate(sample.context, flip, k),
            local_mask=flip_rotate(sample.local_mask, flip, k),
            context_mask=flip_rotate(sample.context_mask, flip, k),
            offset=(x, y),
        )
    if hed or bright or contr != 1.0:
        images = [sample.local.astype(np.float32) / 255, sample.context.astype(np.float32) / 255]
        if hed:
            images = hed_jitter(images, np.asarray(scale), np.asarray(bias))
        if bright or contr != 1.0:
            images = color_jitter(images, bright, contr)
        local, context = (np.rint(img * 255).astype(np.uint8) for img in images)
        sample = replace(sample, local=local, context=context)
    return sample
