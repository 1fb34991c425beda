"""Resolve the ``model`` of a request: describe it cheaply, load it once per process.

:func:`describe_model` finds a checkpoint through the registry (a folder, or a model name:
``--model NAME``), reads only its ``config.json`` and takes the registry's weights digest of
``model.safetensors`` (or of ``model.onnx``, whose contract it checks: an ONNX model runs with
:class:`~napari_sgnet.inference.onnx_predictor.OnnxPredictor`), so the engine (or a
distributed driver) can plan and check the store without torch. :func:`get_predictor` loads
it, once per process and device (workers reuse it).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sgnet.inference.predictor_base import ModelInfo, Predictor
from napari_sgnet.inference.request import RequestError
from napari_sgnet.registry import (
    CheckpointError,
    ModelCard,
    ModelNotFoundError,
    find_model,
    is_onnx_checkpoint,
    read_card,
)

__all__ = ["ModelSpec", "default_model_dir", "describe_model", "get_predictor", "load_predictor"]

log = logging.getLogger(__name__)

#: Loaded predictors kept per process (a viewer switching models keeps at most this many).
CACHE_SIZE = 2
_CACHE: OrderedDict[tuple[str, str, str], Predictor] = OrderedDict()
_CACHE_LOCK = threading.Lock()


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
    return _find(None).path


def _find(name_or_path: str | Path | None) -> ModelCard:
    try:
        return find_model(name_or_path)
    except (CheckpointError, ModelNotFoundError) as exc:
        raise RequestError(str(exc)) from exc


def _describe_checkpoint(card: ModelCard) -> ModelSpec:
    try:
        if card.format == "onnx":  # the whole contract is checked before any store is touched
            from napari_sgnet.inference.onnx_predictor import check_onnx_model

            check_onnx_model(card.path, card.config)
        info = ModelInfo.from_card(card)
    except CheckpointError as exc:
        raise RequestError(str(exc)) from exc
    return ModelSpec(info=info, path=card.path.resolve())


def describe_model(model: Any) -> ModelSpec:
    """Describe the ``model`` of a request.

    Parameters
    ----------
    model : str, Path, ModelSpec, ModelCard, Predictor, nn.Module or None
        A checkpoint folder or a model name (:func:`napari_sgnet.registry.find_model`), an
        already described model, a registry card, a predictor, a loaded model with
        ``.config``, or ``None`` for the bundled default.

    Raises
    ------
    RequestError
        If the model cannot be found or described.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, ModelCard):
        return _describe_checkpoint(model)
    if model is None or isinstance(model, (str, Path)):
        return _describe_checkpoint(_find(model))
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
    if spec.obj is None and spec.path is not None and is_onnx_checkpoint(spec.path):
        from napari_sgnet.inference.onnx_predictor import OnnxPredictor

        try:
            card = read_card(spec.path)
            return OnnxPredictor(spec.path, card.config, spec.info, device=device)
        except CheckpointError as exc:
            raise RequestError(str(exc)) from exc
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.model.runtime import resolve_device

    module = spec.obj
    if module is None:
        if spec.path is None:
            raise RequestError(f"model {spec.info.name}: neither a checkpoint folder nor a model")
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
