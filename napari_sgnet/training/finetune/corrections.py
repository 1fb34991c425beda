"""Where fine-tuning data comes from: committed corrections in label stores, or patch folders.

A label store's *corrections* are its level-0 labels where the ``edited`` mask is set (and the
label is not 0): what a person committed (:mod:`.store_corrections`). A patch folder
(``training/patches.py``, written by ``training/export_patches.py``) holds local/surrounding
pairs; each item's local mask is its corrected labels (:mod:`.patch_corrections`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_sgnet.config import ModelConfig
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.training.finetune.correction_types import (
    CorrectionSet,
    FinetuneError,
    NoCorrectionsError,
    PatchCorrections,
    SourceLike,
    StoreCorrections,
)
from napari_sgnet.training.finetune.patch_corrections import load_patch_corrections
from napari_sgnet.training.finetune.store_corrections import load_store_corrections
from napari_sgnet.training.patches import MANIFEST, PatchFolder

__all__ = [
    "CorrectionSet",
    "FinetuneError",
    "NoCorrectionsError",
    "PatchCorrections",
    "SourceLike",
    "StoreCorrections",
    "load_corrections",
    "resolve_source",
]


def resolve_source(source: Any) -> StoreCorrections | PatchCorrections:
    """Turn a path, store, folder or ``(store, slide)`` pair into a typed source.

    A path is a patch folder when it holds ``manifest.json``, else a label store.
    """
    if isinstance(source, (StoreCorrections, PatchCorrections)):
        return source
    if isinstance(source, LabelStore):
        return StoreCorrections(source)
    if isinstance(source, PatchFolder):
        return PatchCorrections(source)
    if isinstance(source, tuple) and len(source) == 2:
        return StoreCorrections(*source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if (path / MANIFEST).exists():
            return PatchCorrections(path)
        return StoreCorrections(path)
    raise TypeError(f"not a correction source: {source!r}")


def load_corrections(
    sources: Sequence[Any],
    config: ModelConfig,
    block_tiles: int = 2,
    min_region_pixels: int = 64,
) -> list[CorrectionSet]:
    """Open every source, check it against the model and cut its corrections into regions.

    Parameters
    ----------
    sources : sequence
        Anything :func:`resolve_source` accepts.
    config : ModelConfig
        The model to fine-tune (palette, patch size, µm/px).
    block_tiles : int
        Large corrections are cut along a grid of ``block_tiles x block_tiles`` model tiles.
    min_region_pixels : int
        Smaller regions (brush specks) are ignored.

    Raises
    ------
    FinetuneError
        Missing or foreign files, palette or resolution mismatch (naming the file).
    NoCorrectionsError
        When no source holds a correction.
    """
    if not sources:
        raise NoCorrectionsError("no correction sources given (pass label stores or patch folders)")
    block = block_tiles * config.patch_size
    sets = []
    for index, raw in enumerate(sources):
        src = resolve_source(raw)
        if isinstance(src, StoreCorrections):
            sets.append(load_store_corrections(src, index, config, block, min_region_pixels))
        else:
            sets.append(load_patch_corrections(src, index, config, block))
    if not any(s.regions for s in sets):
        names = ", ".join(str(s.path) for s in sets)
        raise NoCorrectionsError(
            f"no committed corrections in {names}: nothing is marked edited (commit edits in "
            "the review widget, or export corrected patches, before fine-tuning)"
        )
    return sets
