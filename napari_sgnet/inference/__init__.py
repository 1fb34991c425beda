"""Context-aware tiled inference: request -> tiles -> predictor -> sink (LabelStore, array, scorer).

One tile loop (:func:`run_tiles`) feeds pluggable sinks (:class:`StoreSink`,
:class:`ArraySink`, :class:`ScoreSink`); :func:`run_inference` (this process) and
:func:`run_distributed` (dask.distributed) share one run lifecycle; the caller chooses.

Importing this package does not import torch; :class:`TorchPredictor` is loaded
on first use.
"""

from __future__ import annotations

from typing import Any

from napari_sgnet.inference.distributed import run_distributed
from napari_sgnet.inference.engine import predict_slide, run_inference
from napari_sgnet.inference.loop import run_tiles
from napari_sgnet.inference.models import ModelSpec, describe_model, get_predictor
from napari_sgnet.inference.plan import TilePlan, make_plan
from napari_sgnet.inference.predictor_base import CallablePredictor, ModelInfo, Predictor
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent, RequestError
from napari_sgnet.inference.sampler import read_batch, read_local_and_context
from napari_sgnet.inference.session import InferenceSession, SupersedableRun
from napari_sgnet.inference.sinks import ArraySink, ScoreSink, StoreSink
from napari_sgnet.inference.tissue import TissueMask, tissue_mask

__all__ = [
    "ArraySink",
    "CallablePredictor",
    "InferenceRequest",
    "InferenceSession",
    "ModelInfo",
    "ModelSpec",
    "Predictor",
    "ProgressEvent",
    "RequestError",
    "ScoreSink",
    "StoreSink",
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
    "run_tiles",
    "tissue_mask",
]


def __getattr__(name: str) -> Any:
    if name == "TorchPredictor":
        from napari_sgnet.inference.predictor import TorchPredictor

        return TorchPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
