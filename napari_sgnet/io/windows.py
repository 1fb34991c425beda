"""Local and surrounding (context) windows read together, shared by inference and training."""

from __future__ import annotations

import numpy as np

from napari_sgnet.geometry import Box, context_box
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["GLASS_PAD", "read_local_and_context"]

#: Pixels past the slide edge are treated as glass (white) in RGB slides.
GLASS_PAD = 255


def read_local_and_context(
    pyramid: Pyramid,
    level: int,
    box: Box,
    context_factor: float = 2.0,
    center: tuple[float, float] | None = None,
    pad_value: int = GLASS_PAD,
) -> tuple[np.ndarray, np.ndarray, Box]:
    """Read a local patch and its surrounding patch at one pyramid level.

    The surrounding patch is read once and the local patch is cut from it when it
    lies inside (always, for a centred context), so each pixel is decoded once.

    Parameters
    ----------
    pyramid : Pyramid
        The slide (or a label pyramid: pass ``pad_value=0``).
    level : int
        Pyramid level; ``box`` is in this level's pixels.
    box : Box
        The local patch; may extend past the image.
    context_factor : float
        Side of the context relative to the local patch.
    center : tuple of float, optional
        Centre of the context window; defaults to the local patch's centre.
    pad_value : int
        Value used past the image edge (255 = glass for RGB slides, 0 = no label for labels).

    Returns
    -------
    local : numpy.ndarray
        ``(box.h, box.w[, C])``.
    context : numpy.ndarray
        ``(round(f * h), round(f * w)[, C])``.
    context_box : Box
        Where the context window lies, in the level's pixels.
    """
    ctx = context_box(box, context_factor, center=center)
    context = pyramid.read(ctx, level, pad_value=pad_value)
    if ctx.contains(box):
        rel = box.relative_to(ctx)
        local = context[rel.y : rel.y1, rel.x : rel.x1].copy()
    else:
        local = pyramid.read(box, level, pad_value=pad_value)
    return local, context, ctx
