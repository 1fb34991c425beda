"""The tiling plan: which tiles of which pyramid level, in which order.

The inference level is the slide's working level at the model's µm/px
(:func:`napari_sgnet.io.working.working_level`): a pyramid level read as it is, or the
nearest finer level area-averaged by ``factor`` on the fly. Tiles lie on a grid anchored at
(0, 0) of that level with side
``patch - 2 * overlap``; each tile is predicted from the ``patch``-sized local
window centred on it (and that window's context) and only the tile (the valid
centre) is written. Because a tile's output depends only on its grid position,
runs over different regions, in pieces or resumed, produce the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_sgnet.geometry import Box, chunk_aligned_tiles, context_box, scale_box
from napari_sgnet.inference.predictor_base import ModelInfo
from napari_sgnet.inference.request import RequestError
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.working import WorkingLevel, working_level

__all__ = ["TileIndex", "TilePlan", "WorkItem", "grid_plan", "make_plan"]

TileIndex = tuple[int, int]
#: A tile to do and whether it is glass (glass tiles are written, never predicted).
WorkItem = tuple[TileIndex, bool]


@dataclass(frozen=True)
class TilePlan:
    """Tiles to predict at the working level.

    Attributes
    ----------
    level : int
        Slide pyramid level the windows are read from (the working level itself when
        ``factor`` is 1, else the nearest finer level).
    downsample : float
        Slide level-0 pixels per working pixel.
    width, height : int
        Size of the working level in pixels.
    patch : int
        Local window side (the model's patch size).
    overlap : int
        Pixels dropped on each side of each prediction.
    context_factor : float or None
        Context window side relative to the local window (``None``: no context).
    region : Box
        Requested region at this level, clipped to it.
    tiles : tuple of (ty, tx)
        Tile indices in processing order.
    factor : float
        Pixels of ``level`` per working pixel: 1 when ``level`` is at the model's µm/px,
        else the area-averaging factor (see :mod:`napari_sgnet.io.resample`).
    """

    level: int
    downsample: float
    width: int
    height: int
    patch: int
    overlap: int
    context_factor: float | None
    region: Box
    tiles: tuple[TileIndex, ...]
    factor: float = 1.0

    @property
    def tile(self) -> int:
        """Side of a tile (the valid centre of a patch)."""
        return self.patch - 2 * self.overlap

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the full tile grid of the level."""
        return (-(-self.height // self.tile), -(-self.width // self.tile))

    def tile_box(self, index: TileIndex) -> Box:
        """The tile (valid region) at the inference level, clipped to the level."""
        ty, tx = index
        t = self.tile
        return Box(tx * t, ty * t, t, t).clip(self.width, self.height)

    def local_box(self, index: TileIndex) -> Box:
        """The local window read for a tile (may extend past the level)."""
        ty, tx = index
        return Box(
            tx * self.tile - self.overlap, ty * self.tile - self.overlap, self.patch, self.patch
        )

    def context_box(self, index: TileIndex) -> Box | None:
        """The surrounding window of a tile, or ``None`` without context."""
        if self.context_factor is None:
            return None
        return context_box(self.local_box(index), self.context_factor)

    def to_slide(self, box: Box) -> Box:
        """A box of the inference level in slide level-0 pixels."""
        return scale_box(box, self.downsample)

    def view(self, pyramid: Pyramid) -> WorkingLevel:
        """The working level of ``pyramid`` the windows are read from."""
        return WorkingLevel(pyramid, self.level, self.factor)


def _order(indices: list[TileIndex], region: Box, tile: int, order: str) -> list[TileIndex]:
    if order == "raster":
        return sorted(indices)
    cx, cy = region.center

    def key(idx: TileIndex) -> tuple[float, int, int]:
        ty, tx = idx
        dx, dy = (tx + 0.5) * tile - cx, (ty + 0.5) * tile - cy
        return (dx * dx + dy * dy, ty, tx)

    return sorted(indices, key=key)


def make_plan(
    pyramid: Pyramid,
    info: ModelInfo,
    *,
    region: Box | None = None,
    overlap: int = 0,
    order: str = "raster",
) -> TilePlan:
    """Plan the tiles of a request.

    Parameters
    ----------
    pyramid : Pyramid
        The slide.
    info : ModelInfo
        The model (patch size, context factor, µm/px).
    region : Box, optional
        Region in slide level-0 pixels; ``None`` for the whole slide.
    overlap : int
        Pixels dropped on each side of each prediction.
    order : {"raster", "center"}
        Tile order.

    Raises
    ------
    RequestError
        If the overlap leaves no valid centre or the region misses the slide.
    ScaleError
        If the slide has no µm/px while the model has one, or is coarser than the model.
    """
    work = working_level(pyramid, info.mpp)
    width, height = work.size
    downsample = work.downsample
    lvl_region: Box | None = None
    if region is not None:
        if region.is_empty or region.clip(pyramid.width, pyramid.height).is_empty:
            raise RequestError(
                f"region {region.as_tuple()} lies outside the slide "
                f"({pyramid.width} x {pyramid.height} px)"
            )
        lvl_region = scale_box(region.clip(pyramid.width, pyramid.height), 1.0 / downsample)
    return grid_plan(
        width,
        height,
        patch=info.patch_size,
        context_factor=info.context_factor,
        level=work.level,
        downsample=downsample,
        overlap=overlap,
        region=lvl_region,
        order=order,
        factor=work.factor,
    )


#: Tiles one plan may hold (each costs ~100 bytes in the plan, the done-map and the work list).
MAX_PLAN_TILES = 4_000_000


def grid_plan(
    width: int,
    height: int,
    *,
    patch: int,
    context_factor: float | None,
    level: int = 0,
    downsample: float = 1.0,
    overlap: int = 0,
    region: Box | None = None,
    order: str = "raster",
    factor: float = 1.0,
) -> TilePlan:
    """Plan the tiles of one level of known size (what :func:`make_plan` and evaluation share).

    Parameters
    ----------
    width, height : int
        Size of the level in pixels.
    patch : int
        Local window side.
    context_factor : float or None
        Context window side relative to ``patch``; ``None`` for no context.
    level : int
        Pyramid level the windows are read from.
    downsample : float
        Slide level-0 pixels per working pixel.
    overlap : int
        Pixels dropped on each side of each prediction.
    region : Box, optional
        Region in this level's pixels (clipped to it); ``None`` for the whole level.
    order : {"raster", "center"}
        Tile order.
    factor : float
        Pixels of ``level`` per working pixel (1: ``level`` is the working level).

    Returns
    -------
    TilePlan
        Every tile of the grid of side ``patch - 2 * overlap`` that meets ``region``.

    Raises
    ------
    RequestError
        If the overlap leaves no valid centre.
    """
    if not 0 <= 2 * overlap < patch:
        raise RequestError(
            f"overlap {overlap} leaves no valid centre of a {patch}-px patch "
            f"(need 0 <= 2 * overlap < {patch})"
        )
    lvl_region = (region or Box(0, 0, width, height)).clip(width, height)
    tile = patch - 2 * overlap
    n_tiles = (-(-lvl_region.w // tile)) * (-(-lvl_region.h // tile))
    if n_tiles > MAX_PLAN_TILES:  # the plan, done-map and work list stay bounded in memory
        raise RequestError(
            f"the region needs {n_tiles} tiles of {tile} px, more than the {MAX_PLAN_TILES} one "
            "run may plan; run on regions (--region) or with a model at a coarser µm/px"
        )
    indices = [
        (b.y // tile, b.x // tile) for b in chunk_aligned_tiles(width, height, tile, lvl_region)
    ]
    return TilePlan(
        level=level,
        downsample=downsample,
        width=width,
        height=height,
        patch=patch,
        overlap=overlap,
        context_factor=context_factor,
        region=lvl_region,
        tiles=tuple(_order(indices, lvl_region, tile, order)),
        factor=float(factor),
    )
