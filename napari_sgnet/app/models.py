"""The models a user can pick: bundled checkpoints plus fine-tuned ones in the models folder.

Two parts, both Qt-free:

- the app's model choice (:class:`ModelChoice`, :func:`choose_model`, :func:`warm_up`,
  :func:`working_downsample`), used by the review controller;
- the registry (:func:`list_models`, :func:`find_model`, :class:`ModelEntry`), torch-free: an
  entry is read from the checkpoint's ``config.json`` only, so widgets can list models
  instantly. Fine-tuned models live in
:func:`~napari_sgnet.registry.default_models_dir` (``$NAPARI_SGNET_MODELS``, else
``~/.local/share/napari-sgnet/models``), one ``<root>-ft-<YYYYMMDD-HHMMSS>/`` folder each.

:data:`CURRENT` is the process-wide model choice: the review widget reads it before running, and
the fine-tune widget sets it only when the user presses "Use this model".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.inference.models import ModelSpec, describe_model, get_predictor
from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.registry import BUNDLED_DIR, STAGING_PREFIX, default_models_dir

__all__ = [
    "BUNDLED_DIR",
    "CURRENT",
    "ModelChoice",
    "ModelEntry",
    "ModelSelection",
    "choose_model",
    "find_model",
    "list_models",
    "models_dir",
    "read_entry",
    "warm_up",
    "working_downsample",
]

log = logging.getLogger(__name__)

_FILES = ("model.safetensors", "config.json")


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
        kind = "SGNet" if info.context_factor is not None else "baseline"
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


def warm_up(choice: ModelChoice, device: str = "auto") -> str:
    """Load the model once (cached per process) so the first run starts at once.

    Returns the device it is on, for the status line.
    """
    predictor = get_predictor(choice.spec, device)
    return str(getattr(predictor, "device", device))


def working_downsample(slide: Pyramid, info: ModelInfo) -> float:
    """Downsample (slide level-0 pixels per model pixel) of the level the model runs at."""
    return float(slide.downsamples[slide.level_for_mpp(info.mpp)])


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelEntry:
    """One selectable model.

    Attributes
    ----------
    name : str
        The model's name (from its config).
    path : Path
        Its checkpoint folder.
    kind : {"bundled", "finetuned", "user"}
        Shipped with the package, made by fine-tuning, or any other checkpoint.
    version : str
        ``"bundled"``, the fine-tuning stamp ``YYYYMMDD-HHMMSS``, or ``""``.
    parent : str or None
        The model it was fine-tuned from.
    generation : int
        0 for a trained model, parent's + 1 for each fine-tuning.
    created : str or None
        ISO time the training finished.
    architecture : str
        ``"sgnet/<branch>"`` or ``"baseline/<branch>"``.
    architecture_hash : str
        :meth:`ModelConfig.architecture_hash`; equal hashes can replace each other in a store.
    metrics : dict
        The config's metrics (fine-tuned: ``held_out_before`` / ``held_out_after``).
    """

    name: str
    path: Path
    kind: str
    version: str = ""
    parent: str | None = None
    generation: int = 0
    created: str | None = None
    architecture: str = ""
    architecture_hash: str = ""
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def miou(self) -> float | None:
        """The held-out mIoU recorded with the model (after fine-tuning, or of training)."""
        m = self.metrics
        for value in (m.get("held_out_after"), m.get("held_out"), m):
            if isinstance(value, dict) and value.get("miou") is not None:
                return float(value["miou"])
        return None

    @property
    def label(self) -> str:
        """One line for a combo box: name, origin and held-out mIoU."""
        parts = [self.name]
        if self.kind == "bundled":
            parts.append("(bundled)")
        elif self.parent:
            parts.append(f"(fine-tuned from {self.parent})")
        before = (self.metrics.get("held_out_before") or {}).get("miou")
        if self.miou is not None and before is not None:
            parts.append(f"held-out mIoU {before:.3f} -> {self.miou:.3f}")
        elif self.miou is not None:
            parts.append(f"held-out mIoU {self.miou:.3f}")
        return " ".join(parts)


def models_dir() -> Path:
    """The folder where fine-tuned models are saved and found."""
    return default_models_dir()


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _FILES)


def read_entry(path: str | os.PathLike[str], kind: str | None = None) -> ModelEntry:
    """Describe the checkpoint folder ``path`` from its ``config.json``.

    Raises
    ------
    ConfigError
        When the folder is not a checkpoint or its config is unreadable (naming the file).
    """
    path = Path(path)
    if not _is_checkpoint(path):
        raise ConfigError(f"{path}: not a model checkpoint (needs model.safetensors + config.json)")
    cfg = ModelConfig.load(path / "config.json")
    training = cfg.training if isinstance(cfg.training, dict) else {}
    lineage = training.get("lineage") or {}
    parent = (lineage.get("parent") or {}).get("name")
    if kind is None:
        kind = "finetuned" if lineage.get("kind") == "finetune" else "user"
    version = "bundled" if kind == "bundled" else str(lineage.get("version", ""))
    return ModelEntry(
        name=cfg.name,
        path=path,
        kind=kind,
        version=version,
        parent=parent,
        generation=int(lineage.get("generation", 0)),
        created=training.get("finished_at"),
        architecture=f"{'sgnet' if cfg.use_context else 'baseline'}/{cfg.general_branch}",
        architecture_hash=cfg.architecture_hash(),
        metrics=dict(cfg.metrics or {}),
    )


def _scan(folder: Path, kind: str | None) -> list[ModelEntry]:
    if not folder.is_dir():
        return []
    entries = []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith((".", STAGING_PREFIX)) or not _is_checkpoint(sub):
            continue
        try:
            entries.append(read_entry(sub, kind))
        except ConfigError as exc:
            log.warning("skipping model %s: %s", sub, exc)
    return entries


def list_models(
    folder: str | os.PathLike[str] | None = None, include_bundled: bool = True
) -> list[ModelEntry]:
    """Bundled models (by name), then the models folder's (oldest first, newest last)."""
    bundled = _scan(BUNDLED_DIR, "bundled") if include_bundled else []
    found = _scan(Path(folder) if folder is not None else models_dir(), None)
    found.sort(key=lambda e: (e.created or "", e.version, e.name))
    return bundled + found


