"""The one model runtime: device choice, autocast precision and uint8 normalisation.

Inference (:class:`~napari_sgnet.inference.predictor.TorchPredictor`), training, evaluation
and fine-tuning all call these functions, so a model sees the same input and runs on the
same device whichever path runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from napari_sgnet.errors import DeviceError, UserInputError
from napari_sgnet.model.stain import stain_normaliser

__all__ = [
    "InputNormaliser",
    "UInt8Normaliser",
    "autocast",
    "autocast_dtype",
    "gpu_count",
    "input_normaliser",
    "normalise",
    "resolve_device",
]

_PRECISIONS = ("auto", "bf16", "fp32")


def gpu_count() -> int:
    """Number of CUDA devices visible to this process."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a usable device.

    ``"auto"`` is CUDA when available, else Apple MPS, else the CPU.

    Raises
    ------
    DeviceError
        If the requested device is not available on this machine (a user-input error:
        the CLI and the dock show it as a message).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _has_mps() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise DeviceError(f"device {name!r} is not a valid device name") from exc
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s)")
        return dev
    if name == "mps":
        if not _has_mps():
            raise DeviceError("device 'mps' requested but MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device {name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = full float32).

    ``"auto"`` is bf16 on CUDA devices that support it and float32 elsewhere (CPU bf16
    autocast exists but is much slower than float32 on the CPUs measured, see
    docs/benchmarks.md); ``"bf16"`` forces bf16 autocast, ``"fp32"`` disables it.

    Raises
    ------
    UserInputError
        If ``precision`` is not one of ``"auto"``, ``"bf16"``, ``"fp32"``.
    """
    if precision not in _PRECISIONS:
        raise UserInputError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


class UInt8Normaliser:
    """``(x / 255 - mean) / std`` as one fused multiply-add on the device.

    Parameters
    ----------
    mean, std : sequence of 3 floats
        Per-channel statistics of ``uint8 / 255`` RGB input (a model config's ``mean``/``std``).
    device : torch.device
        Where the scale and shift live (and where the input is expected).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        m = torch.tensor(tuple(mean), dtype=torch.float32, device=device)
        s = torch.tensor(tuple(std), dtype=torch.float32, device=device)
        self.scale = (1.0 / (255.0 * s)).view(1, 3, 1, 1)
        self.shift = (-m / s).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0-255) ``(B, 3, H, W)`` -> normalised float32, memory format kept."""
        return torch.addcmul(self.shift, images.float(), self.scale)


class InputNormaliser:
    """A model's whole input transform: its stain normalisation, if its config asks for one
    (:mod:`napari_sgnet.model.stain`), then :class:`UInt8Normaliser`.

    Parameters
    ----------
    config : object
        Anything with ``mean``/``std`` (and optionally ``stain_normalisation``): a ModelConfig.
    device : torch.device
        Where the input is expected.
    """

    def __init__(self, config: object, device: torch.device) -> None:
        mean = getattr(config, "mean")  # noqa: B009 - any config with mean/std
        std = getattr(config, "std")  # noqa: B009
        self.stain = stain_normaliser(getattr(config, "stain_normalisation", None), device)
        self.uint8 = UInt8Normaliser(mean, std, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0-255) ``(B, 3, H, W)`` -> normalised float32."""
        if self.stain is not None:
            images = self.stain(images)
        return self.uint8(images)


def input_normaliser(config: object, device: torch.device) -> InputNormaliser:
    """The :class:`InputNormaliser` of ``config`` on ``device`` (build once, call per batch)."""
    return InputNormaliser(config, device)


def normalise(images: torch.Tensor, config: object) -> torch.Tensor:
    """Normalise uint8 ``(B, 3, H, W)`` images as ``config`` asks: stain normalisation (when
    ``config.stain_normalisation`` is set), then ``config.mean``/``config.std``.

    The same arithmetic as :class:`InputNormaliser` (build one of those in a hot loop).
    """
    return InputNormaliser(config, images.device)(images)
