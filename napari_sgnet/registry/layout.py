"""Checkpoint layout, model folders, fine-tuned model names and atomic publishing (torch-free).

- A checkpoint is a folder holding :data:`WEIGHTS_NAME` (``model.safetensors``) and
  :data:`CONFIG_NAME` (``config.json``).
- Bundled checkpoints: :data:`BUNDLED_DIR` (``napari_sgnet/weights/<name>/``).
- Models folder (fine-tuned models): ``$NAPARI_SGNET_MODELS``, else
  ``$XDG_DATA_HOME/napari-sgnet/models``, else ``~/.local/share/napari-sgnet/models``.
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
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from napari_sgnet.errors import UserInputError

__all__ = [
    "BUNDLED_DIR",
    "CONFIG_NAME",
    "MODELS_ENV",
    "ONNX_NAME",
    "STAGING_PREFIX",
    "WEIGHTS_NAME",
    "CheckpointError",
    "ModelNotFoundError",
    "available_name",
    "default_models_dir",
    "finetuned_name",
    "is_checkpoint",
    "is_onnx_checkpoint",
    "publish",
    "root_name",
    "staging_dir",
    "version_stamp",
]

#: The weights file of a checkpoint folder.
WEIGHTS_NAME = "model.safetensors"
#: The weights file of a model trained elsewhere, run with onnxruntime (docs/model.md,
#: "Bring your own model"); a folder with it and a config.json is a checkpoint too.
ONNX_NAME = "model.onnx"
#: The configuration file of a checkpoint folder (:class:`~napari_sgnet.config.ModelConfig`).
CONFIG_NAME = "config.json"
#: Environment variable naming the models folder.
MODELS_ENV = "NAPARI_SGNET_MODELS"
#: The bundled checkpoints shipped inside the package, one folder per model (lookups read
#: this module attribute at call time, so tests patch ``napari_sgnet.registry.layout``).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Prefix of the hidden folders a model is written into before it is published.
STAGING_PREFIX = ".staging-"
_FT_SUFFIX = re.compile(r"(-ft-\d{8}-\d{6}(-\d+)?)+$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: ``name`` and ``name-2`` .. ``name-999``: how many folders one model name may take.
_MAX_NAMES = 1000


class CheckpointError(UserInputError):
    """A checkpoint is missing, unsafe, corrupt or does not match its configuration.

    Parameters
    ----------
    path : str or Path
        The offending file or directory.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(str(path), problem)  # args survive pickling (dask workers)
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class ModelNotFoundError(UserInputError):
    """No model matches a name or path; the message says what was looked for and what exists.

    Parameters
    ----------
    wanted : str
        The name or path that was looked up.
    known : list of str
        The names of the models that exist.
    where : str
        Where they were looked for (the folders), in words.
    """

    def __init__(self, wanted: str, known: list[str], where: str) -> None:
        super().__init__(wanted, known, where)
        self.wanted = wanted
        self.known = list(known)
        self.where = where

    def __str__(self) -> str:
        known = ", ".join(self.known) or "none"
        return (
            f"{self.wanted}: checkpoint folder not found, and no model of that name "
            f"(looked in {self.where}; known models: {known})"
        )


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding ``config.json`` and ``model.safetensors`` (a torch
    checkpoint) or ``model.onnx`` (an ONNX model)."""
    folder = Path(path)
    has_weights = (folder / WEIGHTS_NAME).is_file() or (folder / ONNX_NAME).is_file()
    return has_weights and (folder / CONFIG_NAME).is_file()


def is_onnx_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ONNX checkpoint: ``model.onnx`` + ``config.json`` and no
    ``model.safetensors`` (a folder with both runs the torch weights)."""
    folder = Path(path)
    return is_checkpoint(folder) and not (folder / WEIGHTS_NAME).is_file()


def default_models_dir() -> Path:
    """The folder where fine-tuned models are saved and found.

    Returns
    -------
    Path
        ``$NAPARI_SGNET_MODELS``, else ``$XDG_DATA_HOME/napari-sgnet/models``, else
        ``~/.local/share/napari-sgnet/models`` (it may not exist yet).
    """
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
    """``name``, or ``name-2``, ``name-3``, ... : the first not taken in ``models_dir``.

    Raises
    ------
    FileExistsError
        When a thousand names are taken.
    """
    parent = Path(models_dir)
    for candidate in _numbered(name):
        if not (parent / candidate).exists():
            return candidate
    raise _too_many(parent, name)


def staging_dir(models_dir: str | os.PathLike[str]) -> Path:
    """A fresh hidden staging folder inside ``models_dir`` (same file system as the target)."""
    parent = Path(models_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def publish(staging: str | os.PathLike[str], models_dir: str | os.PathLike[str], name: str) -> Path:
    """Move a complete staging folder to ``<models_dir>/<name>`` (or ``<name>-2``, ...).

    The rename is atomic and never replaces an existing folder.

    Returns
    -------
    Path
        The published checkpoint folder.

    Raises
    ------
    FileExistsError
        When a thousand names are taken.
    """
    parent = Path(models_dir)
    for candidate in _numbered(name):
        target = parent / candidate
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic; fails when a non-empty target appeared
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise _too_many(parent, name)


def _numbered(name: str) -> Iterator[str]:
    """``name``, ``name-2``, ``name-3``, ... up to ``name-999``: the names a model may take."""
    yield name
    for n in range(2, _MAX_NAMES):
        yield f"{name}-{n}"


def _too_many(parent: Path, name: str) -> FileExistsError:
    return FileExistsError(f"{parent}: too many models named {name!r}")
