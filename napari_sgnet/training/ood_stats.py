"""Training-data statistics for the out-of-distribution check: fit, calibrate, save.

:func:`fit_reference` describes tiles drawn the way training draws them (the trainer's
samplers) by colour and by the model's pooled decoder features
(:mod:`napari_sgnet.inference.ood`); :func:`calibrate` sets the thresholds from tiles of
held-out slides, chosen as the per-slide check chooses them
(:func:`~napari_sgnet.inference.ood_check.slide_tiles`): each threshold is the
:data:`QUANTILE` quantile of the held-out tile distances. :func:`add_ood_statistics` does
both for a checkpoint folder and writes the result into its ``config.json`` (the weights,
and so the model id, are untouched).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sgnet.config import ModelConfig, OODReference
from napari_sgnet.inference.ood import colour_descriptors, colour_distances, feature_distances
from napari_sgnet.inference.ood_check import predict_with_features, slide_tiles
from napari_sgnet.inference.predictor import TorchPredictor, model_info_from_module
from napari_sgnet.inference.sampler import read_batch
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.model import load_checkpoint
from napari_sgnet.model.checkpoint import state_digest
from napari_sgnet.registry.layout import CONFIG_NAME
from napari_sgnet.training.dataset import SampleSource

__all__ = [
    "FIT_TILES",
    "HELD_OUT_TILES",
    "QUANTILE",
    "add_ood_statistics",
    "calibrate",
    "fit_reference",
    "write_reference",
]

log = logging.getLogger(__name__)

#: Training tiles the statistics are fitted on.
FIT_TILES = 256
#: Tissue tiles per held-out slide the thresholds are calibrated on.
HELD_OUT_TILES = 48
#: Each threshold is this quantile of the held-out tile distances.
QUANTILE = 0.99
#: Colour covariance shrinkage towards its diagonal.
SHRINK = 0.05
#: Feature standard deviations are floored at this share of their median (dead channels).
STD_FLOOR = 0.1

RULE = (
    "threshold = {q:g} quantile of the held-out tiles' distances; a slide or view is out of "
    "distribution when the median distance of its tiles exceeds a threshold"
)


def _predictor(model: torch.nn.Module, device: str) -> TorchPredictor:
    return TorchPredictor(model, device=device, precision="fp32", channels_last=False)


def _describe(
    predictor: TorchPredictor, local: np.ndarray, context: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour descriptors and pooled features of the tiles that are judged."""
    _, _, feats = predict_with_features(predictor, local, context)
    desc, usable = colour_descriptors(local)
    return desc[usable], None if feats is None else feats[usable]


def fit_reference(
    model: torch.nn.Module,
    sources: Sequence[SampleSource],
    *,
    n_tiles: int = FIT_TILES,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 16,
) -> tuple[OODReference, tuple[np.ndarray, np.ndarray | None]]:
    """Fit the statistics on ``n_tiles`` training tiles drawn round-robin from ``sources``.

    Returns
    -------
    reference : OODReference
        Without thresholds (see :func:`calibrate`).
    spare : tuple of arrays
        Descriptors of a quarter of the tiles kept out of the fit (colour, features), for
        :func:`calibrate` when no held-out slide is available.
    """
    if not sources:
        raise ValueError("fitting training statistics needs at least one training source")
    predictor = _predictor(model, device)
    rng = np.random.default_rng([seed, 0x00D])
    colours: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    with_features = True
    for start in range(0, n_tiles, batch_size):
        samples = [sources[(start + i) % len(sources)].sample(rng)
                   for i in range(min(batch_size, n_tiles - start))]
        local = np.stack([s.local for s in samples])
        context = np.stack([s.context for s in samples]) if predictor.info.context_factor else None
        desc, f = _describe(predictor, local, context)
        colours.append(desc)
        with_features = with_features and f is not None
        if f is not None:
            feats.append(f)
    colour = np.concatenate(colours)
    feature = np.concatenate(feats) if with_features and feats else None
    if len(colour) < 8:
        raise ValueError(f"only {len(colour)} training tiles were mostly tissue: too few to fit")
    spare = np.arange(len(colour)) % 4 == 3
    fit = ~spare
    cov = np.cov(colour[fit], rowvar=False)
    cov = (1 - SHRINK) * cov + SHRINK * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(cov))
    f_mean = f_std = None
    if feature is not None:
        f_mean = feature[fit].mean(axis=0)
        std = feature[fit].std(axis=0)
        f_std = np.maximum(std, STD_FLOOR * float(np.median(std)) + 1e-6)
    reference = OODReference(
        colour_mean=tuple(float(v) for v in colour[fit].mean(axis=0)),
        colour_cov=tuple(tuple(float(v) for v in row) for row in cov),
        feature_mean=None if f_mean is None else tuple(float(v) for v in f_mean),
        feature_std=None if f_std is None else tuple(float(v) for v in f_std),
        n_tiles=int(fit.sum()),
        weights=state_digest(model)[:12],
    )
    return reference, (colour[spare], None if feature is None else feature[spare])


