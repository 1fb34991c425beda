"""Resolve the ``model`` of a request: describe it cheaply, load it once per process.

:func:`describe_model` reads only ``config.json`` and hashes the weights file, so the
engine (or a distributed driver) can plan and check the store without torch.
:func:`get_predictor` loads it, once per process and device (workers reuse it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.inference.predictor_base import ModelInfo, Predictor
from napari_sgnet.inference.request import RequestError

__all__ = ["ModelSpec", "default_model_dir", "describe_model", "get_predictor", "load_predictor"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: Loaded predictors kept per process (a viewer switching models keeps at most this many).
CACHE_SIZE = 2
_CACHE: OrderedDict[tuple[str, str, str], Predictor] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class ModelSpec:
    """A described model: its :class:`ModelInfo` plus how to get the predictor.

    Exactly one of ``path`` (a checkpoint folder) and ``obj`` (a loaded ``nn.Module``
    or a :class:`Predictor`) is set. Picklable, so it can travel to dask workers.
    """

    info: ModelInfo
    path: Path | None = None
    obj: Any = None


def default_model_dir() -> Path:
    """The bundled default checkpoint folder.

    Raises
    ------
    RequestError
        When this installation has no bundled model.
    """
    try:
        from napari_sgnet.model import bundled_model_dir
    except ImportError as exc:
        raise RequestError(
            "no bundled model in this installation (napari_sgnet.model.bundled_model_dir is "
            "missing); pass a checkpoint folder with --model / model="
        ) from exc
    try:
        path = Path(bundled_model_dir("sgnet"))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise RequestError(f"the bundled SGNet model is not available: {exc}") from exc
    return path


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()[:16]
    return _FILE_DIGESTS[key]


def _describe_checkpoint(path: Path) -> ModelSpec:
    if not path.is_dir():
        raise RequestError(f"{path}: model checkpoint folder not found")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise RequestError(f"{path}: not a model checkpoint (no {WEIGHTS_FILE})")
    try:
        config = ModelConfig.load(path / CONFIG_FILE)
    except ConfigError as exc:
        raise RequestError(str(exc)) from exc
    info = ModelInfo.from_config(config, _file_digest(weights))
    return ModelSpec(info=info, path=path.resolve())


def describe_model(model: Any) -> ModelSpec:
    """Describe the ``model`` of a request.

    Parameters
    ----------
    model : str, Path, ModelSpec, Predictor, nn.Module or None
        A checkpoint folder, an already described model, a predictor, a loaded
        model with ``.config``, or ``None`` for the bundled default.

    Raises
    ------
    RequestError
        If the model cannot be found or described.
    """
    if isinstance(model, ModelSpec):
        return model
    if model is None:
        return _describe_checkpoint(default_model_dir())
    if isinstance(model, (str, Path)):
        return _describe_checkpoint(Path(model))
    if isinstance(model, Predictor):
        return ModelSpec(info=model.info, obj=model)
    if hasattr(model, "config") and hasattr(model, "state_dict"):
        from napari_sgnet.inference.predictor import model_info_from_module

        return ModelSpec(info=model_info_from_module(model), obj=model)
    raise RequestError(
        f"model must be a checkpoint folder, a loaded model or a Predictor, got {type(model)}"
    )


def load_predictor(spec: ModelSpec, device: str = "auto", precision: str = "auto") -> Predictor:
    """Build a predictor for ``spec`` (loads checkpoint weights when needed)."""
    if isinstance(spec.obj, Predictor):
        return spec.obj
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.model.runtime import resolve_device

    module = spec.obj
    if module is None:
        try:
            from napari_sgnet.model import load_checkpoint
        except ImportError as exc:
            raise RequestError(
                f"{spec.path}: cannot load checkpoints: napari_sgnet.model is unavailable"
            ) from exc
        try:
            module = load_checkpoint(spec.path, device=str(resolve_device(device)))
        except ValueError as exc:  # CheckpointError: names the file and the problem
            raise RequestError(str(exc)) from exc
    return TorchPredictor(module, device=device, precision=precision, info=spec.info)


def get_predictor(spec: ModelSpec, device: str = "auto", precision: str = "auto") -> Predictor:
    """Like :func:`load_predictor`, cached per process by model id, device and precision."""
    if isinstance(spec.obj, Predictor):
        return spec.obj
    key = (spec.info.model_id, device, precision)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            log.info("loading model %s for %s", spec.info.model_id, device)
            cached = _CACHE[key] = load_predictor(spec, device, precision)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return cached
