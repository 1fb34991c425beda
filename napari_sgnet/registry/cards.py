"""Model cards, listing and lookup of models, lineage records (torch-free).

A :class:`ModelCard` is read from a checkpoint's ``config.json`` only, so the dock lists models
instantly; its :attr:`~ModelCard.digest` (the one weights digest, see
:mod:`napari_sgnet.registry.digest`) is computed from ``model.safetensors`` on first use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.palette import Palette
from napari_sgnet.registry import layout
from napari_sgnet.registry.digest import DIGEST_SCHEME, model_id, onnx_digest, weights_digest
from napari_sgnet.registry.layout import (
    CONFIG_NAME,
    STAGING_PREFIX,
    WEIGHTS_NAME,
    CheckpointError,
    ModelNotFoundError,
    default_models_dir,
    is_checkpoint,
    root_name,
)

__all__ = [
    "DEFAULT_BUNDLED",
    "ModelCard",
    "bundled_model_dir",
    "find_model",
    "lineage_record",
    "list_bundled",
    "list_models",
    "parent_record",
    "read_card",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

#: The bundled model used when none is named.
DEFAULT_BUNDLED = "sgnet"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is, read from its ``config.json`` (torch-free).

    Attributes
    ----------
    name : str
        The model's name (from its config).
    path : Path
        Its checkpoint folder.
    kind : {"bundled", "finetuned", "user"}
        Shipped with the package, made by fine-tuning, or any other checkpoint.
    config : ModelConfig
        The whole configuration.
    version : str
        ``"bundled"``, the fine-tuning stamp ``YYYYMMDD-HHMMSS``, or ``""``.
    parent : str or None
        The name of the model it was fine-tuned from.
    generation : int
        0 for a trained model, parent's + 1 for each fine-tuning.
    created : str or None
        ISO time the training finished.
    metrics : dict
        The config's metrics (fine-tuned: ``held_out_before`` / ``held_out_after``).
    """

    name: str
    path: Path
    kind: str
    config: ModelConfig = field(repr=False, compare=False, hash=False)
    version: str = ""
    parent: str | None = None
    generation: int = 0
    created: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def architecture(self) -> str:
        """``"sgnet/<general branch>"``, ``"baseline/<general branch>"`` (local patch) or
        ``"baseline-fov/<general branch>"`` (same field of view as SGNet)."""
        if self.config.use_context:
            kind = "sgnet"
        else:
            kind = "baseline-fov" if self.config.baseline_input == "context" else "baseline"
        return f"{kind}/{self.config.general_branch}"

    @property
    def model_kind(self) -> str:
        """``"SGNet"``, ``"baseline (local patch)"`` or ``"baseline (same field of view)"``
        (:attr:`ModelConfig.kind <napari_sgnet.config.ModelConfig.kind>`)."""
        return self.config.kind

    @property
    def architecture_hash(self) -> str:
        """:meth:`ModelConfig.architecture_hash`: equal hashes can replace each other."""
        return self.config.architecture_hash()

    @property
    def palette(self) -> Palette:
        """The classes the model predicts (class ``k`` is label id ``k + 1``)."""
        return self.config.palette

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in class order."""
        return tuple(self.config.palette.names)

    @property
    def mpp(self) -> float | None:
        """µm/px the model was trained at."""
        return self.config.mpp

    @property
    def patch_size(self) -> int:
        """Side of the local patch in pixels."""
        return int(self.config.patch_size)

    @property
    def context_factor(self) -> float | None:
        """Surrounding patch side relative to the local patch; ``None`` without context."""
        return float(self.config.context_factor) if self.config.needs_context else None

    @property
    def lineage(self) -> dict[str, Any]:
        """The config's ``training.lineage`` record (empty for a trained model)."""
        return dict(_mapping(_mapping(self.config.training).get("lineage")))

    @property
    def format(self) -> str:
        """``"torch"`` (``model.safetensors``) or ``"onnx"`` (``model.onnx``, run with
        onnxruntime: docs/model.md, "Bring your own model")."""
        return "onnx" if layout.is_onnx_checkpoint(self.path) else "torch"

    @property
    def digest(self) -> str:
        """The weights digest (reads ``model.safetensors`` once per process and file; for an
        ONNX model :func:`~napari_sgnet.registry.digest.onnx_digest` of its files)."""
        if self.format == "onnx":
            return onnx_digest(self.path)
        return weights_digest(self.path / WEIGHTS_NAME)

    @property
    def model_id(self) -> str:
        """The model id: ``<name>:<architecture hash[:12]>:<digest[:12]>``."""
        return model_id(self.name, self.architecture_hash, self.digest)

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
        if self.format == "onnx":
            parts.append("[ONNX]")
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


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else ``{}`` (configs are user files)."""
    return value if isinstance(value, dict) else {}


def _kind_of(path: Path) -> str | None:
    try:
        return "bundled" if path.resolve().parent == layout.BUNDLED_DIR.resolve() else None
    except OSError:
        return None


def read_card(path: str | os.PathLike[str], kind: str | None = None) -> ModelCard:
    """Describe the checkpoint folder ``path`` from its ``config.json`` (weights unread).

    Parameters
    ----------
    path : path
        A checkpoint folder.
    kind : str, optional
        ``"bundled"``, ``"finetuned"`` or ``"user"``; by default from the folder and lineage.

    Raises
    ------
    CheckpointError
        When the folder is not a checkpoint, or its ``config.json`` is unreadable, corrupt or
        not a napari-sgnet model config (the message names the file).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(folder, "no such checkpoint folder")
    onnx = not (folder / WEIGHTS_NAME).is_file() and (folder / layout.ONNX_NAME).is_file()
    for name in (layout.ONNX_NAME if onnx else WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).is_file():
            missing = name if name == CONFIG_NAME else f"{WEIGHTS_NAME} (nor {layout.ONNX_NAME})"
            raise CheckpointError(
                folder,
                f"not a model checkpoint: no {missing} (a checkpoint needs {WEIGHTS_NAME} "
                f"or {layout.ONNX_NAME}, + {CONFIG_NAME})",
            )
    config_path = folder / CONFIG_NAME
    try:
        cfg = ModelConfig.load(config_path)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{config_path}: ")
        raise CheckpointError(config_path, f"invalid model config: {message}") from exc
    training = _mapping(cfg.training)
    lineage = _mapping(training.get("lineage"))
    parent = _mapping(lineage.get("parent"))
    kind = kind or _kind_of(folder)
    if kind is None:
        kind = "finetuned" if lineage.get("kind") == "finetune" else "user"
    return ModelCard(
        name=cfg.name,
        path=folder,
        kind=kind,
        config=cfg,
        version="bundled" if kind == "bundled" else str(lineage.get("version", "")),
        parent=parent.get("name"),
        generation=int(lineage.get("generation", 0)),
        created=training.get("finished_at"),
        metrics=dict(cfg.metrics or {}),
    )


