"""Frozen configuration dataclasses, saved beside what they configure.

``ModelConfig`` travels with a checkpoint as ``config.json``; nothing here
imports torch, so the viewer and the IO layer can read a model's description
without loading the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.errors import UserInputError
from napari_sgnet.palette import GLEASON, Palette
from napari_sgnet.validate import check_int, check_mpp, check_number, json_depth_problem

__all__ = [
    "BASELINE_INPUTS",
    "CONFIG_VERSION",
    "STAIN_METHODS",
    "ConfigError",
    "ModelConfig",
    "OODReference",
    "StainNormalisation",
]

CONFIG_VERSION = 1
#: Upper bounds a model config's sizes are checked against (a larger value is a broken file).
MAX_PATCH_SIZE = 4096
MAX_SCI_WIDTH = 4096
MAX_CONFIG_BYTES = 16 * 2**20

#: What the baseline's general branch sees (``ModelConfig.baseline_input``): ``"local"`` the
#: local patch at full resolution, ``"context"`` the surrounding patch downsampled to the
#: local patch's size (SGNet's field of view at ``1 / context_factor`` of the resolution).
BASELINE_INPUTS = ("local", "context")


class ConfigError(UserInputError):
    """A configuration file or value is invalid."""


def _floats(values: Any, name: str, size: int | None = None) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if size is not None and len(out) != size:
        raise ConfigError(f"ood.{name} needs {size} values, got {len(out)}")
    return out


@dataclass(frozen=True)
class OODReference:
    """Statistics of a model's training tiles, for the out-of-distribution check.

    Computed at the end of training (or added later by ``napari-sgnet calibrate-ood``)
    and judged by :mod:`napari_sgnet.inference.ood`. Two descriptors per tile: the mean
    and standard deviation of the optical density of its tissue pixels per RGB channel
    (6 values; full covariance), and the spatial mean of the model's decoder features
    (one value per channel; diagonal). Thresholds are calibrated on held-out tiles.

    Parameters
    ----------
    colour_mean : tuple of float
        Mean colour descriptor over the training tiles (6 values).
    colour_cov : tuple of tuple of float
        Its 6 x 6 covariance (shrunk towards the diagonal).
    feature_mean, feature_std : tuple of float or None
        Per-channel mean and standard deviation of the pooled decoder features.
    colour_threshold, feature_threshold : float or None
        Tile distances above these are unusual (see ``calibration`` for the rule).
    n_tiles : int
        Training tiles the statistics were computed on.
    weights : str
        First 12 hex digits of the weights digest the feature statistics belong to.
    method : str
        Name of the descriptor and distance definition.
    calibration : dict
        How the thresholds were found: held-out sources and seeds, rule, distances.
    """

    colour_mean: tuple[float, ...]
    colour_cov: tuple[tuple[float, ...], ...]
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    colour_threshold: float | None = None
    feature_threshold: float | None = None
    n_tiles: int = 0
    weights: str = ""
    method: str = "od-mean-std/pooled-decoder/v1"
    calibration: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        k = len(self.colour_mean)
        if k == 0 or len(self.colour_cov) != k or any(len(r) != k for r in self.colour_cov):
            raise ConfigError(f"ood.colour_cov must be {k} x {k}")
        if (self.feature_mean is None) != (self.feature_std is None) or (
            self.feature_mean is not None
            and self.feature_std is not None
            and (len(self.feature_mean) != len(self.feature_std) or min(self.feature_std) <= 0)
        ):
            raise ConfigError("ood.feature_mean/feature_std must match, with std > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        out = dataclasses.asdict(self)
        out["colour_cov"] = [list(r) for r in self.colour_cov]
        for key in ("colour_mean", "feature_mean", "feature_std"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODReference:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"ood must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown ood keys: {sorted(unknown)}")
        kw = dict(data)
        kw["colour_mean"] = _floats(kw.get("colour_mean", ()), "colour_mean")
        kw["colour_cov"] = tuple(_floats(r, "colour_cov") for r in kw.get("colour_cov", ()))
        for key in ("feature_mean", "feature_std"):
            if kw.get(key) is not None:
                kw[key] = _floats(kw[key], key)
        return cls(**kw)


#: Stain normalisation methods a model config may ask for (see :mod:`napari_sgnet.model.stain`).
STAIN_METHODS = ("reinhard",)


@dataclass(frozen=True)
class StainNormalisation:
    """Stain normalisation applied to a model's input, in training and inference alike.

    Saved in ``config.json`` as
    ``{"method": "reinhard", "target": {"mean": [L, a, b], "std": [L, a, b]}, "min_tissue": f}``
    and applied by :mod:`napari_sgnet.model.stain` on the device, before the ``mean``/``std``
    normalisation (:mod:`napari_sgnet.model.runtime`).

    Parameters
    ----------
    method : str
        ``"reinhard"``: each image's CIELAB channels are shifted and scaled so that the mean
        and standard deviation over its tissue pixels match ``target_mean``/``target_std``
        (Reinhard et al. 2001, in CIELAB as most histology implementations).
    target_mean, target_std : tuple of 3 floats
        Target CIELAB statistics (``L`` in 0-100); fit them on reference tissue with
        :func:`napari_sgnet.model.stain.fit_reinhard`.
    min_tissue : float
        Images whose tissue (stained, see ``napari_sgnet.training.dataset.tissue_pixels``)
        covers less than this fraction are passed through unchanged: glass has no stain
        statistics to match.
    """

    method: str
    target_mean: tuple[float, float, float]
    target_std: tuple[float, float, float]
    min_tissue: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in STAIN_METHODS:
            raise ConfigError(
                f"stain_normalisation.method must be one of {list(STAIN_METHODS)}, "
                f"got {self.method!r}"
            )
        if len(self.target_mean) != 3 or len(self.target_std) != 3:
            raise ConfigError("stain_normalisation target mean and std need 3 values (L, a, b)")
        if min(self.target_std) <= 0 or not all(
            math.isfinite(v) for v in (*self.target_mean, *self.target_std)
        ):
            raise ConfigError(
                f"stain_normalisation target must be finite with std > 0: "
                f"{self.target_mean}, {self.target_std}"
            )
        if not 0 <= self.min_tissue < 1:
            raise ConfigError(
                f"stain_normalisation.min_tissue must be in [0, 1), got {self.min_tissue}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {
            "method": self.method,
            "target": {"mean": list(self.target_mean), "std": list(self.target_std)},
            "min_tissue": self.min_tissue,
        }

    @classmethod
    def from_dict(cls, data: Any) -> StainNormalisation:
        """Inverse of :meth:`to_dict`; a missing target or unknown key is a :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"stain_normalisation must be null or a JSON object, got {type(data).__name__}"
            )
        unknown = set(data) - {"method", "target", "min_tissue"}
        if unknown:
            raise ConfigError(f"unknown stain_normalisation keys: {sorted(unknown)}")
        method = data.get("method")
        target = data.get("target")
        if not isinstance(target, dict) or target.get("mean") is None or target.get("std") is None:
            raise ConfigError(
                f"stain_normalisation {method!r} needs a target: "
                '"target": {"mean": [L, a, b], "std": [L, a, b]} (CIELAB statistics of '
                "reference tissue; fit them with napari_sgnet.model.stain.fit_reinhard)"
            )
        try:
            mean = tuple(float(v) for v in target["mean"])
            std = tuple(float(v) for v in target["std"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"stain_normalisation target must be numbers: {exc}") from exc
        return cls(
            method=str(method),
            target_mean=mean,  # type: ignore[arg-type]  # length checked in __post_init__
            target_std=std,  # type: ignore[arg-type]
            min_tissue=float(data.get("min_tissue", 0.05)),
        )


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and apply a segmentation model.

    Parameters
    ----------
    general_branch : str
        Name of the general-branch architecture in the model registry.
    use_context : bool
        True for SGNet (general branch + surrounding-context branch, with the SCB and the
        auxiliary head), False for a baseline (the general branch alone).
    baseline_input : {"local", "context"}
        What a baseline (``use_context=False``) feeds its general branch: ``"local"`` (the
        default, and what configs without the key load as) the local patch; ``"context"`` the
        surrounding patch downsampled to the local size, whose logits are then cropped to the
        local patch (the same field of view as SGNet, ``1 / context_factor`` the resolution).
        Must be ``"local"`` for SGNet. Part of the architecture hash only when not ``"local"``.
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
    stain_normalisation : StainNormalisation or None
        Stain normalisation of the input, applied identically in training and inference
        (``None``, the default and what configs without the key load as: none).
    ood : OODReference or None
        Training-data statistics for the out-of-distribution check (``None``: the check
        cannot judge this model). Not part of the architecture hash.
    """

    general_branch: str = "deeplabv3plus_small"
    use_context: bool = True
    baseline_input: str = "local"
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
    ood: OODReference | None = field(default=None, compare=False, hash=False)
    stain_normalisation: StainNormalisation | None = None

    def __post_init__(self) -> None:
        self._check_ranges()
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
        if self.baseline_input not in BASELINE_INPUTS:
            raise ConfigError(
                f"baseline_input must be one of {list(BASELINE_INPUTS)}, "
                f"got {self.baseline_input!r}"
            )
        if self.use_context and self.baseline_input != "local":
            raise ConfigError(
                f"baseline_input={self.baseline_input!r} describes a baseline: it needs "
                "use_context=False (SGNet always reads both patches)"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std must be 3 values with std > 0: {self.mean}, {self.std}")

    def _check_ranges(self) -> None:
        """Type, finiteness and range of every number (the shared validator), so a config
        with ``mpp: NaN``, ``sci_heads: 0`` or a 2^20 patch is refused with a message."""
        err = ConfigError
        check_int(self.patch_size, "patch_size", lo=32, hi=MAX_PATCH_SIZE, multiple_of=32,
                  error=err, allow_str=False)
        check_number(self.context_factor, "context_factor", lo=1, hi=16, error=err, allow_str=False)
        if self.mpp is not None:
            check_mpp(self.mpp, "mpp", error=err, allow_str=False)
        check_int(self.sci_width, "sci_width", lo=1, hi=MAX_SCI_WIDTH, error=err, allow_str=False)
        check_int(self.sci_window, "sci_window", lo=1, hi=64, error=err, allow_str=False)
        check_int(self.sci_heads, "sci_heads", lo=1, hi=64, error=err, allow_str=False)
        check_int(self.sci_blocks, "sci_blocks", lo=0, hi=32, error=err, allow_str=False)
        if self.sci_width % self.sci_heads:
            raise ConfigError(
                f"sci_width ({self.sci_width}) must be a multiple of sci_heads ({self.sci_heads})"
            )
        for key in ("mean", "std"):
            values = getattr(self, key)
            if not isinstance(values, (tuple, list)) or len(values) != 3:
                raise ConfigError(f"{key} must be 3 numbers, got {values!r}")
            for v in values:
                lo = 0 if key == "mean" else 1e-6
                check_number(v, key, lo=lo, hi=10, error=err, allow_str=False)

    @property
    def num_classes(self) -> int:
        """Number of model output classes."""
        return self.palette.num_classes

    @property
    def needs_context(self) -> bool:
        """Whether the model reads the surrounding patch (SGNet, and the same-field-of-view
        baseline); ``use_context`` says whether it has the context branch and auxiliary head."""
        return self.use_context or self.baseline_input == "context"

    @property
    def kind(self) -> str:
        """``"SGNet"``, ``"baseline (local patch)"`` or ``"baseline (same field of view)"``."""
        if self.use_context:
            return "SGNet"
        if self.baseline_input == "context":
            return "baseline (same field of view)"
        return "baseline (local patch)"

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
            if isinstance(value, (Palette, OODReference, StainNormalisation)):
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
        if check_int(data.get("version", CONFIG_VERSION), "version", lo=0,
                     error=ConfigError) > CONFIG_VERSION:
            raise ConfigError(
                f"model config version {data['version']} is newer than this napari-sgnet "
                f"understands ({CONFIG_VERSION}); upgrade napari-sgnet"
            )
        kwargs = dict(data)
        try:
            if "palette" in kwargs:
                kwargs["palette"] = Palette.from_dict(kwargs["palette"])
            if kwargs.get("ood") is not None:
                kwargs["ood"] = OODReference.from_dict(kwargs["ood"])
            if kwargs.get("stain_normalisation") is not None:
                kwargs["stain_normalisation"] = StainNormalisation.from_dict(
                    kwargs["stain_normalisation"]
                )
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
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"{path}: the model config is {path.stat().st_size} bytes, more than "
                    f"the {MAX_CONFIG_BYTES} a config.json can plausibly need"
                )
            text = path.read_text()
            problem = json_depth_problem(text)
            if problem is not None:
                raise ConfigError(f"{path}: cannot read model config: {problem}")
            data = json.loads(text)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: cannot read model config: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def architecture_hash(self) -> str:
        """Short hash of the fields that define the network's shape and input contract."""
        arch = self.to_dict()
        for key in ("training", "metrics", "name", "ood"):
            arch.pop(key, None)
        if arch.get("stain_normalisation") is None:  # configs from before the field hash as then
            arch.pop("stain_normalisation", None)
        if arch.get("baseline_input") == "local":  # likewise
            arch.pop("baseline_input", None)
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]
