"""Frozen configuration dataclasses, saved beside what they configure.

``ModelConfig`` travels with a checkpoint as ``config.json``; nothing here
imports torch, so the viewer and the IO layer can read a model's description
without loading the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.errors import UserInputError
from napari_sgnet.palette import GLEASON, Palette

__all__ = ["CONFIG_VERSION", "ConfigError", "ModelConfig"]

CONFIG_VERSION = 1


class ConfigError(UserInputError):
    """A configuration file or value is invalid."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and apply a segmentation model.

    Parameters
    ----------
    general_branch : str
        Name of the general-branch architecture in the model registry.
    use_context : bool
        True for SGNet (general branch + surrounding-context branch), False for the baseline.
    palette : Palette
        The classes the model predicts (class ``k`` is label id ``k + 1``).
    patch_size : int
        Side of the local patch in pixels at the working resolution; multiple of 32.
    context_factor : float
        Side of the surrounding patch relative to the local patch (SGNet's alpha).
    mpp : float or None
        Working resolution in µm/px that the model was trained at.
    mean, std : tuple of float
        Per-channel normalisation applied to ``uint8 / 255`` RGB input.
    sci_width, sci_window, sci_heads, sci_blocks : int
        Surrounding Context Integration settings (width, window side, heads, blocks).
    name : str
        Human-readable model name.
    version : int
        Config schema version.
    training : dict
        Provenance: data description, seeds, steps, device, time, parent model.
    metrics : dict
        Held-out metrics measured after training.
    """

    general_branch: str = "deeplabv3plus_small"
    use_context: bool = True
    palette: Palette = GLEASON
    patch_size: int = 256
    context_factor: float = 2.0
    mpp: float | None = 2.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    sci_width: int = 128  # 256 (DESIGN default) is 2.1 M params / 3.3 GFLOPs: too big for CPU
    sci_window: int = 8
    sci_heads: int = 8
    sci_blocks: int = 2
    name: str = "sgnet"
    version: int = CONFIG_VERSION
    training: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.patch_size <= 0 or self.patch_size % 32:
            raise ConfigError(
                f"patch_size must be a positive multiple of 32, got {self.patch_size}"
            )
        if self.context_factor < 1:
            raise ConfigError(f"context_factor must be >= 1, got {self.context_factor}")
        if (self.patch_size * self.context_factor) % 32:
            raise ConfigError(
                "patch_size * context_factor must be a multiple of 32, got "
                f"{self.patch_size} * {self.context_factor}"
            )
        if self.mpp is not None and self.mpp <= 0:
            raise ConfigError(f"mpp must be positive, got {self.mpp}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std must be 3 values with std > 0: {self.mean}, {self.std}")

    @property
    def num_classes(self) -> int:
        """Number of model output classes."""
        return self.palette.num_classes

    @property
    def context_size(self) -> int:
        """Side of the surrounding patch in pixels."""
        return round(self.patch_size * self.context_factor)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Palette):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or ill-typed keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        if int(data.get("version", CONFIG_VERSION)) > CONFIG_VERSION:
            raise ConfigError(
                f"model config version {data['version']} is newer than this napari-sgnet "
                f"understands ({CONFIG_VERSION}); upgrade napari-sgnet"
            )
        kwargs = dict(data)
        try:
            if "palette" in kwargs:
                kwargs["palette"] = Palette.from_dict(kwargs["palette"])
            for key in ("mean", "std"):
                if key in kwargs:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid model config: {exc}") from exc

    def to_json(self) -> str:
        """Pretty JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        """Write ``config.json``."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a ``config.json``; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read model config: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def architecture_hash(self) -> str:
        """Short hash of the fields that define the network's shape and input contract."""
        arch = self.to_dict()
        for key in ("training", "metrics", "name"):
            arch.pop(key, None)
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]
