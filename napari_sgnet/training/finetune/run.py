"""Fine-tune a model on a pathologist's committed corrections.

``finetune(sources, base_model)``:

1. open the sources (label stores with their slides, exported patch folders), check them against
   the model (palette, resolution, patch geometry) and cut the corrections into regions;
2. split the regions into train / held-out, by region, deterministically (:mod:`.splits`);
3. score the parent model on the held-out regions (:mod:`.finetune_eval`);
4. train from the parent's weights with SGNet's loss at a low learning rate (the project's
   trainer, :func:`~napari_sgnet.training.trainer.train`), drawing patches only around
   training regions and never reaching a held-out one (:mod:`.region_sampler`);
5. score the new model on the same held-out tiles;
6. publish a new versioned checkpoint whose config records the lineage
   (:func:`napari_sgnet.registry.lineage_record`, :func:`napari_sgnet.registry.publish`) and
   keeps the parent's out-of-distribution statistics (no new ones are fitted: their feature
   part names the parent's weights, so the new model is judged on colour only).

The parent checkpoint and the stores are only read. A cancelled or failed run leaves nothing
behind (its staging folder is removed). Safe to run on a background thread: progress arrives
through a callback, cancellation through a :class:`threading.Event`.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_sgnet.errors import SGNetError
from napari_sgnet.model import (
    SegmentationModel,
    load_checkpoint,
    save_checkpoint,
)
from napari_sgnet.model.runtime import autocast_dtype, resolve_device
from napari_sgnet.registry import (
    available_name,
    default_models_dir,
    finetuned_name,
    lineage_record,
    publish,
    staging_dir,
    version_stamp,
)
from napari_sgnet.training.dataset import DataError
from napari_sgnet.training.finetune.bn_recalibrate import recalibrate_batchnorm
from napari_sgnet.training.finetune.config import (
    FinetuneConfig,
    FinetuneProgress,
    FinetuneResult,
)
from napari_sgnet.training.finetune.corrections import (
    FinetuneError,
    NoCorrectionsError,
    PatchCorrections,
    StoreCorrections,
    load_corrections,
)
from napari_sgnet.training.finetune.evaluate import EvalCancelledError, evaluate_held_out
from napari_sgnet.training.finetune.prepare import (
    build_samplers,
    check_classes,
    parent_info,
    resolve_parent,
    split_corrections,
)
from napari_sgnet.training.trainer import TrainProgress, train

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneProgress",
    "FinetuneResult",
    "NoCorrectionsError",
    "PatchCorrections",
    "StoreCorrections",
    "finetune",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[FinetuneProgress], None]
SPLIT_RULE = (
    "regions = 8-connected corrected components cut by a block grid; no training local or "
    "surrounding patch meets the bounding box of a held-out region of the same slide"
)


class _CancelledError(SGNetError):
    """Raised from the trainer's progress callback to stop it."""


