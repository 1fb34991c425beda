"""Fine-tuning's frozen configuration, progress reports and result."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from napari_sgnet.errors import OptionError
from napari_sgnet.training.augment import AugmentConfig
from napari_sgnet.training.config import TrainConfig

__all__ = ["FinetuneConfig", "FinetuneProgress", "FinetuneResult"]


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune a model on corrections.

    Parameters
    ----------
    steps : int
        Optimiser steps.
    lr : float
        Peak AdamW learning rate (lower than training from scratch: 5e-5).
    batch_size : int
        Samples per step.
    weight_decay : float
        AdamW decoupled weight decay.
    warmup_steps : int, optional
        Linear warm-up; default ``min(20, steps // 10)``. Then cosine decay to
        ``lr * min_lr_ratio``.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``.
    grad_clip : float or None
        Gradient-norm clipping.
    loss_weights : tuple of float
        SGNet loss weights (local CE, auxiliary CE, consistency), as in the paper.
    seed : int
        Seeds the split and the data stream: same corrections + same seed = same split.
    holdout_fraction : float
        Share of corrected regions held out for the before/after score.
    block_tiles : int
        Corrections larger than ``block_tiles x block_tiles`` model tiles are cut into
        blocks of that size (split units).
    min_region_pixels : int
        Regions with fewer corrected pixels are ignored.
    max_unlabelled : float
        Largest fraction of uncorrected pixels accepted in a training local patch.
    balance_classes : bool
        Draw the class first, then a corrected pixel of that class.
    allow_single_class : bool
        Corrections of one class only are refused (the model would learn to predict that class
        everywhere) unless this is set; then they only warn.
    device, precision : str
        ``"auto"`` or a torch device; ``"auto"``, ``"bf16"`` or ``"fp32"``.
    num_threads : int, optional
        ``torch.set_num_threads`` during the run.
    eval_batch_size : int
        Tiles per forward pass when scoring the held-out regions.
    augment : AugmentConfig
        Flips, rotations and stain/colour jitter.
    bn_recalibration_batches : int
        After training, re-estimate batch-norm statistics on this many training batches with
        the final weights (0: keep the trainer's running averages); see
        :mod:`.bn_recalibrate`.
    """

    steps: int = 300
    lr: float = 5e-5
    batch_size: int = 8
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 5.0
    loss_weights: tuple[float, float, float] = (1.0, 0.4, 0.1)
    seed: int = 0
    holdout_fraction: float = 0.25
    block_tiles: int = 2
    min_region_pixels: int = 64
    max_unlabelled: float = 0.95
    balance_classes: bool = True
    allow_single_class: bool = False
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 8
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    bn_recalibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise OptionError("steps, batch_size and eval_batch_size must be positive")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError(f"lr must be positive, got {self.lr}")
        if not 0 < self.holdout_fraction < 1:
            raise OptionError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.bn_recalibration_batches < 0:
            raise OptionError("bn_recalibration_batches must be >= 0")
        if self.block_tiles <= 0 or self.min_region_pixels < 1:
            raise OptionError("block_tiles and min_region_pixels must be positive")
        if not 0 <= self.max_unlabelled <= 1:
            raise OptionError(f"max_unlabelled must lie in [0, 1], got {self.max_unlabelled}")

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (recorded in the new model's config)."""
        out = dataclasses.asdict(self)
        out["loss_weights"] = list(self.loss_weights)
        return out

    def train_config(self) -> TrainConfig:
        """The trainer's configuration for this run (one checkpoint, at the end)."""
        warmup = self.warmup_steps if self.warmup_steps is not None else min(20, self.steps // 10)
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=warmup,
            min_lr_ratio=self.min_lr_ratio,
            grad_clip=self.grad_clip,
            loss_weights=cast("tuple[float, float, float]", tuple(self.loss_weights)),
            seed=self.seed,
            val_every=0,
            checkpoint_every=0,
            precision=self.precision,
            device=self.device,
            num_workers=0,
            num_threads=self.num_threads,
            max_unlabelled=self.max_unlabelled,
            balance_classes=self.balance_classes,
            augment=self.augment,
        )


@dataclass(frozen=True)
class FinetuneProgress:
    """One progress report.

    Attributes
    ----------
    stage : {"prepare", "before", "train", "after", "save", "done", "cancelled"}
        What runs: scoring the parent on held-out regions, training, scoring the new model.
    step, total : int
        Progress within the stage (optimiser steps, or tiles scored).
    loss : float or None
        Training loss of the last step.
    eta_s : float or None
        Estimated seconds until the whole run ends.
    elapsed_s : float
        Seconds since the run started.
    message : str
        Human-readable one-liner.
    """

    stage: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes
    ----------
    checkpoint : Path or None
        The new versioned checkpoint folder (``None`` when cancelled).
    name : str
        The new model's name (``<root>-ft-<YYYYMMDD-HHMMSS>``).
    parent : dict
        Parent model: name, path, architecture hash, weights SHA-256.
    before, after : dict
        Held-out scores of the parent and of the new model (``miou``, ``pixel_accuracy``,
        per-class ``iou``, ``pixels``, ``tiles``, ``regions``); ``after`` is empty when cancelled.
    improved : bool
        ``after["miou"] > before["miou"]``.
    cancelled : bool
        The run was cancelled; nothing was written.
    steps : int
        Optimiser steps run.
    wall_time_s : float
        Duration of the whole run.
    split : dict
        Region counts of the split (seed, train / held-out regions and pixels, dropped items).
    device : str
        Where it ran.
    warnings : tuple of str
        Problems that did not stop the run (e.g. one class only, with ``allow_single_class``).
    """

    checkpoint: Path | None
    name: str
    parent: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    improved: bool
    cancelled: bool
    steps: int
    wall_time_s: float
    split: dict[str, Any]
    device: str
    warnings: tuple[str, ...] = ()

    @property
    def miou_before(self) -> float | None:
        """Held-out mIoU of the parent model."""
        return self.before.get("miou")

    @property
    def miou_after(self) -> float | None:
        """Held-out mIoU of the fine-tuned model."""
        return self.after.get("miou")
