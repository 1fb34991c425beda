"""Pure geometry: axis-aligned boxes, level scaling and context windows.

All boxes are in integer pixel coordinates of one pyramid level, ``x`` along
columns and ``y`` along rows, half-open (``x <= col < x + w``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "MPP_TOLERANCE",
    "Box",
    "chunk_aligned_tiles",
    "context_box",
    "scale_box",
    "source_level_for_mpp",
]

#: A level whose µm/px lies within this relative distance of the model's is used as it is.
MPP_TOLERANCE = 0.01


@dataclass(frozen=True)
class Box:
    """A half-open, axis-aligned rectangle ``[x, x + w) x [y, y + h)``.

    Parameters
    ----------
    x, y : int
        Top-left corner (column, row).
    w, h : int
        Width and height; must be non-negative.
    """

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w < 0 or self.h < 0:
            raise ValueError(f"Box size must be non-negative, got w={self.w}, h={self.h}")

    @classmethod
    def from_bounds(cls, x0: int, y0: int, x1: int, y1: int) -> Box:
        """Build a box from its corners ``(x0, y0)`` inclusive and ``(x1, y1)`` exclusive."""
        return cls(int(x0), int(y0), max(0, int(x1) - int(x0)), max(0, int(y1) - int(y0)))

    @property
    def x1(self) -> int:
        """Exclusive right edge."""
        return self.x + self.w

    @property
    def y1(self) -> int:
        """Exclusive bottom edge."""
        return self.y + self.h

    @property
    def area(self) -> int:
        """Number of pixels in the box."""
        return self.w * self.h

    @property
    def is_empty(self) -> bool:
        """True when the box has no pixels."""
        return self.w == 0 or self.h == 0

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)`` in continuous coordinates."""
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    def intersect(self, other: Box) -> Box:
        """The overlap of two boxes (possibly empty, placed at the clipped corner)."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def clip(self, width: int, height: int) -> Box:
        """Clip the box to an image of ``width`` x ``height`` pixels."""
        return self.intersect(Box(0, 0, width, height))

    def translate(self, dx: int, dy: int) -> Box:
        """The same box moved by ``(dx, dy)``."""
        return Box(self.x + dx, self.y + dy, self.w, self.h)

    def contains(self, other: Box) -> bool:
        """True when ``other`` lies entirely inside this box."""
        return (
            other.x >= self.x and other.y >= self.y and other.x1 <= self.x1 and other.y1 <= self.y1
        )

    def slices(self) -> tuple[slice, slice]:
        """Numpy slices ``(rows, cols)`` selecting the box."""
        return (slice(self.y, self.y1), slice(self.x, self.x1))

    def relative_to(self, origin: Box) -> Box:
        """This box in the coordinate frame whose origin is ``origin``'s corner."""
        return Box(self.x - origin.x, self.y - origin.y, self.w, self.h)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)``."""
        return (self.x, self.y, self.w, self.h)


def scale_box(box: Box, factor: float) -> Box:
    """Scale a box by ``factor`` (level ``a`` -> level ``b`` with ``factor = ds_a / ds_b``).

    The result is the smallest integer box covering the scaled continuous box,
    so scaling down never loses a partially covered pixel.

    Parameters
    ----------
    box : Box
        Box in the source level's pixels.
    factor : float
        Multiplier applied to all coordinates.

    Returns
    -------
    Box
        Covering box in the target level's pixels.
    """
    if factor <= 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    x0 = math.floor(box.x * factor + 1e-9)
    y0 = math.floor(box.y * factor + 1e-9)
    x1 = math.ceil(box.x1 * factor - 1e-9)
    y1 = math.ceil(box.y1 * factor - 1e-9)
    return Box.from_bounds(x0, y0, x1, y1)


def context_box(local: Box, factor: float = 2.0, center: tuple[float, float] | None = None) -> Box:
    """The surrounding (context) window of a local patch.

    Parameters
    ----------
    local : Box
        The local patch.
    factor : float
        Side of the context window relative to the local side (SGNet's alpha, 2 by default).
    center : tuple of float, optional
        Centre of the context window. Defaults to the local patch's centre (inference);
        training passes a random point inside the local patch.

    Returns
    -------
    Box
        A ``round(factor * w) x round(factor * h)`` box; it may extend past the image.
    """
    cw, ch = round(local.w * factor), round(local.h * factor)
    cx, cy = center if center is not None else local.center
    return Box(round(cx - cw / 2.0), round(cy - ch / 2.0), cw, ch)


def source_level_for_mpp(
    downsamples: tuple[float, ...] | list[float],
    base_mpp: float | None,
    target_mpp: float | None,
    rel_tol: float = MPP_TOLERANCE,
) -> tuple[int, float]:
    """The level to read for a working resolution of ``target_mpp``, and the resampling factor.

    A level within ``rel_tol`` of ``target_mpp`` is read as it is (factor ``1.0``; the closest
    such level when several are). Otherwise the coarsest level finer than ``target_mpp`` is
    read and reduced by ``factor`` (source pixels per working pixel, ``> 1``). When even
    level 0 is coarser, level 0 is returned with its factor ``< 1`` (callers refuse or warn).
    Without a known base or target µm/px, level 0 is read as it is.

    Parameters
    ----------
    downsamples : sequence of float
        Downsample of each level relative to level 0 (``1.0`` first).
    base_mpp : float or None
        µm/px of level 0.
    target_mpp : float or None
        The model's µm/px.
    rel_tol : float
        Relative tolerance for a level to count as being at ``target_mpp``.

    Returns
    -------
    tuple of (int, float)
        ``(level, factor)``; the working pixel is ``factor`` pixels of ``level`` a side.
    """
    if not downsamples:
        raise ValueError("a pyramid needs at least one level")
    if base_mpp is None or target_mpp is None or base_mpp <= 0 or target_mpp <= 0:
        return 0, 1.0
    target_ds = target_mpp / base_mpp
    errors = [abs(ds / target_ds - 1.0) for ds in downsamples]
    best = int(min(range(len(errors)), key=errors.__getitem__))
    if errors[best] <= rel_tol:
        return best, 1.0
    finer = [i for i, ds in enumerate(downsamples) if ds < target_ds]
    level = max(finer, key=lambda i: downsamples[i]) if finer else 0
    return level, target_ds / float(downsamples[level])


def chunk_aligned_tiles(width: int, height: int, tile: int, region: Box | None = None) -> list[Box]:
    """Tiles of side ``tile`` on a grid anchored at ``(0, 0)`` that cover ``region``.

    Tiles are clipped to the image, so edge tiles may be smaller. Returned in
    row-major order.
    """
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    region = (region or Box(0, 0, width, height)).clip(width, height)
    if region.is_empty:
        return []
    tiles = []
    for ty in range(region.y // tile, (region.y1 - 1) // tile + 1):
        for tx in range(region.x // tile, (region.x1 - 1) // tile + 1):
            tiles.append(Box(tx * tile, ty * tile, tile, tile).clip(width, height))
    return tiles
