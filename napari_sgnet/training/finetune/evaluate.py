"""Held-out scoring for fine-tuning: the same tiles before and after, held-out pixels only.

Label-store regions: every tile of the working level's non-overlapping ``patch x patch`` grid
(anchored at ``(0, 0)``, the inference engine's tiling with overlap 0) that meets a held-out
region is predicted with its centred surrounding patch (glass-padded past the edge); only the
region's corrected pixels are scored. These tiles run through the inference tile loop
(:func:`napari_sgnet.inference.loop.run_tiles`) into a
:class:`~napari_sgnet.inference.sinks.ScoreSink`, with the predictor evaluation uses
(:func:`napari_sgnet.training.evaluate.eval_predictor`). Patch-folder regions are not tiles of
a slide: each held-out item's local patch is predicted with its exported surrounding patch (at
its recorded offset, which the tile predictor has no way to take) and scored against its local
mask.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import SGNetError
from napari_sgnet.geometry import Box, chunk_aligned_tiles
from napari_sgnet.inference.loop import run_tiles
from napari_sgnet.inference.plan import WorkItem
from napari_sgnet.inference.sinks import ScoreSink
from napari_sgnet.metrics import ConfusionMatrix
from napari_sgnet.model.runtime import autocast, normalise
from napari_sgnet.training.evaluate import eval_plan, eval_predictor
from napari_sgnet.training.finetune.corrections import CorrectionSet
from napari_sgnet.training.finetune.splits import Region

__all__ = ["EvalCancelledError", "count_eval_tiles", "evaluate_held_out"]

Progress = Callable[[int, int], None]


class EvalCancelledError(SGNetError, RuntimeError):
    """Raised inside :func:`evaluate_held_out` when the cancel event is set."""


def _store_tiles(cs: CorrectionSet, regions: Sequence[Region], patch: int) -> list[Box]:
    assert cs.image is not None
    width, height = cs.image.level_size(cs.level)
    tiles: set[Box] = set()
    for r in regions:
        tiles.update(chunk_aligned_tiles(width, height, patch, r.box))
    return sorted(tiles, key=lambda t: (t.y, t.x))


def count_eval_tiles(
    sets: Sequence[CorrectionSet], held_out: Sequence[Region], config: ModelConfig
) -> int:
    """How many forward passes one held-out evaluation takes."""
    n = 0
    for index, cs in enumerate(sets):
        regions = [r for r in held_out if r.source == index]
        if cs.kind == "store":
            n += len(_store_tiles(cs, regions, config.patch_size))
        else:
            n += sum(len(r.items) for r in regions)
    return n


def _forward(
    model: nn.Module,
    config: ModelConfig,
    locals_: list[np.ndarray],
    contexts: list[np.ndarray],
    offsets: list[tuple[int, int]] | None,
    device: torch.device,
    amp: torch.dtype | None,
) -> np.ndarray:
    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        t = torch.from_numpy(np.stack([a[..., :3] for a in arrays])).permute(0, 3, 1, 2)
        return normalise(t.contiguous().to(device), config)

    x = stack(locals_)
    c = stack(contexts) if config.needs_context else None
    box = None
    if offsets is not None and config.needs_context:
        p = config.patch_size
        box = torch.tensor([[ox, oy, p, p] for ox, oy in offsets], dtype=torch.float32)
        box = box.to(device)
    with autocast(device, amp):
        logits = model(x, c, box)["logits"]
    return cast(np.ndarray, (logits.argmax(dim=1) + 1).to(torch.uint8).cpu().numpy())


@torch.no_grad()
def evaluate_held_out(
    model: nn.Module,
    config: ModelConfig,
    sets: Sequence[CorrectionSet],
    held_out: Sequence[Region],
    device: torch.device,
    amp: torch.dtype | None = None,
    batch_size: int = 8,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the held-out regions.

    Returns
    -------
    dict
        :meth:`ConfusionMatrix.to_dict` (``miou``, ``pixel_accuracy``, ``iou``, ``pixels``)
        plus ``tiles`` (forward passes) and ``regions``.

    Raises
    ------
    EvalCancelledError
        When ``cancel`` is set (checked between batches).
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(config.num_classes, config.palette.names)
    total = count_eval_tiles(sets, held_out, config)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel.is_set():
            raise EvalCancelledError("cancelled")

    try:
        for index, cs in enumerate(sets):
            regions = [r for r in held_out if r.source == index]
            if not regions:
                continue
            if cs.kind == "store":
                _score_store(model, config, cs, regions, cm, device, amp, batch_size, step)
            else:
                _score_patches(model, config, cs, regions, cm, device, amp, batch_size, step)
    finally:
        model.train(was_training)
    return {**cm.to_dict(), "tiles": total, "regions": len(held_out)}


def _score_store(
    model: nn.Module,
    config: ModelConfig,
    cs: CorrectionSet,
    regions: Sequence[Region],
    cm: ConfusionMatrix,
    device: torch.device,
    amp: torch.dtype | None,
    batch_size: int,
    step: Callable[[int], None],
) -> None:
    assert cs.image is not None
    p = config.patch_size
    width, height = cs.image.level_size(cs.level)
    plan = eval_plan(config, width, height, cs.level, p)
    work: list[WorkItem] = [((t.y // p, t.x // p), False) for t in _store_tiles(cs, regions, p)]
    sink = ScoreSink(plan, [(r.box, r.labels) for r in regions], cm)
    predictor = eval_predictor(model, device, amp)
    for batch in run_tiles(cs.image, plan, predictor, sink, work, batch_size=batch_size):
        step(len(batch))


def _score_patches(
    model: nn.Module,
    config: ModelConfig,
    cs: CorrectionSet,
    regions: Sequence[Region],
    cm: ConfusionMatrix,
    device: torch.device,
    amp: torch.dtype | None,
    batch_size: int,
    step: Callable[[int], None],
) -> None:
    folder = cs.folder
    assert folder is not None
    items = [i for r in regions for i in r.items]
    for start in range(0, len(items), batch_size):
        batch = [folder[i] for i in items[start : start + batch_size]]
        pred = _forward(
            model,
            config,
            [it.local for it in batch],
            [it.context for it in batch],
            [it.offset for it in batch],
            device,
            amp,
        )
        for it, pr in zip(batch, pred, strict=True):
            cm.update(it.local_mask, pr)
        step(len(batch))
