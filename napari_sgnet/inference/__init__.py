"""Context-aware tiled inference: request -> tiles -> predictor -> LabelStore.

Importing this package does not import torch; :class:`TorchPredictor` is loaded
on first use.
"""

from __future__ import annotations

from typing import Any

from napari_sgnet.inference.distributed import run_distributed
from napari_sgnet.inference.engine import predict_slide, run_inference
from napari_sgnet.inference.models import ModelSpec, describe_model, get_predictor
from napari_sgnet.inference.plan import TilePlan, make_plan
from napari_sgnet.inference.predictor_base import CallablePredictor, ModelInfo, Predictor
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent, RequestError
from napari_sgnet.inference.sampler import read_batch, read_local_and_context
from napari_sgnet.inference.session import InferenceSession, SupersedableRun
from napari_sgnet.inference.tissue import TissueMask, tissue_mask

__all__ = [
    "CallablePredictor",
    "InferenceRequest",
    "InferenceSession",
    "ModelInfo",
    "ModelSpec",
    "Predictor",
    "ProgressEvent",
    "RequestError",
    "SupersedableRun",
    "TilePlan",
    "TissueMask",
    "TorchPredictor",
    "describe_model",
    "get_predictor",
    "make_plan",
    "predict_slide",
    "read_batch",
    "read_local_and_context",
    "run_distributed",
    "run_inference",
    "tissue_mask",
]


def __getattr__(name: str) -> Any:
    if name == "TorchPredictor":
        from napari_sgnet.inference.predictor import TorchPredictor

        return TorchPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
