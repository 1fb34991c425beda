"""Training samples and their augmentations (numpy, float32, vectorised).

Geometric augmentations (flips, 90-degree rotations) are applied identically to the local
patch, the surrounding patch, both label maps **and** the local patch's box inside the
surrounding patch, so the local patch stays the crop of the surrounding patch at the reported
offset. Photometric augmentations (HED stain jitter, stain-vector hue rotation, saturation,
brightness/contrast, blur, pixel noise) use one draw of parameters for both images of a sample:
they show the same tissue. Where the local patch is the crop of the surrounding patch (always,
for slide samplers), it is still that crop afterwards: blur and noise are applied to the
surrounding patch and the local patch is cut from the result.

The default ranges cover real H&E variation between laboratories and scanners (the reasoning
and sources are in docs/training.md, "Augmentations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from napari_sgnet.errors import OptionError

__all__ = [
    "RGB_FROM_HED",
    "AugmentConfig",
    "Sample",
    "augment",
    "color_jitter",
    "flip_rotate",
    "flip_rotate_box",
    "gaussian_blur",
    "grey_axis_rotation",
    "hed_jitter",
]

#: Ruifrok & Johnston's H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB), as in
#: ``skimage.color.rgb_from_hed``.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_EPS = float(np.log(1e-6))
#: Rec. 601 luma weights: the grey that saturation jitter moves towards or away from.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


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

    Every range is sampled uniformly, once per sample, from the generator handed to
    :func:`augment` (the only source of randomness).

    Parameters
    ----------
    flips, rotations : bool
        Random horizontal flip; random multiple of 90 degrees (with the flip: all 8 symmetries).
    hed_scale, hed_bias : float
        Per-stain multiplicative ``U(1 - s, 1 + s)`` and additive ``U(-b, b)`` jitter of the
        haematoxylin / eosin / DAB densities (Tellez et al. 2018, 2019), in
        ``skimage.color.rgb2hed`` units, where H&E tissue is typically 0.01-0.05: keep the bias
        well below that (it recolours every pixel, glass included; the scale does not).
    brightness, contrast : float
        Additive brightness ``U(-b, b)`` and contrast factor ``U(1 - c, 1 + c)`` on ``[0, 1]`` RGB.
    hue : float
        Rotation of the stain colours about the grey axis of optical-density space by
        ``U(-hue, hue)`` degrees (a change of the stains' hue that leaves glass white).
    saturation : float
        Saturation factor ``U(1 - s, 1 + s)``: RGB moved away from (``> 1``) or towards its grey.
    noise, noise_p : float
        With probability ``noise_p``, additive Gaussian pixel noise (independent per pixel and
        channel) with a standard deviation ``U(0, noise)`` in 8-bit grey levels.
    blur, blur_p : float
        With probability ``blur_p``, a Gaussian blur of sigma ``U(0.3, blur)`` working-level
        pixels (skipped when ``blur <= 0.3``).
    """

    flips: bool = True
    rotations: bool = True
    hed_scale: float = 0.35
    hed_bias: float = 0.006
    brightness: float = 0.1
    contrast: float = 0.15
    hue: float = 20.0
    saturation: float = 0.2
    noise: float = 20.0
    noise_p: float = 0.5
    blur: float = 1.0
    blur_p: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float | int) and not isinstance(value, bool):
                if not math.isfinite(value) or value < 0:
                    raise OptionError(f"AugmentConfig.{f.name} must be >= 0, got {value!r}")
        for name in ("hed_scale", "contrast", "saturation"):
            if getattr(self, name) >= 1:
                message = f"AugmentConfig.{name} must be below 1, got {getattr(self, name)}"
                raise OptionError(message)
        for name in ("noise_p", "blur_p"):
            if getattr(self, name) > 1:
                message = f"AugmentConfig.{name} is a probability, got {getattr(self, name)}"
                raise OptionError(message)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(
            flips=False,
            rotations=False,
            hed_scale=0.0,
            hed_bias=0.0,
            brightness=0.0,
            contrast=0.0,
            hue=0.0,
            saturation=0.0,
            noise=0.0,
            noise_p=0.0,
            blur=0.0,
            blur_p=0.0,
        )

    @classmethod
    def geometric(cls) -> AugmentConfig:
        """Flips and rotations only (no change to any pixel value)."""
        return replace(cls.none(), flips=True, rotations=True)

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """``"stain"`` (the defaults), ``"mild"``, ``"geometric"`` or ``"none"``."""
        if name == "stain":
            return cls()
        if name == "mild":
            return cls.mild()
        if name == "geometric":
            return cls.geometric()
        if name == "none":
            return cls.none()
        raise OptionError(
            f"augmentation preset must be stain, mild, geometric or none, got {name!r}"
        )

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AugmentConfig:
        """Inverse of ``dataclasses.asdict``. Keys a saved config lacks (it was written before
        they existed) are **off**, not the current defaults: a resumed run keeps augmenting as
        it did."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise OptionError(f"unknown augmentation keys: {sorted(unknown)}")
        return replace(cls.none(), **data)  # type: ignore[arg-type]

    @classmethod
    def mild(cls) -> AugmentConfig:
        """The jitter the first bundled weights were trained with (before the stain-robust
        ranges): HED scale 0.05 / bias 0.004, brightness 0.08, contrast 0.1, nothing else."""
        return replace(
            cls.geometric(), hed_scale=0.05, hed_bias=0.004, brightness=0.08, contrast=0.1
        )


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


def grey_axis_rotation(degrees: float) -> np.ndarray:
    """The ``3 x 3`` rotation by ``degrees`` about the grey axis ``(1, 1, 1) / sqrt(3)``, for
    row vectors (``v @ R``); rotating optical densities with it turns the stain hues and leaves
    grey (and glass) where it is."""
    t = math.radians(degrees)
    u = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rot = math.cos(t) * np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * np.outer(u, u)
    return rot.T  # column-vector rotation -> row-vector form


def hed_jitter(
    images: list[np.ndarray], scale: np.ndarray, bias: np.ndarray, hue: float = 0.0
) -> list[np.ndarray]:
    """Jitter stain optical densities: ``hed' = hed * scale + bias`` per stain, then rotate the
    optical densities by ``hue`` degrees about the grey axis.

    Parameters
    ----------
    images : list of numpy.ndarray
        Float32 RGB in ``[0, 1]``, each ``(..., 3)``.
    scale, bias : numpy.ndarray
        ``(3,)`` per-stain factors (H, E, DAB).
    hue : float
        Stain-vector rotation in degrees (:func:`grey_axis_rotation`).

    Returns
    -------
    list of numpy.ndarray
        Float32 RGB in ``[0, 1]``; identity for ``scale = 1, bias = 0, hue = 0``.
    """
    # rgb -> od (linear) -> hed: fold the jitter into one 3x3 matrix plus an offset.
    m = (HED_FROM_RGB * scale[None, :]) @ RGB_FROM_HED
    offset = (bias @ RGB_FROM_HED) * _LOG_EPS  # bias in normalised-od units
    if hue:
        rot = grey_axis_rotation(hue)
        m, offset = m @ rot, offset @ rot
    m32, off32 = m.astype(np.float32), offset.astype(np.float32)
    out = []
    for img in images:
        od = np.log(np.maximum(img, 1e-6, dtype=np.float32))  # = -od * |log eps|
        od = od @ m32 + off32
        out.append(np.clip(np.exp(od), 0.0, 1.0))
    return out


def color_jitter(
    images: list[np.ndarray], brightness: float, contrast: float, saturation: float = 1.0
) -> list[np.ndarray]:
    """Saturation (towards / away from the luma grey), then
    ``(x - 0.5) * contrast + 0.5 + brightness``, on float ``[0, 1]`` RGB, clipped."""
    if saturation == 1.0:
        return [np.clip((img - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) for img in images]
    sat = saturation * np.eye(3) + (1 - saturation) * _LUMA[:, None]  # row vectors: x @ sat
    m = (sat * contrast).astype(np.float32)
    off = np.float32(0.5 - 0.5 * contrast + brightness)
    return [np.clip(img @ m + off, 0.0, 1.0) for img in images]


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    kernel: np.ndarray = (k / k.sum()).astype(np.float32)
    return kernel


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float ``(H, W, C)`` image (reflected edges), vectorised."""
    if sigma <= 0:
        return image
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > r else "edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    result: np.ndarray = out
    return result