def _scan(folder: Path, kind: str | None) -> list[ModelCard]:
    if not folder.is_dir():
        return []
    cards = []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith((".", STAGING_PREFIX)) or not is_checkpoint(sub):
            continue
        try:
            cards.append(read_card(sub, kind))
        except CheckpointError as exc:
            log.warning("skipping model %s: %s", sub, exc)
    return cards


def list_bundled() -> list[str]:
    """Folder names of the bundled checkpoints that are present (sorted)."""
    folder = layout.BUNDLED_DIR
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if is_checkpoint(d))


def bundled_model_dir(name: str = DEFAULT_BUNDLED) -> Path:
    """The folder of the bundled checkpoint ``name`` (``napari_sgnet/weights/<name>/``).

    Raises
    ------
    ModelNotFoundError
        If that checkpoint is not installed (the message lists those that are).
    ValueError
        If ``name`` is not a plain folder name.
    """
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"bundled model kind must be a plain name, got {name!r}")
    folder = layout.BUNDLED_DIR / name
    if not is_checkpoint(folder):
        raise ModelNotFoundError(
            name, list_bundled(), f"the bundled models in {layout.BUNDLED_DIR}"
        )
    return folder


def list_models(
    folder: str | os.PathLike[str] | None = None, include_bundled: bool = True
) -> list[ModelCard]:
    """Every model: the bundled ones (by name), then the models folder's (oldest first).

    Reads only each checkpoint's ``config.json``; unreadable checkpoints are skipped with a
    warning.

    Parameters
    ----------
    folder : path, optional
        The models folder (default :func:`~napari_sgnet.registry.default_models_dir`).
    include_bundled : bool
        List the bundled checkpoints first.
    """
    bundled = _scan(layout.BUNDLED_DIR, "bundled") if include_bundled else []
    found = _scan(Path(folder) if folder is not None else default_models_dir(), None)
    found.sort(key=lambda c: (c.created or "", c.version, c.name))
    return bundled + found


