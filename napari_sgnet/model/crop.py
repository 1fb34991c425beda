"""Cropping a context-covering map to the local patch's footprint, by relative coordinates.

Boxes follow :mod:`napari_sgnet.geometry`: ``(x, y, w, h)`` with ``x`` along columns, in
*context pixels* (the top-left of the surrounding patch is ``(0, 0)``). Sampling is
continuous (``align_corners=False``): feature cell ``i`` of a stride-``s`` map covers context
pixels ``[i*s, (i+1)*s)`` and is centred at ``(i + 0.5) * s``; output cell ``j`` of an
``n``-cell crop of ``[x, x + w)`` is centred at ``x + (j + 0.5) * w / n``. Cropping and
resizing are therefore one bilinear ``grid_sample``, exact for any sub-pixel offset, with
integer slicing as a fast path when the crop is cell-aligned and needs no resize.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = ["BoxLike", "centered_box", "crop_to_box", "resolve_box"]

BoxLike = torch.Tensor | Sequence[float] | None


def centered_box(local_hw: tuple[int, int], context_hw: tuple[int, int]) -> tuple[float, ...]:
    """``(x, y, w, h)`` of a ``local_hw`` patch centred in a ``context_hw`` patch."""
    (lh, lw), (ch, cw) = local_hw, context_hw
    return ((cw - lw) / 2.0, (ch - lh) / 2.0, float(lw), float(lh))


def resolve_box(
    box: BoxLike, batch: int, local_hw: tuple[int, int], context_hw: tuple[int, int]
) -> torch.Tensor | tuple[float, ...]:
    """Normalise a box argument to ``(B, 4)`` ``(x, y, w, h)`` or one shared tuple.

    Parameters
    ----------
    box : Tensor, sequence or None
        ``None``: the local patch is centred. Shape ``(B, 2)`` / ``(2,)``: ``(x, y)`` offsets of
        the local patch's top-left corner (its size is ``local_hw``). Shape ``(B, 4)`` / ``(4,)``:
        ``(x, y, w, h)``.
    batch : int
        Batch size ``B``.
    local_hw, context_hw : tuple of int
        ``(height, width)`` of the local and surrounding patches, in pixels.
    """
    if box is None:
        return centered_box(local_hw, context_hw)
    lh, lw = local_hw
    if not isinstance(box, torch.Tensor):
        values = tuple(float(v) for v in box)
        if len(values) == 2:
            return (*values, float(lw), float(lh))
        if len(values) == 4:
            return values
        raise ValueError(f"a box needs 2 (x, y) or 4 (x, y, w, h) values, got {len(values)}")
    t = box.to(torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(0).expand(batch, -1)
    if t.ndim != 2 or t.shape[0] != batch or t.shape[1] not in (2, 4):
        raise ValueError(
            f"local_box_in_context must have shape ({batch}, 2) or ({batch}, 4), "
            f"got {tuple(box.shape)}"
        )
    if t.shape[1] == 2:
        size = t.new_tensor([float(lw), float(lh)]).expand(batch, 2)
        t = torch.cat([t, size], dim=1)
    return t


def crop_to_box(
    feature: torch.Tensor,
    box: torch.Tensor | tuple[float, ...],
    out_size: tuple[int, int],
    context_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Sample ``feature`` over ``box`` onto an ``out_size`` grid.

    Parameters
    ----------
    feature : Tensor
        ``(B, C, h, w)`` map covering the whole surrounding patch.
    box : Tensor or tuple
        ``(B, 4)`` tensor or one shared ``(x, y, w, h)`` tuple, in context pixels
        (see :func:`resolve_box`).
    out_size : tuple of int
        ``(height, width)`` of the result.
    context_hw : tuple of int, optional
        Size of the surrounding patch in pixels; defaults to the feature's size (stride 1).

    Returns
    -------
    Tensor
        ``(B, C, *out_size)``; positions past the context edge repeat the border.
    """
    b, _, fh, fw = feature.shape
    ch, cw = context_hw if context_hw is not None else (fh, fw)
    oh, ow = out_size
    if not isinstance(box, torch.Tensor):
        sliced = _slice_if_aligned(feature, box, out_size, (ch, cw))
        if sliced is not None:
            return sliced
        box = torch.tensor(box, dtype=torch.float32).expand(b, 4)
    box = box.to(device=feature.device, dtype=torch.float32)
    x, y, w, h = box.unbind(dim=1)
    theta = torch.zeros(b, 2, 3, dtype=torch.float32, device=feature.device)
    theta[:, 0, 0] = w / cw
    theta[:, 0, 2] = (2 * x + w) / cw - 1
    theta[:, 1, 1] = h / ch
    theta[:, 1, 2] = (2 * y + h) / ch - 1
    grid = F.affine_grid(theta, [b, 1, oh, ow], align_corners=False)
    return F.grid_sample(
        feature, grid.to(feature.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


def _slice_if_aligned(
    feature: torch.Tensor,
    box: tuple[float, ...],
    out_size: tuple[int, int],
    context_hw: tuple[int, int],
) -> torch.Tensor | None:
    """Integer slicing when the box falls on whole cells and needs no resampling."""
    fh, fw = feature.shape[-2:]
    sy, sx = context_hw[0] / fh, context_hw[1] / fw
    cells = [box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy]
    if not all(float(c).is_integer() for c in cells):
        return None
    x0, y0, w, h = (int(c) for c in cells)
    if (h, w) != tuple(out_size) or x0 < 0 or y0 < 0 or x0 + w > fw or y0 + h > fh:
        return None
    return feature[:, :, y0 : y0 + h, x0 : x0 + w]
