"""The one torch-free model registry and model card of napari-sgnet.

Everything that names, finds or identifies a model goes through here (the CLI's
``--model NAME``, the dock's model list, inference, fine-tuning lineage); nothing here imports
torch, and listing reads only each checkpoint's ``config.json``.

- :mod:`.layout`: checkpoint file names (:data:`WEIGHTS_NAME`, :data:`CONFIG_NAME`), the
  bundled folder (:data:`BUNDLED_DIR`, ``napari_sgnet/weights/<name>/``), the models folder
  (:func:`default_models_dir`: ``$NAPARI_SGNET_MODELS``, else the XDG data folder), fine-tuned
  names and atomic :func:`publish`; the errors :class:`CheckpointError` and
  :class:`ModelNotFoundError` (both :class:`~napari_sgnet.errors.UserInputError`).
- :mod:`.digest`: the one weights digest (:func:`weights_digest`, a SHA-256 of the tensors,
  equal for a file and for its loaded module) and the model id built from it
  (:func:`model_id`, the resume key of a label store).
- :mod:`.cards`: :class:`ModelCard`, :func:`read_card`, :func:`list_models`,
  :func:`find_model`, the bundled checkpoints, and lineage records (:func:`parent_record`,
  :func:`lineage_record`).
"""

from __future__ import annotations

from napari_sgnet.registry.cards import (
    DEFAULT_BUNDLED,
    ModelCard,
    bundled_model_dir,
    find_model,
    lineage_record,
    list_bundled,
    list_models,
    parent_record,
    read_card,
    resolve_model_dir,
)
from napari_sgnet.registry.digest import (
    DIGEST_SCHEME,
    digest_tensors,
    model_id,
    onnx_digest,
    parse_safetensors_header,
    weights_digest,
)
from napari_sgnet.registry.layout import (
    BUNDLED_DIR,
    CONFIG_NAME,
    MODELS_ENV,
    ONNX_NAME,
    STAGING_PREFIX,
    WEIGHTS_NAME,
    CheckpointError,
    ModelNotFoundError,
    available_name,
    default_models_dir,
    finetuned_name,
    is_checkpoint,
    is_onnx_checkpoint,
    publish,
    root_name,
    staging_dir,
    version_stamp,
)

__all__ = [
    "BUNDLED_DIR",
    "CONFIG_NAME",
    "DEFAULT_BUNDLED",
    "DIGEST_SCHEME",
    "MODELS_ENV",
    "ONNX_NAME",
    "STAGING_PREFIX",
    "WEIGHTS_NAME",
    "CheckpointError",
    "ModelCard",
    "ModelEntry",
    "ModelNotFoundError",
    "available_name",
    "bundled_model_dir",
    "default_models_dir",
    "digest_tensors",
    "find_model",
    "finetuned_name",
    "is_checkpoint",
    "is_onnx_checkpoint",
    "lineage_record",
    "list_bundled",
    "list_models",
    "model_id",
    "models_dir",
    "onnx_digest",
    "parent_record",
    "parse_safetensors_header",
    "publish",
    "read_card",
    "read_entry",
    "resolve_model_dir",
    "root_name",
    "staging_dir",
    "version_stamp",
    "weights_digest",
]

#: Former name of :class:`ModelCard` (``napari_sgnet.app.models`` re-exports it).
ModelEntry = ModelCard
#: Former name of :func:`read_card`.
read_entry = read_card
#: Former name of :func:`default_models_dir`.
models_dir = default_models_dir
