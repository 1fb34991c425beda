"""Beer-Lambert H&E colour model and the stain-shift knob.

Pixels carry haematoxylin and eosin amounts (optical densities); colour is
``255 * exp(-(H * h + E * e + glass))`` with unit stain vectors ``h``, ``e`` in RGB optical
density space. A stain shift rotates both vectors about the grey axis (a hue change such as
another lab's staining or another scanner's colour response) and rescales the amounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

__all__ = ["Stain", "stain_for_shift"]

#: Reference stain vectors (typical H&E, Macenko-style estimates), RGB optical density.
_H_REF = np.array([0.5626, 0.7201, 0.4062])
_E_REF = np.array([0.2159, 0.8012, 0.5581])
#: Glass: slightly blue-grey, about (242, 241, 245) in RGB.
_GLASS_REF = np.array([0.052, 0.056, 0.040])


@dataclass(frozen=True)
class Stain:
    """Stain vectors (unit, RGB OD), amount multipliers and the glass optical density."""

    h: tuple[float, float, float]
    e: tuple[float, float, float]
    h_gain: float
    e_gain: float
    glass: tuple[float, float, float]

    def to_rgb(self, hem: np.ndarray, eos: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (float32 ``(..., 3)``) with 0-255 colour for the given amounts."""
        hem = hem * np.float32(self.h_gain)
        eos = eos * np.float32(self.e_gain)
        for c in range(3):
            od = hem * np.float32(self.h[c])
            od += eos * np.float32(self.e[c])
            od += np.float32(self.glass[c])
            np.exp(-od, out=od)
            od *= np.float32(255.0)
            out[..., c] = od
        return out


def _rotate_about_grey(v: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about the (1, 1, 1) axis, renormalised and kept positive."""
    k = np.ones(3) / math.sqrt(3.0)
    a = math.radians(degrees)
    r = v * math.cos(a) + np.cross(k, v) * math.sin(a) + k * np.dot(k, v) * (1 - math.cos(a))
    r = np.clip(r, 0.02, None)
    return cast(np.ndarray, r / np.linalg.norm(r))


def stain_for_shift(shift: float) -> Stain:
    """The stain of a lab/scanner ``shift`` away from the reference (0 = reference).

    ``shift = 1`` rotates both stain vectors by 20 degrees about the grey axis, multiplies
    haematoxylin by 1.35 and eosin by 0.75 and warms the glass; negative values go the
    other way (cooler, paler nuclei, stronger eosin).
    """
    h = _rotate_about_grey(_H_REF / np.linalg.norm(_H_REF), 20.0 * shift)
    e = _rotate_about_grey(_E_REF / np.linalg.norm(_E_REF), 20.0 * shift)
    glass = np.clip(_GLASS_REF + shift * np.array([0.0, 0.015, 0.045]), 0.0, None)
    return Stain(
        h=tuple(float(x) for x in h),  # type: ignore[arg-type]
        e=tuple(float(x) for x in e),  # type: ignore[arg-type]
        h_gain=float(max(0.2, 1.0 + 0.35 * shift)),
        e_gain=float(max(0.2, 1.0 - 0.25 * shift)),
        glass=tuple(float(x) for x in glass),  # type: ignore[arg-type]
    )
