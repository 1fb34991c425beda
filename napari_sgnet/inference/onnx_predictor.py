"""Bring your own model: an ONNX segmentation model run with onnxruntime (no torch here).

A checkpoint folder holding ``model.onnx`` and the usual ``config.json`` (classes and palette,
µm/px, patch size, context factor or none, mean/std) runs through the same engine as a torch
checkpoint. The contract (docs/model.md, "Bring your own model"):

* input ``local``: float32 ``(N, 3, P, P)``, RGB normalised as ``(x / 255 - mean) / std``
  with the config's ``mean``/``std`` (the arithmetic of
  :class:`napari_sgnet.model.runtime.UInt8Normaliser`, done here in numpy);
* input ``context`` (only when the config uses context): float32 ``(N, 3, C, C)``,
  ``C = config.context_size``, the surrounding window centred on the local one, normalised
  the same way;
* output ``logits``: float32 ``(N, K, P, P)``, ``K`` = the palette's classes (other outputs
  are ignored); softmax, argmax and confidence are computed here.

``N`` may be symbolic (any batch) or fixed (batches are then run in pieces of ``N``, the last
padded). Spatial and channel dimensions must be fixed to those values or symbolic. Loading
checks all of it before the first tile, and refuses (naming the file): a file that is not
ONNX, missing or extra inputs, a missing ``logits`` output, wrong dtypes, shapes or class
count, external tensor data outside the folder, and a config with stain normalisation (the
graph would have to do it). No pickle, no custom operators, no code from the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.inference.predictor_base import ModelInfo, crop_valid
from napari_sgnet.registry import CONFIG_NAME, ONNX_NAME, CheckpointError

__all__ = ["OnnxPredictor", "check_onnx_model", "onnx_contract"]

log = logging.getLogger(__name__)

_FLOAT = 1  # onnx.TensorProto.FLOAT


def onnx_contract(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The inputs and the output a model of ``config`` must have: name -> shape (``-1``
    for the batch dimension)."""
    p = int(config.patch_size)
    out: dict[str, tuple[int, ...]] = {"local": (-1, 3, p, p)}
    if config.needs_context:
        c = int(config.context_size)
        out["context"] = (-1, 3, c, c)
    out["logits"] = (-1, config.num_classes, p, p)
    return out


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _check_external_data(model: Any, folder: Path, file: Path) -> None:
    """External tensor data must be files inside ``folder``."""
    base = folder.resolve()
    for tensor in _initialisers(model):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        where = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / where).resolve()
        if not where or Path(where).is_absolute() or not target.is_relative_to(base):
            raise CheckpointError(
                file,
                f"tensor {tensor.name!r} refers to external data {where!r} outside the model "
                f"folder {folder}; refused",
            )
        if not target.is_file():
            raise CheckpointError(file, f"tensor {tensor.name!r}: external data {where!r} missing")


def _initialisers(model: Any) -> list[Any]:
    out = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                out.append(attr.t)
    return out


def check_onnx_model(folder: str | Path, config: ModelConfig) -> Any:
    """Check ``folder/model.onnx`` against the contract of ``config``; return the loaded
    ``onnx.ModelProto`` (weights not loaded when they are external).

    Raises
    ------
    CheckpointError
        Naming the file and the problem (see the module docstring).
    """
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise CheckpointError(
            Path(folder) / ONNX_NAME,
            "ONNX models need the onnx extra: pip install 'napari-sgnet[onnx]'",
        ) from exc
    folder = Path(folder)
    file = folder / ONNX_NAME
    if config.stain_normalisation is not None:
        raise CheckpointError(
            folder / CONFIG_NAME,
            "an ONNX model's config must have no stain_normalisation (the engine only applies "
            "mean/std to ONNX inputs)",
        )
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError: not an ONNX protobuf at all
        raise CheckpointError(file, f"is not a valid ONNX model: {exc}") from exc
    _check_external_data(model, folder, file)  # before anything follows a reference
    try:
        onnx.checker.check_model(str(file))  # by path: external data resolved in the folder
    except Exception as exc:  # ValidationError: a protobuf, but not a valid model
        raise CheckpointError(file, f"is not a valid ONNX model: {exc}") from exc
    contract = onnx_contract(config)
    init_names = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in init_names}
    outputs = {v.name: v for v in model.graph.output}
    wanted_inputs = [n for n in contract if n != "logits"]
    missing = [n for n in wanted_inputs if n not in inputs]
    extra = [n for n in inputs if n not in wanted_inputs]
    if missing or extra:
        raise CheckpointError(
            file,
            f"has inputs {sorted(inputs)}, the config ({config.kind}) needs exactly "
            f"{wanted_inputs}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra})" if extra else ""),
        )
    if "logits" not in outputs:
        raise CheckpointError(file, f"has no output 'logits' (outputs: {sorted(outputs)})")
    for name, want in contract.items():
        info = inputs[name] if name in inputs else outputs[name]
        elem = info.type.tensor_type.elem_type
        if elem != _FLOAT:
            raise CheckpointError(file, f"{name} must be float32, the file declares type {elem}")
        dims = _dims(info)
        ok = len(dims) == len(want) and all(
            w == -1 or isinstance(d, str) or d == w for d, w in zip(dims, want, strict=False)
        )
        if not ok:
            shown = ["N" if w == -1 else w for w in want]
            what = " (K = the config's classes)" if name == "logits" else ""
            raise CheckpointError(file, f"{name} has shape {dims}, the config needs {shown}{what}")
    return model


