"""The predictor contract shared by torch models and plain-numpy predictors (no torch here).

A predictor turns batches of uint8 RGB windows into uint8 labels and confidences.
The engine only ever talks to this interface, so tests and benchmarks can plug in
deterministic functions, and the torch-specific code stays in ``predictor.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.palette import Palette
from napari_sgnet.registry import ModelCard, model_id

__all__ = ["CallablePredictor", "ModelInfo", "Predictor", "crop_valid"]


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a model, without loading it.

    Parameters
    ----------
    name : str
        Human-readable model name.
    model_id : str
        Identity of architecture and weights: a store's done-map is valid only for it.
    config_hash : str
        Hash of the architecture / input contract.
    patch_size : int
        Side of the local patch in pixels.
    context_factor : float or None
        Side of the surrounding patch relative to the local patch; ``None`` when the
        model does not use context.
    mpp : float or None
        µm/px the model was trained at; ``None`` runs at the slide's level 0.
    palette : Palette
        Classes the model predicts.
    kind : str
        ``"SGNet"``, ``"baseline (local patch)"`` or ``"baseline (same field of view)"``
        (:attr:`ModelConfig.kind <napari_sgnet.config.ModelConfig.kind>`); ``""`` when unknown.
    """

    name: str
    model_id: str
    config_hash: str
    patch_size: int
    context_factor: float | None
    mpp: float | None
    palette: Palette
    kind: str = ""

    @classmethod
    def from_config(cls, config: ModelConfig, weights_digest: str) -> ModelInfo:
        """Describe a model by its config and its weights digest.

        Parameters
        ----------
        config : ModelConfig
            The model's configuration.
        weights_digest : str
            The registry's weights digest (:func:`napari_sgnet.registry.weights_digest` of the
            checkpoint file, or :func:`napari_sgnet.model.checkpoint.state_digest` of the
            loaded module: both agree for the same weights).

        Returns
        -------
        ModelInfo
            With ``model_id`` = :func:`napari_sgnet.registry.model_id`, so the same checkpoint
            described from its files or from the loaded module has the same id.
        """
        arch = config.architecture_hash()
        return cls(
            name=config.name,
            model_id=model_id(config.name, arch, weights_digest),
            config_hash=arch,
            patch_size=int(config.patch_size),
            context_factor=float(config.context_factor) if config.needs_context else None,
            mpp=config.mpp,
            palette=config.palette,
            kind=config.kind,
        )

    @classmethod
    def from_card(cls, card: ModelCard) -> ModelInfo:
        """Describe a registry :class:`~napari_sgnet.registry.ModelCard` (hashes its weights)."""
        return cls.from_config(card.config, card.digest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (stored in the label store)."""
        return {
            "name": self.name,
            "id": self.model_id,
            "config_hash": self.config_hash,
            "patch_size": self.patch_size,
            "context_factor": self.context_factor,
            "mpp": self.mpp,
        }


@runtime_checkable
class Predictor(Protocol):
    """Anything that predicts labels for batches of windows."""

    info: ModelInfo

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict a batch.

        Parameters
        ----------
        local : numpy.ndarray
            ``(B, P, P, 3)`` uint8 local patches.
        context : numpy.ndarray or None
            ``(B, C, C, 3)`` uint8 surrounding patches, centred on the local ones;
            ``None`` when ``info.context_factor`` is ``None``.
        crop : int
            Pixels to drop on each side of the output (the overlap).

        Returns
        -------
        labels, confidence : numpy.ndarray
            ``(B, P - 2 crop, P - 2 crop)`` uint8: label ids (class + 1) and max
            softmax x 255.
        """
        ...


def crop_valid(arr: np.ndarray, crop: int) -> np.ndarray:
    """Drop ``crop`` pixels from each side of the two trailing spatial axes of a batch."""
    if crop <= 0:
        return arr
    return arr[:, crop:-crop, crop:-crop]


class CallablePredictor:
    """A :class:`Predictor` from a numpy function ``fn(local, context) -> (labels, conf)``.

    ``fn`` receives full patches and returns full-patch ``(B, P, P)`` uint8 arrays;
    the overlap crop is applied here.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]],
        info: ModelInfo,
    ) -> None:
        self.fn = fn
        self.info = info

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`Predictor.predict`."""
        labels, conf = self.fn(local, context)
        return (
            np.ascontiguousarray(crop_valid(np.asarray(labels, dtype=np.uint8), crop)),
            np.ascontiguousarray(crop_valid(np.asarray(conf, dtype=np.uint8), crop)),
        )
