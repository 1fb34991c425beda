"""Export a torch checkpoint (bundled or fine-tuned) to the ONNX model contract, verified.

:func:`export_onnx` writes ``model.onnx`` (torch.onnx's dynamo exporter, opset 18, a symbolic
batch dimension) and the checkpoint's ``config.json`` into a new folder, then runs the file
with onnxruntime through :class:`~napari_sgnet.inference.onnx_predictor.OnnxPredictor` (the
engine's own ONNX path) on a fixed test batch and compares with the torch model run by
:class:`~napari_sgnet.inference.predictor.TorchPredictor` in fp32: the largest absolute logit
difference must stay below ``tolerance`` (1e-4) and the labels must be identical, else
nothing is published. The graph is the inference copy of the model
(:func:`~napari_sgnet.model.fuse.prepare_for_inference`: batch norm folded, auxiliary head
dropped), with the contract's input and output names (docs/model.md, "Bring your own model").
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sgnet.errors import UserInputError
from napari_sgnet.registry import CONFIG_NAME, ONNX_NAME, read_card

__all__ = ["OnnxExport", "export_onnx", "test_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and measured.

    Attributes
    ----------
    path : Path
        The new ONNX checkpoint folder.
    max_abs_diff : float
        Largest absolute difference of the logits, onnxruntime vs torch (fp32).
    labels_identical : bool
        Whether every label of the test batch agreed.
    tiles : int
        Tiles in the test batch.
    """

    path: Path
    max_abs_diff: float
    labels_identical: bool
    tiles: int


def test_batch(patch: int, context: int | None, n: int = 4, seed: int = 0) -> tuple[Any, Any]:
    """A fixed uint8 NHWC test batch: smooth random colour fields (tissue-like, not noise)."""
    rng = np.random.default_rng(seed)

    def field(side: int) -> np.ndarray:
        coarse = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
        reps = -(-side // 8)
        big = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)[:, :side, :side]
        noise = rng.normal(0, 12, big.shape)
        return np.clip(big + noise, 0, 255).astype(np.uint8)

    return field(patch), (field(context) if context else None)


def export_onnx(
    model: str | Path | None,
    out: str | Path,
    *,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> OnnxExport:
    """Export a torch checkpoint to ``out`` as ``model.onnx`` + ``config.json``, verified.

    Parameters
    ----------
    model : str, Path or None
        A checkpoint folder or model name (:func:`napari_sgnet.registry.find_model`);
        ``None`` for the bundled default.
    out : str or Path
        The new folder (must not exist unless ``overwrite``; it is written beside and moved
        into place only after verification).
    tolerance : float
        Largest absolute logit difference accepted.
    overwrite : bool
        Replace an existing ONNX checkpoint folder at ``out``.

    Raises
    ------
    UserInputError
        Unknown model, an ONNX model as input, an existing ``out``, or a verification that
        failed (the message gives the difference).
    """
    import torch
    from torch import nn

    from napari_sgnet.inference.models import describe_model
    from napari_sgnet.inference.onnx_predictor import OnnxPredictor
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.model import load_checkpoint
    from napari_sgnet.model.fuse import prepare_for_inference

    spec = describe_model(model)
    if spec.path is None:
        raise UserInputError(f"{model}: export-model exports a checkpoint folder or a model name")
    card = read_card(spec.path)
    if card.format != "torch":
        raise UserInputError(f"{spec.path}: is already an ONNX model")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserInputError(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists() and not (out / ONNX_NAME).is_file():
        raise UserInputError(f"{out}: exists and is not an ONNX model folder; refusing to replace")
    config = card.config
    module = load_checkpoint(spec.path, device="cpu").eval()
    graph_module = prepare_for_inference(module, channels_last=False)
    needs_context = config.needs_context

    class Graph(nn.Module):  # the contract's names: local[, context] -> logits
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, local: torch.Tensor, context: torch.Tensor | None = None) -> Any:
            out = self.inner(local, context=context)
            return out["logits"] if isinstance(out, dict) else out

    graph = Graph(graph_module).eval()
    p = int(config.patch_size)
    c = int(config.context_size) if needs_context else None
    example: tuple[torch.Tensor, ...] = (torch.randn(2, 3, p, p),)
    names = ["local"]
    batch = torch.export.Dim("batch")
    shapes: dict[str, Any] = {"local": {0: batch}}
    if c is not None:
        example = (*example, torch.randn(2, 3, c, c))
        names.append("context")
        shapes["context"] = {0: batch}
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                example,
                str(stage / ONNX_NAME),
                dynamo=True,
                opset_version=18,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=shapes if c is not None else {"local": {0: batch}},
                external_data=False,
                verbose=False,
            )
        shutil.copy2(spec.path / CONFIG_NAME, stage / CONFIG_NAME)
        # verify through the engine's own ONNX predictor, against the torch predictor
        onnx_card = read_card(stage)
        from napari_sgnet.inference.predictor_base import ModelInfo

        onnx_pred = OnnxPredictor(stage, onnx_card.config, ModelInfo.from_card(onnx_card))
        torch_pred = TorchPredictor(module, device="cpu", precision="fp32", info=spec.info)
        local, context = test_batch(p, c)
        ref = _torch_logits(torch_pred, local, context)
        got = onnx_pred.logits(local, context)
        diff = float(np.abs(got - ref).max())
        same = bool(np.array_equal(got.argmax(1), ref.argmax(1)))
        if not diff < tolerance or not same:
            raise UserInputError(
                f"{spec.path}: the ONNX export does not reproduce the torch model (max abs "
                f"logit difference {diff:.3g}, tolerance {tolerance:g}; labels identical: "
                f"{same}); nothing written to {out}"
            )
        meta = {"source": str(spec.path), "max_abs_logit_diff": diff, "test_tiles": len(local)}
        log.info("ONNX export of %s verified: %s", spec.path, json.dumps(meta))
        if out.exists():
            shutil.rmtree(out)
        stage.chmod(0o755)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return OnnxExport(out, diff, same, len(local))


def _torch_logits(predictor: Any, local: Any, context: Any) -> Any:
    import torch

    with torch.inference_mode():
        x = predictor._to_device(local)
        c = predictor._to_device(context) if context is not None else None
        out = predictor.module(x, context=c)
        logits = out["logits"] if isinstance(out, dict) else out
        return logits.float().cpu().numpy()
