"""Configuration of a synthetic Gleason-like slide."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
from dataclasses import dataclass
from typing import Any

from napari_sgnet.errors import UserInputError

__all__ = ["VERSIONS", "SynthConfig", "SynthConfigError"]

#: Generator versions :class:`SynthConfig` accepts.
VERSIONS = (1, 2)


class SynthConfigError(UserInputError):
    """A synthetic-slide setting is out of range."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic slide; equal configs give identical pixels.

    Parameters
    ----------
    width, height : int
        Level-0 size in pixels; ``height`` defaults to ``width``.
    seed : int
        Seed of every random choice (layout, glands, nuclei, pixel noise).
    mpp : float
        Level-0 pixel size in µm/px (0.5 = a 20x scan). Tissue is defined in µm, so a
        different ``mpp`` rescales pixels, not anatomy.
    chunk_size : int
        Chunk side of every level's dask array (and of the written tiles).
    tissue_fraction : float
        Approximate fraction of the slide covered by tissue (the rest is glass).
    region_size_um : float
        Typical diameter of a graded region (cell of the region partition), µm.
    class_weights : tuple of 5 floats
        Relative frequency of region classes: stroma, benign, Gleason 3, 4, 5.
    gland_spacing : float
        Multiplier of every class's gland spacing (1 = the documented scales; < 1 denser).
    stain_shift : float
        Stain/scanner domain shift: 0 = reference H&E; 1 = a strong shift (stain vectors
        rotated by 20 degrees, haematoxylin x1.35, eosin x0.75, warmer glass); negative values
        shift the other way. Image only: labels never change.
    noise : float
        Standard deviation of additive pixel noise, in 8-bit grey levels (image only).
    blur : float
        Gaussian blur sigma in level-0 pixels, scaled with each level (image only).
    min_level_size : int
        The pyramid halves until the larger side is at most this many pixels.
    name : str
        Slide name used for layers and files.
    version : int
        Generator version: 1 = region-Voronoi blobs of tissue (glass and stroma labelled 1);
        2 = needle-biopsy cores on glass (label 0), outlined gland groups, real tumour gland
        densities, basal cells, mimics and distractors (see ``docs/synthetic.md``).
        The default is 2; configs stored without a version are version 1.
    """

    width: int = 16384
    height: int | None = None
    seed: int = 0
    mpp: float = 0.5
    chunk_size: int = 512
    tissue_fraction: float = 0.6
    region_size_um: float = 2000.0
    class_weights: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    gland_spacing: float = 1.0
    stain_shift: float = 0.0
    noise: float = 3.0
    blur: float = 0.0
    min_level_size: int = 1024
    name: str = "synthetic"
    version: int = 2

    def __post_init__(self) -> None:
        if self.height is None:
            object.__setattr__(self, "height", self.width)
        for name in ("width", "height", "seed", "chunk_size", "min_level_size", "version"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, operator.index(value))
            except TypeError:
                raise SynthConfigError(f"{name} must be an integer, got {value!r}") from None
        object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        height = self.rows
        checks = [
            (
                self.width >= 1 and height >= 1,
                f"size must be positive: {self.width}x{height}",
            ),
            (self.width <= 2**31 and height <= 2**31, "size must be below 2**31 pixels"),
            (math.isfinite(self.mpp) and self.mpp > 0, f"mpp must be positive, got {self.mpp}"),
            (self.chunk_size >= 16, f"chunk_size must be >= 16, got {self.chunk_size}"),
            (
                0.0 < self.tissue_fraction <= 1.0,
                f"tissue_fraction must be in (0, 1], got {self.tissue_fraction}",
            ),
            (
                self.region_size_um >= 400,
                f"region_size_um must be >= 400, got {self.region_size_um}",
            ),
            (
                len(self.class_weights) == 5,
                f"class_weights needs 5 values, got {self.class_weights}",
            ),
            (
                all(w >= 0 for w in self.class_weights) and sum(self.class_weights) > 0,
                f"class_weights must be non-negative with a positive sum: {self.class_weights}",
            ),
            (
                0.25 <= self.gland_spacing <= 4.0,
                f"gland_spacing must be in [0.25, 4], got {self.gland_spacing}",
            ),
            (
                math.isfinite(self.stain_shift) and abs(self.stain_shift) <= 3,
                f"stain_shift must be in [-3, 3], got {self.stain_shift}",
            ),
            (0.0 <= self.noise <= 64.0, f"noise must be in [0, 64], got {self.noise}"),
            (0.0 <= self.blur <= 32.0, f"blur must be in [0, 32] pixels, got {self.blur}"),
            (self.min_level_size >= 16, f"min_level_size must be >= 16, got {self.min_level_size}"),
            (self.version in VERSIONS, f"version must be one of {VERSIONS}, got {self.version}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SynthConfigError(message)

    @property
    def rows(self) -> int:
        """Level-0 height in pixels (``height``, which defaults to ``width``)."""
        assert self.height is not None  # __post_init__ fills it in
        return self.height

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 ``(height, width)``."""
        return (int(self.rows), int(self.width))

    @property
    def downsamples(self) -> tuple[int, ...]:
        """Power-of-two downsample of each pyramid level, largest level first."""
        out = [1]
        while max(-(-self.width // out[-1]), -(-int(self.rows) // out[-1])) > self.min_level_size:
            out.append(out[-1] * 2)
        return tuple(out)

    def level_shape(self, downsample: int) -> tuple[int, int]:
        """``(height, width)`` of the level with this downsample (ceil division)."""
        return (-(-int(self.rows) // downsample), -(-self.width // downsample))

    def replace(self, **changes: Any) -> SynthConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in written files' metadata)."""
        out = dataclasses.asdict(self)
        out["class_weights"] = list(self.class_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SynthConfigError(f"unknown synthetic config keys: {sorted(unknown)}")
        kwargs = dict(data)
        kwargs.setdefault("version", 1)
        if "class_weights" in kwargs:
            kwargs["class_weights"] = tuple(kwargs["class_weights"])
        return cls(**kwargs)

    def token(self) -> str:
        """Short stable hash of the config (names dask keys)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def layout_token(self) -> str:
        """Hash of the fields the label map depends on (image-only knobs excluded)."""
        data = self.to_dict()
        for key in ("stain_shift", "noise", "blur", "name"):
            data.pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
