"""Where fine-tuned models live, how they are named, and how a new one is published.

Torch-free (the model registry and the CLI read it without loading torch).

- Models folder: ``$NAPARI_SGNET_MODELS``, else ``$XDG_DATA_HOME/napari-sgnet/models``, else
  ``~/.local/share/napari-sgnet/models``.
- A fine-tuned model is the checkpoint folder ``<models>/<root>-ft-<YYYYMMDD-HHMMSS>/`` where
  ``<root>`` is the parent's name without earlier ``-ft-...`` suffixes (lineage lives in the
  config, not in an ever-growing name). An existing folder is never reused: ``-2``, ``-3``, ...
  are appended.
- Publishing is atomic: the checkpoint is written into a hidden staging folder beside the
  target and renamed into place only when complete, so a cancelled or crashed run leaves no
  half-written model (at most a hidden ``.staging-*`` folder, ignored by the registry).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sgnet.config import ConfigError, ModelConfig

__all__ = [
    "BUNDLED_DIR",
    "MODELS_ENV",
    "STAGING_PREFIX",
    "ModelEntry",
    "available_name",
    "default_models_dir",
    "file_sha256",
    "find_model",
    "finetuned_name",
    "list_models",
    "models_dir",
    "publish",
    "read_entry",
    "resolve_model_dir",
    "root_name",
    "staging_dir",
    "version_stamp",
]

log = logging.getLogger(__name__)

MODELS_ENV = "NAPARI_SGNET_MODELS"
_FILES = ("model.safetensors", "config.json")
#: Bundled checkpoints (the same folder as ``napari_sgnet.model.bundled.WEIGHTS_DIR``).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
STAGING_PREFIX = ".staging-"
_FT_SUFFIX = re.compile(r"(-ft-\d{8}-\d{6}(-\d+)?)+$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_models_dir() -> Path:
    """The folder where fine-tuned models are saved and found."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "napari-sgnet" / "models"


def version_stamp(now: _dt.datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS`` of ``now`` (local time by default)."""
    return (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")


def root_name(name: str) -> str:
    """A model name without its ``-ft-<stamp>`` suffixes, made safe for a folder name."""
    root = _FT_SUFFIX.sub("", name.strip()) or "model"
    return _SAFE.sub("_", root).strip("._") or "model"


def finetuned_name(parent_name: str, stamp: str | None = None) -> str:
    """``<root>-ft-<stamp>`` for a model fine-tuned from ``parent_name``."""
    return f"{root_name(parent_name)}-ft-{stamp or version_stamp()}"


def available_name(models_dir: str | os.PathLike[str], name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first not taken in ``models_dir``."""
    parent = Path(models_dir)
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{name}-{n}"
        if not (parent / candidate).exists():
            return candidate
    raise FileExistsError(f"{parent}: too many models named {name!r}")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (the value ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def staging_dir(models_dir: str | os.PathLike[str]) -> Path:
    """A fresh hidden staging folder inside ``models_dir`` (same file system as the target)."""
    parent = Path(models_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def publish(staging: str | os.PathLike[str], models_dir: str | os.PathLike[str], name: str) -> Path:
    """Move a complete staging folder to ``<models_dir>/<name>`` (or ``<name>-2``, ...).

    Never replaces an existing folder. Returns the final path.
    """
    parent = Path(models_dir)
    for n in range(1, 1000):
        target = parent / (name if n == 1 else f"{name}-{n}")
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic; fails when a non-empty target appeared
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise FileExistsError(f"{parent}: too many models named {name!r}")


def _is_checkpoint(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def resolve_model_dir(
    spec: str | os.PathLike[str] | None, models_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """A checkpoint folder from a path or a name (``None`` stays ``None``: the bundled default).

    A name is looked up in the models folder, then among the bundled checkpoints.

    Raises
    ------
    FileNotFoundError
        When nothing matches; the message lists what was tried.
    """
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if path.exists():
        return path
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    for candidate in (folder / str(spec), BUNDLED_DIR / str(spec)):
        if _is_checkpoint(candidate):
            return candidate
    raise FileNotFoundError(
        f"{spec}: no such checkpoint folder, and no model of that name in {folder} or among "
        f"the bundled models in {BUNDLED_DIR}"
    )


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