def _distances(
    reference: OODReference, colour: np.ndarray, feature: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    c = colour_distances(colour, reference)
    f = feature_distances(feature, reference) if feature is not None else None
    return c, f


def calibrate(
    reference: OODReference,
    model: torch.nn.Module,
    slides: Sequence[Pyramid] = (),
    *,
    spare: tuple[np.ndarray, np.ndarray | None] | None = None,
    tiles_per_slide: int = HELD_OUT_TILES,
    device: str = "cpu",
    quantile: float = QUANTILE,
    description: dict[str, Any] | None = None,
) -> OODReference:
    """Thresholds from held-out tiles: of ``slides`` if given, else the ``spare`` tiles.

    Parameters
    ----------
    reference : OODReference
        Fitted statistics (:func:`fit_reference`).
    model : torch.nn.Module
        The model they belong to.
    slides : sequence of Pyramid
        Held-out slides at the training stain (never trained on).
    spare : tuple of arrays, optional
        Training tiles kept out of the fit (used when ``slides`` is empty).
    tiles_per_slide : int
        Tissue tiles read per slide.
    device : str
        Where the model runs.
    quantile : float
        The threshold quantile.
    description : dict, optional
        Recorded in ``calibration`` (e.g. the held-out seeds).
    """
    cols: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    per_slide: dict[str, list[float | None]] = {}
    if slides:
        predictor = _predictor(model, device)
        info = model_info_from_module(model)
        for slide in slides:
            plan, chosen = slide_tiles(slide, info, tiles_per_slide)
            s_cols, s_feats = [], []
            for start in range(0, len(chosen), 16):
                local, context = read_batch(slide, plan, chosen[start : start + 16])
                c, f = _distances(reference, *_describe(predictor, local, context))
                s_cols.append(c)
                s_feats.append(f if f is not None else np.full(len(c), np.nan))
            sc, sf = np.concatenate(s_cols), np.concatenate(s_feats)
            per_slide[slide.name] = [_round_median(sc), _round_median(sf)]
            cols.append(sc)
            feats.append(sf)
        source = "held-out slides"
    elif spare is not None:
        c, f = _distances(reference, *spare)
        cols.append(c)
        feats.append(f if f is not None else np.full(len(c), np.nan))
        source = "training tiles kept out of the fit"
    else:
        raise ValueError("calibration needs held-out slides or spare tiles")
    colour = np.concatenate(cols)
    feature = np.concatenate(feats)
    if colour.size == 0:
        raise ValueError("no held-out tile was mostly tissue: cannot calibrate")
    has_f = reference.feature_mean is not None and bool(np.isfinite(feature).any())
    calibration = {
        "rule": RULE.format(q=quantile),
        "source": source,
        "quantile": quantile,
        "tiles": int(colour.size),
        "slide_medians": per_slide,
        **(description or {}),
    }
    return dataclasses.replace(
        reference,
        colour_threshold=round(float(np.quantile(colour, quantile)), 4),
        feature_threshold=round(float(np.nanquantile(feature, quantile)), 4) if has_f else None,
        calibration=calibration,
    )


def _round_median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return round(float(np.median(values)), 4) if values.size else None


def write_reference(checkpoint: str | os.PathLike[str], reference: OODReference) -> Path:
    """Replace the ``ood`` statistics in a checkpoint's ``config.json`` (atomically)."""
    path = Path(checkpoint) / CONFIG_NAME
    config = ModelConfig.load(path).replace(ood=reference)
    tmp = path.with_name(f".{path.name}.tmp")
    config.save(tmp)
    os.replace(tmp, path)
    return path


def add_ood_statistics(
    checkpoint: str | os.PathLike[str],
    train_sources: Sequence[SampleSource],
    held_out: Sequence[Pyramid] = (),
    *,
    n_tiles: int = FIT_TILES,
    tiles_per_slide: int = HELD_OUT_TILES,
    seed: int = 0,
    device: str = "cpu",
    description: dict[str, Any] | None = None,
) -> OODReference:
    """Fit, calibrate and save the statistics of the checkpoint folder ``checkpoint``.

    Parameters
    ----------
    checkpoint : path
        A checkpoint folder (``model.safetensors`` + ``config.json``).
    train_sources : sequence of SampleSource
        Where the model's training tiles come from.
    held_out : sequence of Pyramid
        Held-out slides at the training stain; empty: calibrate on training tiles kept out
        of the fit.
    n_tiles, tiles_per_slide, seed, device
        See :func:`fit_reference` and :func:`calibrate`.
    description : dict, optional
        Recorded in the calibration (seeds, sizes).

    Returns
    -------
    OODReference
        What was written.
    """
    model = load_checkpoint(checkpoint, device=device)
    reference, spare = fit_reference(model, train_sources, n_tiles=n_tiles, seed=seed,
                                     device=device)
    reference = calibrate(reference, model, held_out, spare=spare,
                          tiles_per_slide=tiles_per_slide, device=device,
                          description={"fit_seed": seed, **(description or {})})
    write_reference(checkpoint, reference)
    log.info("%s: OOD statistics from %d tiles; thresholds colour %s, feature %s", checkpoint,
             reference.n_tiles, reference.colour_threshold, reference.feature_threshold)
    return reference
