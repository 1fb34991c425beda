"""Checkpoints: ``model.safetensors`` + ``config.json``, validated on load, never unpickled.

A checkpoint is a directory holding

- ``config.json``: :class:`~napari_sgnet.config.ModelConfig` (architecture, palette, patch size,
  context factor, µm/px, normalisation, provenance, metrics);
- ``model.safetensors``: every ``state_dict`` tensor, with string metadata ``format``,
  ``format_version`` and ``architecture_hash`` (``ModelConfig.architecture_hash()``), so weights
  paired with the wrong ``config.json`` are caught before anything is built.

Loading checks, in order: no pickle (by suffix and by content), a complete and well-formed
safetensors file, a valid config, matching format and architecture hash, exactly the expected
tensor names/shapes/dtypes, finite values. Any failure raises :class:`CheckpointError` naming
the file and the problem.

File names, the safetensors framing check, :class:`CheckpointError` and the weights digest live
in the torch-free :mod:`napari_sgnet.registry`; :func:`state_digest` feeds a loaded module's
tensors to the same digest, so a module and its checkpoint file have the same digest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.model.sgnet import SegmentationModel, build_model
from napari_sgnet.registry import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    digest_tensors,
    parse_safetensors_header,
)
from napari_sgnet.registry.digest import PICKLE_HINT

__all__ = [
    "CONFIG_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "checkpoint_paths",
    "load_checkpoint",
    "save_checkpoint",
    "state_digest",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "napari-sgnet"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar"})
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _tensor_bytes(tensor: torch.Tensor) -> Iterator[bytes]:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # 0-d buffers too
    if flat.numel():
        yield flat.view(torch.uint8).numpy().tobytes()


def state_digest(model: torch.nn.Module) -> str:
    """The weights digest of a module's ``state_dict`` (see :mod:`napari_sgnet.registry.digest`).

    Equal to :func:`napari_sgnet.registry.weights_digest` of the ``model.safetensors`` that
    :func:`save_checkpoint` writes for this module.
    """
    return digest_tensors(
        (name, _DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape), _tensor_bytes(t))
        for name, t in model.state_dict().items()
    )


def checkpoint_paths(directory_or_file: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, config)`` paths of a checkpoint directory or of its weights file."""
    path = Path(directory_or_file)
    if path.is_dir():
        return path / WEIGHTS_NAME, path / CONFIG_NAME
    return path, path.parent / CONFIG_NAME


def save_checkpoint(
    model: SegmentationModel,
    directory: str | os.PathLike[str],
    config: ModelConfig | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``.

    Parameters
    ----------
    model : SegmentationModel
        The model to save (any device; tensors are copied to CPU).
    directory : path
        Target directory; created if needed.
    config : ModelConfig, optional
        Config to store, e.g. ``model.config`` with updated ``training``/``metrics``; it must
        describe the same architecture. Defaults to ``model.config``.
    overwrite : bool
        Replace the checkpoint files in an existing non-empty directory.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    CheckpointError
        If the directory is not empty (without ``overwrite``) or ``config`` does not match.
    """
    directory = Path(directory)
    config = config if config is not None else model.config
    if config.architecture_hash() != model.config.architecture_hash():
        raise CheckpointError(
            directory, "the given config describes a different architecture than the model"
        )
    if directory.exists():
        if not directory.is_dir():
            raise CheckpointError(directory, "exists and is not a directory")
        if any(directory.iterdir()) and not overwrite:
            raise CheckpointError(
                directory, "already exists and is not empty; pass overwrite=True to replace it"
            )
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture_hash": config.architecture_hash(),
        "general_branch": config.general_branch,
        "use_context": str(config.use_context).lower(),
        "baseline_input": config.baseline_input,
        "num_classes": str(config.num_classes),
    }
    weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    tmp_weights = directory / f".{WEIGHTS_NAME}.tmp"
    tmp_config = directory / f".{CONFIG_NAME}.tmp"
    try:
        save_file(tensors, str(tmp_weights), metadata=metadata)
        config.save(tmp_config)
        os.replace(tmp_weights, weights)
        os.replace(tmp_config, config_path)
    finally:
        for tmp in (tmp_weights, tmp_config):
            tmp.unlink(missing_ok=True)
    log.info("saved %s checkpoint to %s", config.name, directory)
    return directory


def load_checkpoint(
    directory_or_file: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> SegmentationModel:
    """Load and fully validate a checkpoint; returns the model in eval mode on ``device``.

    Parameters
    ----------
    directory_or_file : path
        A checkpoint directory, or its ``model.safetensors`` (``config.json`` must sit beside).
    device : str or torch.device
        Where to put the model.

    Raises
    ------
    CheckpointError
        On any problem; the message names the file and says what is wrong.
    """
    weights, config_path = checkpoint_paths(directory_or_file)
    if weights.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(weights, f"is a pickle-based PyTorch checkpoint; {PICKLE_HINT}")
    if not weights.is_file():
        raise CheckpointError(weights, "not found (a checkpoint needs model.safetensors)")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(weights, f"cannot read: {exc}") from exc
    header, _ = parse_safetensors_header(weights, data, len(data))
    config = _load_config(config_path)
    _check_metadata(weights, header.pop("__metadata__", None) or {}, config)
    try:
        model = build_model(config)
    except ValueError as exc:
        raise CheckpointError(config_path, str(exc)) from exc
    _check_tensors(weights, header, model.state_dict())
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise CheckpointError(weights, f"corrupt safetensors data: {exc}") from exc
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(weights, f"non-finite values (NaN/inf) in {_listing(bad)}")
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def _load_config(path: Path) -> ModelConfig:
    if not path.is_file():
        raise CheckpointError(path, "not found (a checkpoint needs config.json beside the weights)")
    try:
        return ModelConfig.load(path)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        raise CheckpointError(path, f"invalid model config: {message}") from exc


def _check_metadata(path: Path, meta: dict[str, str], config: ModelConfig) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            path, f"not a napari-sgnet checkpoint (metadata format={meta.get('format')!r})"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(path, "missing or invalid format_version metadata") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"checkpoint format {version} is newer than this napari-sgnet understands "
            f"({FORMAT_VERSION}); upgrade napari-sgnet",
        )
    expected = config.architecture_hash()
    if meta.get("architecture_hash") != expected:
        raise CheckpointError(
            path,
            f"weights were saved for architecture {meta.get('architecture_hash')!r} but "
            f"config.json describes {expected!r}: the config does not belong to these weights",
        )


def _check_tensors(path: Path, header: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    mismatched = []
    for name in sorted(set(expected) & set(header)):
        want, got = expected[name], header[name]
        want_dtype = _DTYPES.get(want.dtype, str(want.dtype))
        if list(got["shape"]) != list(want.shape) or got["dtype"] != want_dtype:
            mismatched.append(
                f"{name} {got['dtype']}{list(got['shape'])} != {want_dtype}{list(want.shape)}"
            )
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"mismatched tensors: {_listing(mismatched)}")
    if problems:
        summary = "; ".join(problems)
        raise CheckpointError(path, f"weights do not fit the configured model; {summary}")


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)}: {shown}{more}"
