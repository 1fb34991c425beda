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
import os
import re
import uuid
from pathlib import Path

__all__ = [
    "BUNDLED_DIR",
    "MODELS_ENV",
    "STAGING_PREFIX",
    "available_name",
    "default_models_dir",
    "file_sha256",
    "finetuned_name",
    "publish",
    "resolve_model_dir",
    "root_name",
    "staging_dir",
    "version_stamp",
]

MODELS_ENV = "NAPARI_SGNET_MODELS"
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
