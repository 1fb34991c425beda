"""The models a user can pick: bundled checkpoints plus fine-tuned ones in the models folder.

Two parts, both Qt-free:

- the app's model choice (:class:`ModelChoice`, :func:`choose_model`, :func:`warm_up`,
  :func:`working_downsample`), used by the review controller;
- the registry (:func:`list_models`, :func:`find_model`, :class:`ModelEntry`), re-exported
  from :mod:`napari_sgnet.registry`, the one torch-free model registry.

The model in use is not a process global: it is each viewer's
:attr:`napari_sgnet.app.state.AppState.model`, which the fine-tune widget changes only when the
user presses "Use this model".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sgnet.inference.models import ModelSpec, describe_model, get_predictor
from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import ScaleError, working_level
from napari_sgnet.registry import (
    BUNDLED_DIR,
    ModelEntry,
    find_model,
    list_models,
    models_dir,
    read_entry,
)

__all__ = [
    "BUNDLED_DIR",
    "ModelChoice",
    "ModelEntry",
    "choose_model",
    "find_model",
    "list_models",
    "models_dir",
    "read_entry",
    "warm_up",
    "working_downsample",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- app model choice
@dataclass(frozen=True)
class ModelChoice:
    """A model chosen in the app: its description, and what an inference request passes on."""

    spec: ModelSpec

    @property
    def info(self) -> ModelInfo:
        """Name, id, patch size, context factor, µm/px and palette."""
        return self.spec.info

    @property
    def path(self) -> Path | None:
        """The checkpoint folder (``None`` for an in-memory model or predictor)."""
        return self.spec.path

    @property
    def request_model(self) -> ModelSpec:
        """The ``model`` of an :class:`~napari_sgnet.inference.request.InferenceRequest`."""
        return self.spec

    @property
    def summary(self) -> str:
        """One line for the widget: name, kind, classes, patch size, resolution."""
        info = self.info
        kind = info.kind or ("SGNet" if info.context_factor is not None else "baseline")
        mpp = f", {info.mpp:g} µm/px" if info.mpp is not None else ""
        return (
            f"{info.name}: {kind}, {info.palette.num_classes} classes, "
            f"{info.patch_size} px patches{mpp}"
        )


def choose_model(source: Any = None) -> ModelChoice:
    """Describe a model for the app without loading it.

    Parameters
    ----------
    source : None, path, Predictor or nn.Module
        ``None`` for the bundled model, a checkpoint folder, or an in-memory model.

    Raises
    ------
    RequestError
        When the model cannot be found or described (the message names the file).
    """
    return ModelChoice(describe_model(source))


def warm_up(choice: ModelChoice, device: str = "auto", batch: int = 2) -> str:
    """Load the model once (cached per process) and run it once, so the first run starts at once.

    The forward pass on a blank batch of ``batch`` patches (the app's view batch) makes the
    backend build its kernels for those shapes now rather than on the first real tiles
    (on a CPU the first forward is several times slower than the next ones).

    Returns the device it is on, for the status line.
    """
    import numpy as np

    predictor = get_predictor(choice.spec, device)
    info = predictor.info
    size = int(info.patch_size)
    local = np.full((batch, size, size, 3), 255, np.uint8)
    context = None
    if info.context_factor is not None:
        outer = round(size * float(info.context_factor))
        context = np.full((batch, outer, outer, 3), 255, np.uint8)
    try:
        predictor.predict(local, context)
        _probe_dask_schedulers()
    except Exception as exc:  # a warm-up must never stop the app: the run reports errors
        log.debug("warm-up forward of %s failed: %s", info.name, exc, exc_info=exc)
    return str(getattr(predictor, "device", device))


def _probe_dask_schedulers() -> None:
    """Make dask look for a distributed client now (it imports ``distributed`` to do so on
    its first compute, ~0.5-1 s), so the first run's first slide read does not pay it."""
    from dask.base import get_scheduler

    get_scheduler(scheduler="sync")  # type: ignore[no-untyped-call]


def working_downsample(slide: Pyramid, info: ModelInfo) -> float:
    """Slide level-0 pixels per model pixel at the working level the model runs at."""
    try:
        return working_level(slide, info.mpp, require_mpp=False).downsample
    except ScaleError:  # coarser than the model: the run refuses it with the reason
        return 1.0