def _is_crop(sample: Sample) -> bool:
    x, y, w, h = sample.local_box
    ch, cw = sample.context.shape[:2]
    if x < 0 or y < 0 or x + w > cw or y + h > ch:
        return False
    same: bool = np.array_equal(sample.context[y : y + h, x : x + w], sample.local)
    return same


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig) -> Sample:
    """Apply random geometric and photometric augmentations to a sample.

    Parameters
    ----------
    sample : Sample
        Input sample.
    rng : numpy.random.Generator
        Source of randomness (the only one; same state -> same output). Only enabled
        augmentations draw from it.
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
    scale = rng.uniform(1 - config.hed_scale, 1 + config.hed_scale, 3) if hed else np.ones(3)
    bias = rng.uniform(-config.hed_bias, config.hed_bias, 3) if hed else np.zeros(3)
    bright = rng.uniform(-config.brightness, config.brightness) if config.brightness else 0.0
    contr = rng.uniform(1 - config.contrast, 1 + config.contrast) if config.contrast else 1.0
    hue = rng.uniform(-config.hue, config.hue) if config.hue else 0.0
    sat = rng.uniform(1 - config.saturation, 1 + config.saturation) if config.saturation else 1.0
    blur = 0.0
    if config.blur > 0.3 and config.blur_p > 0 and rng.random() < config.blur_p:
        blur = rng.uniform(0.3, config.blur)
    noise = 0.0
    if config.noise > 0 and config.noise_p > 0 and rng.random() < config.noise_p:
        noise = rng.uniform(0.0, config.noise)

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
    colour = hed or hue or bright or contr != 1.0 or sat != 1.0
    if not (colour or blur or noise):
        return sample
    crop = _is_crop(sample)
    # With the local patch a crop of the surrounding patch, transform the surrounding patch only
    # and cut the local patch from it (blur and noise then agree where the two overlap).
    images = [sample.context.astype(np.float32) / 255]
    if not crop:
        images.append(sample.local.astype(np.float32) / 255)
    if hed or hue:
        images = hed_jitter(images, np.asarray(scale), np.asarray(bias), float(hue))
    if bright or contr != 1.0 or sat != 1.0:
        images = color_jitter(images, float(bright), float(contr), float(sat))
    if blur:
        images = [gaussian_blur(img, float(blur)) for img in images]
    if noise:
        sd = np.float32(noise / 255)
        images = [img + rng.standard_normal(img.shape, dtype=np.float32) * sd for img in images]
    context = np.rint(np.clip(images[0], 0.0, 1.0) * 255).astype(np.uint8)
    if crop:
        x, y, w, h = sample.local_box
        local = np.ascontiguousarray(context[y : y + h, x : x + w])
    else:
        local = np.rint(np.clip(images[1], 0.0, 1.0) * 255).astype(np.uint8)
    return replace(sample, local=local, context=context)