def _normaliser(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """``scale, shift`` of :class:`~napari_sgnet.model.runtime.UInt8Normaliser`, float32."""
    m = np.asarray(config.mean, dtype=np.float32)
    s = np.asarray(config.std, dtype=np.float32)
    scale = np.float32(1.0) / (np.float32(255.0) * s)
    shift = -m / s
    return scale.reshape(1, 3, 1, 1), shift.reshape(1, 3, 1, 1)


class OnnxPredictor:
    """Run an ONNX checkpoint with onnxruntime (the :class:`Predictor` interface).

    Parameters
    ----------
    folder : str or Path
        The checkpoint folder (``model.onnx`` + ``config.json``).
    config : ModelConfig
        Its configuration.
    info : ModelInfo
        Its description (model id from the registry digest).
    device : str
        ``"cpu"``/``"auto"`` (CPU), or ``"cuda"``: CUDA when onnxruntime has it.
    threads : int, optional
        Intra-op threads (default: onnxruntime's).

    Raises
    ------
    CheckpointError
        When the model breaks the contract (:func:`check_onnx_model`).
    """

    def __init__(
        self,
        folder: str | Path,
        config: ModelConfig,
        info: ModelInfo,
        *,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.info = info
        self.config = config
        model = check_onnx_model(self.folder, config)
        dims = _dims(next(v for v in model.graph.input if v.name == "local"))
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(
                str(self.folder / ONNX_NAME), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime's own errors: unsupported op, bad weights...
            raise CheckpointError(
                self.folder / ONNX_NAME, f"onnxruntime cannot load it: {exc}"
            ) from exc
        self.scale, self.shift = _normaliser(config)
        log.info("ONNX model %s on %s", info.name, providers[0])

    def _normalise(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
        return np.ascontiguousarray(x * self.scale + self.shift)

    def logits(self, local: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """``(B, K, P, P)`` float32 logits of uint8 NHWC windows."""
        feeds = {"local": self._normalise(local)}
        if self.info.context_factor is not None:
            if context is None:
                raise ValueError("this model needs the context windows")
            feeds["context"] = self._normalise(context)
        n = self.fixed_batch
        if n is None:
            return np.asarray(self.session.run(["logits"], feeds)[0])
        parts = []
        b = len(local)
        for start in range(0, b, n):
            piece = {}
            for k, v in feeds.items():
                chunk = v[start : start + n]
                if len(chunk) < n:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - len(chunk), 0)])
                piece[k] = chunk
            parts.append(np.asarray(self.session.run(["logits"], piece)[0]))
        return np.concatenate(parts)[:b]

    def _predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = crop_valid(self.logits(local, context).transpose(0, 2, 3, 1), crop)
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        probs = e / e.sum(axis=-1, keepdims=True)
        labels = (probs.argmax(axis=-1) + 1).astype(np.uint8)
        conf = np.round(probs.max(axis=-1) * 255.0).astype(np.uint8)
        return labels, conf, np.round(probs * 255.0).astype(np.uint8).transpose(0, 3, 1, 2)

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`napari_sgnet.inference.predictor_base.Predictor.predict`."""
        labels, conf, _ = self._predict(local, context, crop)
        return labels, conf

    def predict_probabilities(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels, confidence and ``(B, K, t, t)`` uint8 probabilities (softmax x 255)."""
        return self._predict(local, context, crop)
