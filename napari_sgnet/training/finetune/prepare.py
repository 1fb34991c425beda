"""Fine-tuning preparation: the parent model, its identity, the split and the samplers."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_sgnet.model import (
    CheckpointError,
    SegmentationModel,
    load_checkpoint,
    state_digest,
)
from napari_sgnet.registry import ModelNotFoundError, find_model, parent_record
from napari_sgnet.training.dataset import DataError, PatchFolderSampler, SampleSource
from napari_sgnet.training.finetune.config import FinetuneConfig
from napari_sgnet.training.finetune.corrections import CorrectionSet, FinetuneError
from napari_sgnet.training.finetune.region_sampler import RegionSampler, patch_training_folder
from napari_sgnet.training.finetune.splits import Split, class_counts, split_regions

__all__ = [
    "build_samplers",
    "check_classes",
    "parent_info",
    "resolve_parent",
    "split_corrections",
]

log = logging.getLogger(__name__)


def resolve_parent(base_model: Any) -> tuple[SegmentationModel, Path | None]:
    """The parent model (on CPU, never modified) and its checkpoint folder when it has one."""
    if isinstance(base_model, SegmentationModel):
        return copy.deepcopy(base_model).to("cpu").eval(), None
    try:
        path = Path(base_model) if base_model is not None else find_model(None).path
        if path.is_file():  # a model.safetensors: its folder is the checkpoint
            path = path.parent
        model = load_checkpoint(path)
    except (CheckpointError, ModelNotFoundError) as exc:
        raise FinetuneError(f"cannot load the model to fine-tune: {exc}") from exc
    return model, path


def parent_info(model: SegmentationModel, path: Path | None) -> dict[str, Any]:
    """The lineage record of the parent (:func:`napari_sgnet.registry.parent_record`).

    Its digest is the registry's weights digest of the loaded tensors, which equals that of
    the parent's ``model.safetensors`` when it has one.
    """
    return parent_record(model.config, path, state_digest(model))


def check_classes(sets: Sequence[CorrectionSet], cfg: Any, fc: FinetuneConfig) -> list[str]:
    counts = class_counts((r for s in sets for r in s.regions), cfg.num_classes)
    present = [cfg.palette.names[k - 1] for k in range(1, len(counts)) if counts[k] > 0]
    if len(present) >= 2:
        return []
    message = (
        f"the corrections hold only one class ({', '.join(present) or 'none'}); fine-tuning on "
        "one class teaches the model to predict it everywhere. Correct regions of at least two "
        "classes"
    )
    if not fc.allow_single_class:
        paths = ", ".join(str(s.path) for s in sets)
        raise FinetuneError(f"{paths}: {message} (or allow single-class fine-tuning explicitly)")
    log.warning(message)
    return [message]


def split_corrections(sets: Sequence[CorrectionSet], fc: FinetuneConfig) -> Split:
    regions = [r for s in sets for r in s.regions]
    if len(regions) < 2:
        paths = ", ".join(str(s.path) for s in sets)
        raise FinetuneError(
            f"{paths}: only {len(regions)} corrected region(s); at least 2 are needed so that "
            "one can be held out to measure the fine-tuning (correct another region)"
        )
    return split_regions(regions, fc.holdout_fraction, fc.seed)


def build_samplers(
    sets: Sequence[CorrectionSet], split: Split, cfg: Any, fc: FinetuneConfig
) -> tuple[list[SampleSource], int, list[str]]:
    exclusions: dict[str, list] = {}
    for r in split.held_out:
        exclusions.setdefault(r.group, []).append(r.box)
    samplers: list[SampleSource] = []
    dropped, problems = 0, []
    for index, cs in enumerate(sets):
        regions = [r for r in split.train if r.source == index]
        if not regions:
            continue
        try:
            if cs.kind == "store":
                excl = sorted(
                    {b for r in regions for b in exclusions.get(r.group, [])},
                    key=lambda b: (b.y, b.x),
                )
                samplers.append(
                    RegionSampler(
                        cs.image,
                        cs.level,
                        regions,
                        excl,
                        cfg,
                        fc.max_unlabelled,
                        fc.balance_classes,
                    )
                )
            else:
                folder, n = patch_training_folder(cs.folder, regions, exclusions, cfg)
                dropped += n
                if len(folder):
                    samplers.append(PatchFolderSampler(folder, cfg))
        except DataError as exc:
            problems.append(f"{cs.path}: {exc}")
    if not samplers:
        raise FinetuneError("no usable training patches: " + ("; ".join(problems) or "none"))
    return samplers, dropped, problems
