"""The trainer's frozen configuration (saved in every training checkpoint)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from napari_sgnet.errors import OptionError
from napari_sgnet.training.augment import AugmentConfig

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train (what to train is a :class:`~napari_sgnet.config.ModelConfig`).

    Parameters
    ----------
    steps : int
        Optimiser steps in total (a resumed run continues up to this count).
    batch_size : int
        Samples per step.
    lr, weight_decay : float
        AdamW learning rate (peak) and decoupled weight decay.
    warmup_steps : int
        Linear warm-up from 0 to ``lr``; then cosine decay to ``lr * min_lr_ratio``.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``.
    grad_clip : float or None
        Gradient-norm clipping (``None``: off).
    loss_weights : tuple of float
        SGNet loss weights (local CE, auxiliary CE, consistency); the baseline uses the first.
    seed : int
        Seeds model initialisation and the data stream (batch ``s`` = draw ``(seed, s)``).
    val_every, checkpoint_every : int
        Validate / write ``step-XXXXXX/`` every so many steps (0: only at the end).
    precision : str
        ``"auto"`` (bf16 autocast on CUDA only), ``"bf16"`` or ``"fp32"``.
    device : str
        ``"auto"`` or a torch device name.
    num_workers : int
        DataLoader worker processes building batches ahead (0: in the training process).
    num_threads : int or None
        ``torch.set_num_threads`` for the run (``None``: leave as is).
    max_unlabelled : float
        Largest fraction of label-0 pixels accepted in a local training patch.
    balance_classes : bool
        Draw the class first, then a position of that class.
    val_tile : int or None
        Tile side for validation (default: the patch size).
    augment : AugmentConfig
        Augmentation strengths.
    """

    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float | None = 5.0
    loss_weights: tuple[float, float, float] = (1.0, 0.4, 0.1)
    seed: int = 0
    val_every: int = 250
    checkpoint_every: int = 500
    precision: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    num_threads: int | None = None
    max_unlabelled: float = 0.5
    balance_classes: bool = True
    val_tile: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise OptionError(
                f"steps and batch_size must be positive: {self.steps}, {self.batch_size}"
            )
        if self.lr <= 0:
            raise OptionError(f"lr must be positive, got {self.lr}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise OptionError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not 0 <= self.max_unlabelled <= 1:
            raise OptionError(f"max_unlabelled must lie in [0, 1], got {self.max_unlabelled}")

    def lr_at(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        out = dataclasses.asdict(self)
        out["loss_weights"] = list(self.loss_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise OptionError(f"unknown train config keys: {sorted(unknown)}")
        kwargs = dict(data)
        if "augment" in kwargs and isinstance(kwargs["augment"], dict):
            kwargs["augment"] = AugmentConfig.from_dict(kwargs["augment"])
        if "loss_weights" in kwargs:
            kwargs["loss_weights"] = tuple(float(v) for v in kwargs["loss_weights"])
        return cls(**kwargs)
