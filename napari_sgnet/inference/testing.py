"""Reference predictors and slides for tests, benchmarks and debugging (no torch).

They live in the package (not in ``tests/``) so that subprocesses and dask workers
can import them by name.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.inference.predictor_base import ModelInfo, crop_valid
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import GLEASON, Palette

__all__ = [
    "PixelRulePredictor",
    "differing_arrays",
    "expected_pixel_rule",
    "pattern_slide",
    "store_arrays",
]


def expected_pixel_rule(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What :class:`PixelRulePredictor` predicts for each pixel: ``(labels, confidence)``."""
    return (rgb[..., 0] // 64 + 1).astype(np.uint8), rgb[..., 1].astype(np.uint8)


class PixelRulePredictor:
    """A predictor whose output is a per-pixel function of its input.

    Labels are ``red // 64 + 1`` (1..4) and confidence is the green channel, so
    tiling and stitching must reproduce :func:`expected_pixel_rule` of the slide
    exactly. With ``check_context`` it also asserts that every context window is
    centred on its local window (the context's centre equals the local patch).

    Parameters
    ----------
    patch_size : int
        Local patch side.
    context_factor : float or None
        Context side relative to the patch; ``None`` for no context.
    mpp : float or None
        Resolution the "model" runs at.
    delay_s : float
        Sleep per batch (to test cancellation and crashes).
    model_id : str
        Identity recorded in stores.
    palette : Palette
        Classes (at least 4).
    """

    def __init__(
        self,
        patch_size: int = 64,
        context_factor: float | None = 2.0,
        *,
        mpp: float | None = None,
        delay_s: float = 0.0,
        model_id: str = "pixel-rule:v1",
        palette: Palette = GLEASON,
        check_context: bool = True,
    ) -> None:
        self.info = ModelInfo(
            name="pixel-rule",
            model_id=model_id,
            config_hash="pixel-rule",
            patch_size=patch_size,
            context_factor=context_factor,
            mpp=mpp,
            palette=palette,
        )
        self.delay_s = delay_s
        self.check_context = check_context
        self.batches = 0

    def predict(
        self, local: np.ndarray, context: np.ndarray | None, crop: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`~napari_sgnet.inference.predictor_base.Predictor`."""
        self.batches += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if local.dtype != np.uint8 or local.ndim != 4 or local.shape[-1] != 3:
            raise AssertionError(f"bad local batch {local.shape} {local.dtype}")
        if self.info.context_factor is not None and self.check_context:
            if context is None or context.shape[0] != local.shape[0]:
                raise AssertionError("missing context batch")
            p, c = local.shape[1], context.shape[1]
            o = (c - p) // 2
            if not np.array_equal(context[:, o : o + p, o : o + p], local):
                raise AssertionError("context window is not centred on the local window")
        labels, conf = expected_pixel_rule(local)
        return (
            np.ascontiguousarray(crop_valid(labels, crop)),
            np.ascontiguousarray(crop_valid(conf, crop)),
        )


def pattern_slide(
    width: int = 700,
    height: int = 500,
    *,
    seed: int = 0,
    levels: int = 3,
    mpp: float | None = 0.5,
    glass_border: int = 0,
    chunk: int = 128,
    name: str = "pattern",
) -> Pyramid:
    """A small deterministic RGB slide: random blobs of colour, optional glass border.

    Level ``k`` is a 2**k subsample of level 0 (nearest), so every level is exact.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
    img = img ^ rng.integers(0, 32, size=img.shape, dtype=np.uint8)
    if glass_border:
        g = glass_border
        img[:g], img[-g:], img[:, :g], img[:, -g:] = 245, 245, 245, 245
    arrays = tuple(
        da.from_array(np.ascontiguousarray(img[:: 2**k, :: 2**k]), chunks=(chunk, chunk, 3))
        for k in range(levels)
    )
    return Pyramid(arrays, tuple(float(2**k) for k in range(levels)), mpp=mpp, name=name)


def store_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a label store, read fully (small stores only)."""
    store = LabelStore.open(path, mode="r")
    out = {
        f"level{k}": store.read_labels(Box(0, 0, w, h), k)
        for k, (h, w) in enumerate(store.level_shapes)
    }
    full = Box(0, 0, store.width, store.height)
    out["confidence"] = store.read_confidence(full)
    out["edited"] = store.read_edited(full)
    out["done"] = store.done_map()
    if store.has_probabilities:
        out["probabilities"] = store.read_probabilities(full)
    return out


def differing_arrays(a: str | Path, b: str | Path) -> list[str]:
    """Names of the arrays that differ between two label stores (empty: byte-identical)."""
    xa, xb = store_arrays(a), store_arrays(b)
    names = sorted(set(xa) | set(xb))
    return [n for n in names if n not in xa or n not in xb or not np.array_equal(xa[n], xb[n])]
