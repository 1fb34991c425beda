"""Stain normalisation of a model's input: the one implementation, in torch, on the device.

A model config may ask for stain normalisation
(:class:`~napari_sgnet.config.StainNormalisation`, saved in ``config.json``). It is applied by
:func:`napari_sgnet.model.runtime.input_normaliser` to every uint8 image batch a model sees,
before the ``mean``/``std`` normalisation: by the inference predictor
(:class:`~napari_sgnet.inference.predictor.TorchPredictor`), and by training, evaluation,
fine-tuning and batch-norm recalibration (all through :func:`napari_sgnet.model.runtime.normalise`).
So a model trained with normalisation sees exactly the same transform at inference.

Reinhard (Reinhard et al. 2001, "Color transfer between images"; in CIELAB as in most
histology tools, e.g. staintools): per image, the mean and standard deviation of each CIELAB
channel over the image's *tissue* pixels (stained: ``max(RGB) - min(RGB) > 25``, the rule of
``napari_sgnet.training.dataset.tissue_pixels``) are mapped to the target's; every pixel gets
the same affine map, and the result is converted back to sRGB and clipped to 0-255. Images
with less tissue than ``min_tissue`` pass through unchanged (glass has no stain to match).
The statistics are per image (each local patch and each surrounding patch on its own), so a
tile's result depends only on its own pixels: the same in training, evaluation and inference.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from napari_sgnet.config import StainNormalisation

__all__ = [
    "GLASS_SATURATION",
    "ReinhardNormaliser",
    "fit_reinhard",
    "lab_statistics",
    "lab_to_rgb",
    "rgb_to_lab",
    "stain_normaliser",
]

#: Pixels whose ``max(RGB) - min(RGB)`` is at most this (0-255) are glass, not tissue.
GLASS_SATURATION = 25.0

# sRGB (D65) <-> XYZ, as skimage.color; white point D65.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE = (0.95047, 1.0, 1.08883)
_EPS = 0.008856
_KAPPA = 7.787


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` channels mixed by the ``3 x 3`` matrix ``m`` (output row = m @ input)."""
    return torch.einsum("ij,bjhw->bihw", m, x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in 0-255 (uint8 or float) -> CIELAB float32 (L in 0-100)."""
    c = rgb.float() / 255.0
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_XYZ_FROM_RGB, dtype=torch.float32, device=rgb.device)
    white = torch.tensor(_WHITE, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    xyz = _mix(lin, m) / white
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB ``(B, 3, H, W)`` -> sRGB float32 in 0-255 (clipped)."""
    lum, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (lum + 16) / 116
    f = torch.cat([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f**3 > _EPS, f**3, (f - 16 / 116) / _KAPPA)
    white = torch.tensor(_WHITE, dtype=torch.float32, device=lab.device).view(1, 3, 1, 1)
    m = torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)).float()
    lin = _mix(xyz * white, m.to(lab.device)).clamp(0.0, 1.0)
    c = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return (c * 255.0).clamp(0.0, 255.0)


def _tissue(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` float mask of stained pixels of 0-255 RGB."""
    x = rgb.float()
    return ((x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)) > GLASS_SATURATION).float()


def _masked_stats(
    lab: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image mean and std ``(B, 3, 1, 1)`` of ``lab`` over ``mask``, and the mask's
    fraction ``(B, 1, 1, 1)``."""
    count = mask.sum(dim=(2, 3), keepdim=True)
    n = count.clamp_min(1.0)
    mean = (lab * mask).sum(dim=(2, 3), keepdim=True) / n
    var = (((lab - mean) ** 2) * mask).sum(dim=(2, 3), keepdim=True) / n
    fraction = count / float(mask.shape[2] * mask.shape[3])
    return mean, var.clamp_min(0.0).sqrt(), fraction


class ReinhardNormaliser:
    """Reinhard stain normalisation of uint8 (or float 0-255) RGB batches, on the device.

    Parameters
    ----------
    spec : StainNormalisation
        Method ``"reinhard"``, the target CIELAB statistics and ``min_tissue``.
    device : torch.device
        Where the target lives (and the input is expected).
    """

    def __init__(self, spec: StainNormalisation, device: torch.device | str = "cpu") -> None:
        if spec.method != "reinhard":
            raise ValueError(f"ReinhardNormaliser needs method 'reinhard', got {spec.method!r}")
        self.spec = spec
        dev = torch.device(device)
        self.target_mean = torch.tensor(spec.target_mean, dtype=torch.float32, device=dev)
        self.target_std = torch.tensor(spec.target_std, dtype=torch.float32, device=dev)
        self.target_mean = self.target_mean.view(1, 3, 1, 1)
        self.target_std = self.target_std.view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` 0-255 RGB -> normalised float32 0-255 RGB, memory format kept."""
        channels_last = images.dim() == 4 and images.is_contiguous(
            memory_format=torch.channels_last
        )
        rgb = images.float()
        lab = rgb_to_lab(rgb)
        mean, std, fraction = _masked_stats(lab, _tissue(rgb))
        scale = self.target_std / std.clamp_min(1e-3)
        mapped = lab_to_rgb((lab - mean) * scale + self.target_mean)
        keep = fraction >= max(self.spec.min_tissue, 1e-9)  # glass-only images pass through
        out = torch.where(keep, mapped, rgb)
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def stain_normaliser(
    spec: StainNormalisation | None, device: torch.device | str = "cpu"
) -> ReinhardNormaliser | None:
    """The normaliser a model config's ``stain_normalisation`` asks for (``None``: none)."""
    if spec is None:
        return None
    return ReinhardNormaliser(spec, device)


def _as_batch(images: Iterable[np.ndarray] | np.ndarray) -> list[torch.Tensor]:
    arrays = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[-1] < 3:
            raise ValueError(f"expected (H, W, 3) RGB images, got shape {a.shape}")
        out.append(torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None])
    return out


def lab_statistics(images: Iterable[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB mean and std over the tissue pixels of ``(H, W, 3)`` uint8 RGB image(s), pooled.

    Raises
    ------
    ValueError
        When the images have no tissue pixels.
    """
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0.0
    for t in _as_batch(images):
        lab = rgb_to_lab(t).double()
        mask = _tissue(t).bool()[0, 0]
        values = lab[0][:, mask]
        total += values.sum(dim=1).numpy()
        total_sq += (values**2).sum(dim=1).numpy()
        count += float(mask.sum())
    if count == 0:
        raise ValueError("no tissue pixels (max(RGB) - min(RGB) > 25) to fit stain statistics")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, std


def fit_reinhard(
    images: Iterable[np.ndarray] | np.ndarray, min_tissue: float = 0.05
) -> StainNormalisation:
    """A Reinhard :class:`~napari_sgnet.config.StainNormalisation` whose target is the CIELAB
    statistics of the tissue in ``images`` (reference tiles of the training stain)."""
    mean, std = lab_statistics(images)
    return StainNormalisation(
        method="reinhard",
        target_mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        target_std=(float(std[0]), float(std[1]), float(std[2])),
        min_tissue=min_tissue,
    )
