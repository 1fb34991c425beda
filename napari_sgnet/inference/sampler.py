"""Read the local and context windows of a batch of tiles as uint8 RGB.

Windows are read from the plan's working level (:meth:`TilePlan.view`: the level itself, or
the nearest finer level area-averaged on the fly, the same reads training uses). Padding past
the slide edge is a constant glass-white (255), the same as
:func:`napari_sgnet.io.windows.read_local_and_context`.
A batch of neighbouring tiles is read as one union window when that decodes fewer
pixels than separate reads (neighbouring context windows overlap 4x); the crops
are identical either way, because constant padding does not depend on the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.inference.plan import TileIndex, TilePlan
from napari_sgnet.inference.request import RequestError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD, read_local_and_context

__all__ = ["GLASS_PAD", "read_batch", "read_local_and_context", "to_rgb_uint8"]


def to_rgb_uint8(window: np.ndarray) -> np.ndarray:
    """Bring a window to ``(H, W, 3)`` uint8: grey is replicated, alpha dropped, 16-bit scaled.

    Raises
    ------
    RequestError
        For channel counts or dtypes a colour model cannot take.
    """
    if window.ndim == 2:
        window = window[..., None]
    channels = window.shape[-1]
    if channels == 1:
        window = np.repeat(window, 3, axis=-1)
    elif channels == 4:
        window = window[..., :3]
    elif channels != 3:
        raise RequestError(f"slides must be grey, RGB or RGBA; got {channels} channels")
    if window.dtype == np.uint8:
        return window
    if window.dtype == np.uint16:
        return (window >> 8).astype(np.uint8)
    if np.issubdtype(window.dtype, np.floating):
        return (np.clip(window, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise RequestError(f"unsupported slide pixel type {window.dtype}")


def _union(boxes: Sequence[Box]) -> Box:
    return Box.from_bounds(
        min(b.x for b in boxes),
        min(b.y for b in boxes),
        max(b.x1 for b in boxes),
        max(b.y1 for b in boxes),
    )


def _crop(window: np.ndarray, outer: Box, inner: Box) -> np.ndarray:
    rel = inner.relative_to(outer)
    return window[rel.y : rel.y1, rel.x : rel.x1]


def read_batch(
    pyramid: Pyramid, plan: TilePlan, tiles: Sequence[TileIndex]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Local (and context) windows of ``tiles`` as batches.

    Parameters
    ----------
    pyramid : Pyramid
        The slide.
    plan : TilePlan
        Gives the working level (source level and factor) and the windows of each tile.
    tiles : sequence of (ty, tx)
        Tile indices; must not be empty.

    Returns
    -------
    local : numpy.ndarray
        ``(B, P, P, 3)`` uint8.
    context : numpy.ndarray or None
        ``(B, C, C, 3)`` uint8, or ``None`` when the plan has no context.
    """
    if not tiles:
        raise ValueError("read_batch needs at least one tile")
    locals_ = [plan.local_box(t) for t in tiles]
    contexts = [plan.context_box(t) for t in tiles]
    outer = [c if c is not None else lb for c, lb in zip(contexts, locals_, strict=False)]
    union = _union(outer)
    use_union = union.area <= sum(b.area for b in outer)
    lbatch, cbatch = [], []
    view = plan.view(pyramid)
    if use_union:
        big = view.read(union, pad_value=GLASS_PAD)
        for lb, ob, cb in zip(locals_, outer, contexts, strict=False):
            lbatch.append(to_rgb_uint8(_crop(big, union, lb)))
            if cb is not None:
                cbatch.append(to_rgb_uint8(_crop(big, union, ob)))
    else:
        for lb, cb in zip(locals_, contexts, strict=False):
            if cb is None:
                lbatch.append(to_rgb_uint8(view.read(lb, pad_value=GLASS_PAD)))
                continue
            context = view.read(cb, pad_value=GLASS_PAD)
            local = _crop(context, cb, lb) if cb.contains(lb) else view.read(lb, GLASS_PAD)
            lbatch.append(to_rgb_uint8(local))
            cbatch.append(to_rgb_uint8(context))
    local = np.stack(lbatch)
    context = np.stack(cbatch) if cbatch else None
    return local, context
