"""Shapes of the v2 generator: the v1 primitive plus basal cells, nerves, vessels, inflammation."""

from __future__ import annotations

from dataclasses import dataclass

from napari_sgnet.synthetic._glands import CRIBRIFORM, GLAND, SOLID, Primitive

__all__ = [
    "CRIBRIFORM",
    "EPITHELIAL",
    "GLAND",
    "INFLAMMATION",
    "NERVE",
    "SOLID",
    "VESSEL",
    "Shape",
]

NERVE, VESSEL, INFLAMMATION = 3, 4, 5
#: Kinds that are glands (epithelium): the ground-truth gland mask.
EPITHELIAL = (GLAND, CRIBRIFORM, SOLID)


@dataclass(frozen=True)
class Shape(Primitive):
    """A v1 :class:`~napari_sgnet.synthetic._glands.Primitive` with the v2 extras.

    ``basal_rim``: width (µm) of a rim of dark flattened basal-cell nuclei along the outer
    outline (0 = none). Nerves (``NERVE``): a bundle ``2 radius`` wide and ``2 radius aspect``
    long along ``angle`` whose centreline waves by ``wave = (amplitude, wavelength, phase)``.
    Vessels (``VESSEL``): the outline is the outer wall; ``wall`` µm of smooth muscle, an
    endothelial rim, a lumen filled with red cells to ``red_cells`` (0-1). Inflammation
    (``INFLAMMATION``): a patch of dense small lymphocyte nuclei on stroma.
    """

    basal_rim: float = 0.0
    wave: tuple[float, float, float] = (0.0, 1.0, 0.0)
    wall: float = 0.0
    red_cells: float = 0.0
