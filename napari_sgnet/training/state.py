"""Resumable training state without pickle: optimizer tensors in safetensors, the rest in JSON.

A training checkpoint directory holds the model checkpoint (``model.safetensors`` +
``config.json``, see :mod:`napari_sgnet.model.checkpoint`) plus

- ``optimizer.safetensors``: every optimizer state tensor, named ``state.<param index>.<key>``;
- ``trainer_state.json``: step, optimizer ``param_groups``, train config, best score, history.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.model import save_checkpoint

__all__ = [
    "OPTIMIZER_NAME",
    "STATE_NAME",
    "TrainStateError",
    "load_optimizer_state",
    "read_trainer_state",
    "save_training_checkpoint",
]

OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "trainer_state.json"


class TrainStateError(UserInputError):
    """A training checkpoint cannot be resumed from."""


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{index}.{key}"] = t.detach().to("cpu").contiguous()
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, groups


def save_training_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    config: ModelConfig,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint atomically (to a temporary folder, then renamed).

    Parameters
    ----------
    directory : path
        Target folder; an existing one is replaced only once the new one is complete.
    model, config : nn.Module, ModelConfig
        The model and the config to store beside it (with provenance and metrics).
    optimizer : torch.optim.Optimizer
        Its tensors go to ``optimizer.safetensors``, its param groups to the JSON state.
    state : dict
        JSON-serialisable trainer state (``step`` at least).

    Returns
    -------
    Path
        ``directory``.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, config)
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / OPTIMIZER_NAME))
    (tmp / STATE_NAME).write_text(
        json.dumps({**state, "param_groups": groups}, indent=2, default=_json_default) + "\n"
    )
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_trainer_state(directory: str | Path) -> dict[str, Any]:
    """The JSON trainer state of a training checkpoint; errors name the file."""
    path = Path(directory) / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainStateError(f"{path}: cannot read trainer state: {exc}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise TrainStateError(f"{path}: trainer state lacks an integer 'step'")
    return state


def load_optimizer_state(
    directory: str | Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Restore ``optimizer`` from ``optimizer.safetensors`` and the state's ``param_groups``."""
    path = Path(directory) / OPTIMIZER_NAME
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise TrainStateError(f"{path}: cannot read optimizer state: {exc}") from exc
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        per_param.setdefault(int(index), {})[key] = tensor
    groups = state.get("param_groups")
    if not isinstance(groups, list):
        raise TrainStateError(f"{path.parent / STATE_NAME}: missing optimizer param_groups")
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise TrainStateError(f"{path}: optimizer state does not fit this model: {exc}") from exc