def find_model(
    name_or_path: str | os.PathLike[str] | None = None,
    folder: str | os.PathLike[str] | None = None,
) -> ModelCard:
    """A model by checkpoint path, by model name or by folder name (newest first).

    Parameters
    ----------
    name_or_path : str, path or None
        A checkpoint folder, or the name of a bundled or fine-tuned model; ``None`` is the
        bundled default (:data:`DEFAULT_BUNDLED`).
    folder : path, optional
        The models folder (default :func:`~napari_sgnet.registry.default_models_dir`).

    Raises
    ------
    ModelNotFoundError
        When nothing matches (the message names what was looked for and what exists).
    CheckpointError
        When ``name_or_path`` is an existing folder that is not a valid checkpoint.
    """
    if name_or_path is None:
        return read_card(bundled_model_dir(DEFAULT_BUNDLED), "bundled")
    path = Path(name_or_path).expanduser()
    if is_checkpoint(path):
        return read_card(path)
    wanted = str(name_or_path)
    models = Path(folder) if folder is not None else default_models_dir()
    cards = list_models(models)
    for card in reversed(cards):  # newest first when names repeat
        if wanted in (card.name, card.path.name):
            return card
    if path.is_dir():
        return read_card(path)  # raises: names the file a checkpoint lacks
    where = f"{models} and the bundled models in {layout.BUNDLED_DIR}"
    raise ModelNotFoundError(wanted, [c.name for c in cards], where)


def resolve_model_dir(
    spec: str | os.PathLike[str] | None, folder: str | os.PathLike[str] | None = None
) -> Path | None:
    """The checkpoint folder of :func:`find_model` (``None`` stays ``None``: the default).

    Raises
    ------
    ModelNotFoundError
        When nothing matches.
    CheckpointError
        When ``spec`` is an existing folder that is not a valid checkpoint.
    """
    return None if spec is None else find_model(spec, folder).path


def parent_record(config: ModelConfig, path: Path | None, digest: str) -> dict[str, Any]:
    """The lineage entry of a parent model, as written into its fine-tuned child's config.

    Parameters
    ----------
    config : ModelConfig
        The parent's configuration.
    path : Path or None
        The parent's checkpoint folder (``None`` for an in-memory model).
    digest : str
        The parent's weights digest.
    """
    lineage = _mapping(_mapping(config.training).get("lineage"))
    return {
        "name": config.name,
        "path": str(path) if path is not None else None,
        "architecture_hash": config.architecture_hash(),
        "digest": digest,
        "digest_scheme": DIGEST_SCHEME,
        "generation": int(lineage.get("generation", 0)),
    }


def lineage_record(parent: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``training.lineage`` record of a model fine-tuned from ``parent`` and named ``name``.

    Parameters
    ----------
    parent : dict
        :func:`parent_record` of the parent.
    name : str
        The new model's name, ``<root>-ft-<stamp>[-n]`` (:func:`finetuned_name`).
    """
    return {
        "parent": parent,
        "root": root_name(str(parent["name"])),
        "generation": int(parent["generation"]) + 1,
        "version": name.rsplit("-ft-")[-1],
        "kind": "finetune",
    }