def find_model(
    name_or_path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None
) -> ModelEntry:
    """A model by checkpoint path, by name, or by folder name.

    Raises
    ------
    KeyError
        When nothing matches (the message lists the known names).
    """
    path = Path(name_or_path)
    if _is_checkpoint(path):
        return read_entry(path, "bundled" if path.parent.resolve() == BUNDLED_DIR else None)
    entries = list_models(folder)
    for e in reversed(entries):  # newest first when names repeat
        if str(name_or_path) in (e.name, e.path.name):
            return e
    known = ", ".join(e.name for e in entries) or "none"
    raise KeyError(f"no model named {str(name_or_path)!r} (known: {known})")


class ModelSelection:
    """The model the app uses for new runs; listeners hear about changes.

    The fine-tune widget calls :meth:`set` only when the user presses "Use this model": a new
    model is never swapped in silently.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._listeners: list[Callable[[Path | None], None]] = []

    @property
    def path(self) -> Path | None:
        """The chosen checkpoint folder (``None``: the bundled default)."""
        return self._path

    def set(self, path: str | os.PathLike[str] | None) -> None:
        """Choose a checkpoint folder (``None`` for the default) and notify listeners."""
        self._path = Path(path) if path is not None else None
        for listener in list(self._listeners):
            listener(self._path)

    def connect(self, listener: Callable[[Path | None], None]) -> None:
        """Call ``listener(path)`` after every :meth:`set`."""
        self._listeners.append(listener)

    def disconnect(self, listener: Callable[[Path | None], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)


#: The process-wide model choice.
CURRENT = ModelSelection()
