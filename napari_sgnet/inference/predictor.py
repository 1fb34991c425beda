"""The torch predictor: the only module that moves tensors to a device.

uint8 batches go to the device as they are (4x less traffic than float32); the
input transform (the config's stain normalisation, if any, then mean/std:
``model/runtime.py``), the forward pass, softmax, argmax and confidence run there; uint8
labels and confidences come back. bf16 autocast is used where the device supports
it, and inputs are channels-last (NHWC memory, which is how the windows arrive).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.inference.request import RequestError
from napari_sgnet.model.checkpoint import state_digest
from napari_sgnet.model.fuse import prepare_for_inference
from napari_sgnet.model.runtime import autocast, autocast_dtype, input_normaliser, resolve_device

__all__ = ["TorchPredictor", "model_info_from_module"]

log = logging.getLogger(__name__)


def model_info_from_module(module: torch.nn.Module, weights_digest: str | None = None) -> ModelInfo:
    """Describe a loaded model that carries a :class:`~napari_sgnet.config.ModelConfig`.

    Parameters
    ----------
    module : torch.nn.Module
        The model, with ``.config``.
    weights_digest : str, optional
        Its weights digest when known; by default
        :func:`~napari_sgnet.model.checkpoint.state_digest` of the module (the same value as
        the registry's digest of its checkpoint file).

    Raises
    ------
    RequestError
        When the module has no ``.config``.
    """
    config = getattr(module, "config", None)
    if config is None:
        raise RequestError(f"model {type(module).__name__} has no .config (ModelConfig)")
    return ModelInfo.from_config(config, weights_digest or state_digest(module))


class TorchPredictor:
    """Run a segmentation ``nn.Module`` following the SGNet model contract.

    The module is called as ``module(local, context=context)`` with normalised float
    NCHW inputs and returns ``{"logits": (B, K, P, P), ...}`` (or the logits tensor).

    Parameters
    ----------
    module : torch.nn.Module
        The model; must have ``.config`` (a ModelConfig).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
    precision : str
        ``"auto"``, ``"fp32"`` or ``"bf16"``.
    info : ModelInfo, optional
        Precomputed description (saves hashing the weights again).
    channels_last : bool
        Convert the model to channels-last memory format.
    fuse : bool
        Run a copy prepared for inference (:func:`napari_sgnet.model.fuse.prepare_for_inference`:
        batch norm folded into the convolutions, SGNet's unused auxiliary head dropped); the
        given module is not modified beyond eval mode and device, and ``info`` (the weights
        digest) is that of the given module.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device: str = "auto",
        precision: str = "auto",
        info: ModelInfo | None = None,
        channels_last: bool = True,
        fuse: bool = True,
    ) -> None:
        self.info = info or model_info_from_module(module)
        self.device = resolve_device(device)
        self.autocast_dtype = autocast_dtype(self.device, precision)
        config = module.config
        module = module.eval().to(self.device)
        channels_last = channels_last and self.device.type != "mps"
        if fuse:  # a folded copy: the caller's module and the digest above are untouched
            module = prepare_for_inference(module, channels_last=channels_last)
        elif channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        # the config's stain normalisation (if any), then mean/std: the transform training used
        self._normalise = input_normaliser(config, self.device)
        log.info("model %s on %s (%s)", self.info.name, self.device, self.autocast_dtype or "fp32")

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> normalised float ``(B, 3, H, W)`` channels-last on device."""
        t = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        else:
            t = t.to(self.device)
        x = t.permute(0, 3, 1, 2)  # NHWC memory viewed as NCHW = channels-last
        return self._normalise(x)

    def _autocast(self) -> Any:
        return autocast(self.device, self.autocast_dtype)

    @torch.inference_mode()
    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`napari_sgnet.inference.predictor_base.Predictor.predict`."""
        labels, conf, _ = self._predict(local, context, crop, keep_probabilities=False)
        return labels, conf

    @torch.inference_mode()
    def predict_probabilities(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`predict`, plus ``(B, K, P - 2 crop, P - 2 crop)`` uint8 per-class
        probabilities: softmax x 255 rounded to nearest (ties to even, as the confidence)."""
        labels, conf, probs = self._predict(local, context, crop, keep_probabilities=True)
        assert probs is not None
        return labels, conf, probs

    def _predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int, *, keep_probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x = self._to_device(local)
        c = (
            self._to_device(context)
            if context is not None and self.info.context_factor is not None
            else None
        )
        with self._autocast():
            out = self.module(x, context=c)
        logits = out["logits"] if isinstance(out, dict) else out
        if crop > 0:
            logits = logits[..., crop:-crop, crop:-crop]
        probs = torch.softmax(logits.float(), dim=1)
        conf, idx = probs.max(dim=1)
        labels = (idx + 1).to(torch.uint8)
        conf = (conf * 255.0).round_().to(torch.uint8)
        kept = None
        if keep_probabilities:
            kept = (probs * 255.0).round_().to(torch.uint8).cpu().numpy()
        return labels.cpu().numpy(), conf.cpu().numpy(), kept
