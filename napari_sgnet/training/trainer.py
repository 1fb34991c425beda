"""The training loop: AdamW, warm-up + cosine schedule, validation, checkpoints, resume.

Output folder layout::

    OUT/step-000500/   model.safetensors, config.json, optimizer.safetensors, trainer_state.json
    OUT/last/          the latest of those (resume point)
    OUT/best/          the one with the best held-out mIoU (or lowest training loss without
                       held-out data); its config.json carries provenance and metrics
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import napari_sgnet
from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.model import build_model, load_checkpoint, sgnet_loss
from napari_sgnet.model.runtime import autocast, autocast_dtype, normalise, resolve_device
from napari_sgnet.training.config import TrainConfig
from napari_sgnet.training.dataset import BatchStream, SampleSource, SlideSource
from napari_sgnet.training.evaluate import evaluate_model
from napari_sgnet.training.ood_stats import FIT_TILES, add_ood_statistics
from napari_sgnet.training.state import (
    load_optimizer_state,
    read_trainer_state,
    save_training_checkpoint,
)

__all__ = ["TrainError", "TrainProgress", "TrainResult", "train"]

log = logging.getLogger(__name__)


class TrainError(UserInputError):
    """Training cannot start (existing output, incompatible resume point, ...)."""


#: Steps between training-loss entries of the history (the saved training curve).
HISTORY_EVERY = 25


@dataclass(frozen=True)
class TrainProgress:
    """One progress report (after every step; ``val`` set after a validation)."""

    step: int
    total: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float
    parts: dict[str, float] = field(default_factory=dict)
    val: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    steps: int
    wall_time_s: float
    best_score: float
    config: ModelConfig
    history: list[dict[str, Any]]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"{device.type} ({cpu}, {torch.get_num_threads()} threads)"


def train(
    model_config: ModelConfig,
    train_sources: Sequence[SampleSource],
    out_dir: str | Path,
    train_config: TrainConfig | None = None,
    val_sources: Sequence[SlideSource] = (),
    resume: bool = False,
    init_checkpoint: str | Path | None = None,
    data_description: dict[str, Any] | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    ood_tiles: int = FIT_TILES,
) -> TrainResult:
    """Train SGNet (``model_config.use_context``) or a baseline (``baseline_input``).

    Parameters
    ----------
    model_config : ModelConfig
        Architecture, classes, patch size, context factor, µm/px.
    train_sources : sequence of SampleSource
        Where training samples come from (:class:`~.dataset.SlideSampler`,
        :class:`~.dataset.PatchFolderSampler`).
    out_dir : path
        Output folder (see the module docstring). Refuses to overwrite an existing run unless
        ``resume``.
    train_config : TrainConfig, optional
        Optimisation settings.
    val_sources : sequence of SlideSource
        Held-out slides with ground truth, scored every ``val_every`` steps and at the end.
    resume : bool
        Continue from ``out_dir/last`` (same batches as an uninterrupted run).
    init_checkpoint : path, optional
        Start from these weights (fine-tuning); the architecture must match.
    data_description : dict, optional
        Recorded in the saved config's ``training["data"]``.
    progress : callable, optional
        Called with a :class:`TrainProgress` after every step.
    ood_tiles : int
        Training tiles the out-of-distribution statistics are fitted on at the end (saved in
        the ``best`` and ``last`` configs, calibrated on ``val_sources`` or, without them, on
        training tiles kept out of the fit; see :mod:`~.ood_stats`). 0: none.

    Returns
    -------
    TrainResult
    """
    tc = train_config or TrainConfig()
    out = Path(out_dir)
    last_dir = out / "last"
    if last_dir.exists() and not resume:
        raise TrainError(f"{out} already holds a training run; resume it or choose another folder")
    if resume and not last_dir.exists():
        raise TrainError(f"{last_dir} does not exist: nothing to resume")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    amp = autocast_dtype(device, tc.precision)
    torch.manual_seed(tc.seed)
    model = build_model(model_config).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr)
    state: dict[str, Any] = {"step": 0, "best_score": -math.inf, "history": [], "wall_time_s": 0.0}
    if resume:
        state = read_trainer_state(last_dir)
        _load_weights(model, last_dir, model_config)
        load_optimizer_state(last_dir, optimizer, state)
        log.info("resuming %s from step %d", out, state["step"])
    elif init_checkpoint is not None:
        _load_weights(model, Path(init_checkpoint), model_config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise UserInputError(f"{out}: cannot create the output folder ({why})") from exc
    start = int(state["step"])
    history: list[dict[str, Any]] = list(state.get("history", []))
    best = float(state.get("best_score", -math.inf))
    wall0 = float(state.get("wall_time_s", 0.0))

    provenance = {
        "data": data_description or {},
        "train_config": tc.to_dict(),
        "seed": tc.seed,
        "batch_size": tc.batch_size,
        "device": str(device),
        "device_name": _device_name(device),
        "precision": "bf16" if amp is torch.bfloat16 else "fp32",
        "torch_version": torch.__version__,
        "napari_sgnet_version": napari_sgnet.__version__,
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
    }

    def checkpoint(path: Path, step: int, metrics: dict[str, Any], wall: float) -> None:
        training = {
            **provenance,
            "steps": step,
            "wall_time_s": round(wall, 1),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        cfg = model_config.replace(training=training, metrics=metrics)
        payload = {
            "step": step,
            "best_score": best,
            "history": history,
            "wall_time_s": wall,
            "latest_metrics": latest_metrics,
            "train_config": tc.to_dict(),
        }
        save_training_checkpoint(path, model, cfg, optimizer, payload)

    loader = torch.utils.data.DataLoader(
        BatchStream(train_sources, tc.batch_size, tc.seed, start, tc.steps, tc.augment),
        batch_size=None,
        num_workers=tc.num_workers,
    )
    t0 = time.perf_counter()
    ema: float | None = None
    latest_metrics: dict[str, Any] = dict(state.get("latest_metrics", {}))
    model.train()
    for step, batch in enumerate(loader, start=start):
        lr = tc.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        parts = _train_step(model, optimizer, batch, model_config, tc, device, amp)
        done = step + 1
        ema = parts["loss"] if ema is None else 0.95 * ema + 0.05 * parts["loss"]
        elapsed = time.perf_counter() - t0
        eta = elapsed / (done - start) * (tc.steps - done)
        is_last = done == tc.steps
        do_val = bool(val_sources) and (bool(tc.val_every and done % tc.val_every == 0) or is_last)
        do_ckpt = bool(tc.checkpoint_every and done % tc.checkpoint_every == 0) or is_last
        val, score = None, None
        if do_val:
            result = evaluate_model(model, model_config, val_sources, tc.val_tile, 8, device, amp)
            model.train()
            val = result.to_dict()
            history.append({"step": done, "loss_ema": round(ema, 5), "val": val})
            latest_metrics = {"held_out": val, "step": done}
            score = val["miou"] if val["miou"] is not None else -math.inf
        elif do_ckpt and not val_sources:
            history.append({"step": done, "loss_ema": round(ema, 5)})
            latest_metrics = {"train_loss_ema": round(ema, 5), "step": done}
            score = -ema
        elif done % HISTORY_EVERY == 0:  # the training curve between validations
            history.append({"step": done, "loss_ema": round(ema, 5)})
        wall = wall0 + time.perf_counter() - t0
        if score is not None and score > best:
            best = score
            checkpoint(out / "best", done, latest_metrics, wall)
        if do_ckpt:
            checkpoint(out / f"step-{done:06d}", done, latest_metrics, wall)
            checkpoint(last_dir, done, latest_metrics, wall)
        if progress is not None:
            progress(TrainProgress(done, tc.steps, parts["loss"], lr, elapsed, eta, parts, val))
    wall = wall0 + time.perf_counter() - t0
    final_state = read_trainer_state(last_dir)
    best_dir = out / "best" if (out / "best").exists() else last_dir
    if ood_tiles and start < tc.steps:
        _add_ood_statistics(
            {best_dir, last_dir}, train_sources, val_sources, ood_tiles, tc.seed, str(device)
        )
    return TrainResult(
        out_dir=out,
        best_dir=best_dir,
        last_dir=last_dir,
        steps=int(final_state["step"]),
        wall_time_s=wall,
        best_score=best,
        config=ModelConfig.load(best_dir / "config.json"),
        history=history,
    )


def _add_ood_statistics(
    folders: set[Path],
    train_sources: Sequence[SampleSource],
    val_sources: Sequence[SlideSource],
    n_tiles: int,
    seed: int,
    device: str,
) -> None:
    """Fit and calibrate the out-of-distribution statistics of each saved checkpoint."""
    held_out = [s.image for s in val_sources]
    names = [s.name or s.image.name for s in val_sources]
    for folder in sorted(folders):
        add_ood_statistics(
            folder,
            train_sources,
            held_out,
            n_tiles=n_tiles,
            seed=seed,
            device=device,
            description={"held_out_slides": names},
        )


def _load_weights(model: torch.nn.Module, path: Path, config: ModelConfig) -> None:
    loaded = load_checkpoint(path)
    if loaded.config.architecture_hash() != config.architecture_hash():
        raise TrainError(f"{path}: checkpoint architecture differs from the requested model")
    model.load_state_dict(loaded.state_dict())


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    config: ModelConfig,
    tc: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, float]:
    local = normalise(batch["local"].to(device, non_blocking=True), config)
    local_labels = batch["local_labels"].to(device, non_blocking=True)
    box = batch["local_box"].to(device)
    context = context_labels = None
    if config.needs_context:  # SGNet and the same-field-of-view baseline read it
        context = normalise(batch["context"].to(device, non_blocking=True), config)
    if config.use_context:  # only SGNet's auxiliary head is trained on its labels
        context_labels = batch["context_labels"].to(device, non_blocking=True)
    with autocast(device, amp):
        outputs = model(local, context, box)
    losses = sgnet_loss(outputs, local_labels, context_labels, box, tc.loss_weights)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}