def finetune(
    sources: Sequence[Any],
    base_model: str | Path | SegmentationModel | None = None,
    out_dir: str | Path | None = None,
    config: FinetuneConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Fine-tune ``base_model`` on the committed corrections in ``sources``.

    Parameters
    ----------
    sources : sequence
        Label stores (paths, :class:`~napari_sgnet.io.labelstore.store.LabelStore`, or
        :class:`StoreCorrections` / ``(store, slide)`` pairs when the store does not record its
        slide file) and/or exported patch folders (paths or :class:`PatchCorrections`).
    base_model : path, SegmentationModel or None
        The current model: a checkpoint folder, a loaded model, or ``None`` for the bundled one.
    out_dir : path, optional
        Models folder receiving ``<root>-ft-<YYYYMMDD-HHMMSS>/``; default
        :func:`~napari_sgnet.registry.default_models_dir`.
    config : FinetuneConfig, optional
        Steps, learning rate, split, device.
    progress : callable, optional
        Called with :class:`FinetuneProgress` reports (from the calling thread).
    cancel : threading.Event, optional
        Set it to stop; the run then returns a result with ``cancelled=True`` and writes nothing.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    FinetuneError
        Bad input (no corrections, one class, palette or resolution mismatch, missing or corrupt
        files): the message names the file and the problem.
    """
    return _Run(config or FinetuneConfig(), progress, cancel or threading.Event()).execute(
        sources, base_model, out_dir
    )


class _Run:
    """One fine-tuning run (state shared by its stages)."""

    def __init__(
        self, fc: FinetuneConfig, progress: ProgressFn | None, cancel: threading.Event
    ) -> None:
        self.fc, self.progress, self.cancel = fc, progress, cancel
        self.t0 = time.perf_counter()
        self.before: dict[str, Any] = {}
        self.steps = 0
        self.eval_s = 0.0

    def report(self, stage: str, step: int = 0, total: int = 0, loss: float | None = None,
               eta: float | None = None, msg: str = "") -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.t0
            self.progress(FinetuneProgress(stage, step, total, loss, eta, elapsed, msg))

    # ------------------------------------------------------------------ stages
    def execute(self, sources: Sequence[Any], base_model: Any, out_dir: Any) -> FinetuneResult:
        fc = self.fc
        self.report("prepare", msg="reading corrections")
        parent_model, parent_path = resolve_parent(base_model)
        self.cfg = cfg = parent_model.config
        self.parent = parent_info(parent_model, parent_path)
        self.sets = load_corrections(sources, cfg, fc.block_tiles, fc.min_region_pixels)
        self.warnings = check_classes(self.sets, cfg, fc)
        self.split = split_corrections(self.sets, fc)
        samplers, dropped, problems = build_samplers(self.sets, self.split, cfg, fc)
        self.warnings += problems
        self.split_info = {**self.split.summary(), "fraction": fc.holdout_fraction,
                           "dropped_items": dropped, "block_tiles": fc.block_tiles,
                           "rule": SPLIT_RULE}
        self.device = resolve_device(fc.device)
        self.amp = autocast_dtype(self.device, fc.precision)
        models_dir = Path(out_dir) if out_dir is not None else default_models_dir()
        self.name = available_name(models_dir, finetuned_name(cfg.name, version_stamp()))
        try:
            t = time.perf_counter()
            self.before = self.score("before", parent_model.to(self.device))
            self.eval_s = time.perf_counter() - t
            parent_model.to("cpu")
            staging = staging_dir(models_dir)
            try:
                tuned = self.train(samplers, parent_model, parent_path, staging)
                after = self.score("after", tuned)
                if self.cancel.is_set():
                    raise _CancelledError
                self.report("save", msg="saving the new model")
                final = self.save(tuned, after, staging, models_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except (_CancelledError, EvalCancelledError):
            self.report("cancelled", msg="cancelled; nothing was written")
            return self.result(None, self.name, {})
        self.report("done", self.steps, self.steps, msg=f"saved {final}")
        log.info("fine-tuned %s -> %s (held-out mIoU %s -> %s)", cfg.name, final,
                 self.before.get("miou"), after.get("miou"))
        return self.result(final, final.name, after)

    def score(self, stage: str, model: Any) -> dict[str, Any]:
        """Held-out scores of ``model`` (raises :class:`EvalCancelledError` on cancel)."""
        t_stage = time.perf_counter()

        def cb(done: int, total: int) -> None:
            rate = (time.perf_counter() - t_stage) / max(done, 1)
            self.report(stage, done, total, eta=rate * (total - done), msg=f"scoring {stage}")

        return evaluate_held_out(model, self.cfg, self.sets, self.split.held_out, self.device,
                                 self.amp, self.fc.eval_batch_size, self.cancel, cb)

    def train(self, samplers: list, parent_model: Any, parent_path: Path | None,
              staging: Path) -> Any:
        """Train from the parent's weights; the tuned model (batch norm recalibrated)."""
        fc = self.fc
        if self.cancel.is_set():
            raise _CancelledError
        init = parent_path or save_checkpoint(parent_model, staging / "parent")

        def on_step(tp: TrainProgress) -> None:
            self.steps = tp.step
            self.report("train", tp.step, tp.total, tp.loss, tp.eta_s + self.eval_s,
                        f"step {tp.step}/{tp.total} loss {tp.loss:.4f}")
            if self.cancel.is_set():
                raise _CancelledError

        data = {"sources": [s.description for s in self.sets], "split": self.split_info}
        try:
            # ood_tiles=0: the published config is the parent's, OOD statistics included (judged
            # on colour only, as the feature statistics belong to the parent's weights; see
            # inference/ood_check.monitor_for), so statistics fitted here would be thrown away.
            self.run = train(self.cfg, samplers, staging / "work", fc.train_config(),
                             init_checkpoint=init, data_description=data, progress=on_step,
                             ood_tiles=0)
        except DataError as exc:
            raise FinetuneError(f"training data: {exc}") from exc
        tuned = load_checkpoint(self.run.last_dir, device=self.device)
        if fc.bn_recalibration_batches:
            self.report("train", self.steps, fc.steps, msg="recalibrating batch-norm statistics")
            recalibrate_batchnorm(tuned, self.cfg, samplers, fc.bn_recalibration_batches,
                                  fc.batch_size, fc.seed, fc.steps, self.device, self.amp)
        return tuned

    def save(self, tuned: Any, after: dict[str, Any], staging: Path, models_dir: Path) -> Path:
        """Write the new checkpoint with its lineage and publish it (atomically)."""
        cfg, parent = self.cfg, self.parent
        training = dict(self.run.config.training)
        training.update({
            "init_checkpoint": parent["path"],
            "lineage": lineage_record(parent, self.name),
            "finetune": self.fc.to_dict(),
            "wall_time_s": round(time.perf_counter() - self.t0, 1),
        })
        metrics = {
            "held_out_before": self.before,
            "held_out_after": after,
            "improved": _better(after, self.before),
            "held_out_protocol": "non-overlapping patch tiles, centred context, corrected "
                                 "pixels of held-out regions only",
        }
        new_cfg = cfg.replace(name=self.name, training=training, metrics=metrics)
        save_checkpoint(tuned, staging / "model", new_cfg)
        return publish(staging / "model", models_dir, self.name)

    def result(self, checkpoint: Path | None, name: str, after: dict[str, Any]) -> FinetuneResult:
        return FinetuneResult(
            checkpoint=checkpoint,
            name=name,
            parent=self.parent,
            before=self.before,
            after=after,
            improved=checkpoint is not None and _better(after, self.before),
            cancelled=checkpoint is None,
            steps=self.steps,
            wall_time_s=time.perf_counter() - self.t0,
            split=self.split_info,
            device=str(self.device),
            warnings=tuple(self.warnings),
        )


def _better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    a, b = after.get("miou"), before.get("miou")
    return a is not None and (b is None or a > b)
