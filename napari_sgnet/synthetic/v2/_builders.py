"""Gland and distractor builders: one site's shapes from its hashed uniforms.

Every builder gets the site centre (µm), ``room`` (half the distance to the nearest
neighbouring site, µm: shapes sized from it pack back to back without overlapping), the
site's uniforms and a key. Scales are in µm (see ``docs/synthetic.md``, Version 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from napari_sgnet.synthetic._hash import derive_key
from napari_sgnet.synthetic.v2._shapes import (
    CRIBRIFORM,
    GLAND,
    INFLAMMATION,
    NERVE,
    SOLID,
    VESSEL,
    Shape,
)

__all__ = ["BUILDERS", "Builder"]

Builder = Callable[[float, float, float, np.ndarray, int], list[Shape]]
Harmonics = tuple[tuple[int, float, float], ...]


def _harm(u: np.ndarray, ks: tuple[int, ...], lo: float, hi: float) -> Harmonics:
    return tuple(
        (k, lo + (hi - lo) * float(u[2 * i]), 2.0 * math.pi * float(u[2 * i + 1]))
        for i, k in enumerate(ks)
    )


def _fit(room: float, aspect: float, harm: Harmonics, lo: float, hi: float) -> float:
    """Radius whose whole outline stays within ``room``, clamped to ``[lo, hi]``."""
    grow = aspect * (1.0 + sum(abs(a) for _, a, _ in harm))
    return min(hi, max(lo, room / grow))


def _benign_gland(
    cx: float, cy: float, room: float, u: np.ndarray, key: int, pin: bool = False
) -> Shape:
    aspect = 1.0 + 0.45 * float(u[1])
    harm = _harm(u[2:8], (2, 3, 5), 0.04, 0.1)
    radius = _fit(room + (25.0 if pin else -6.0), aspect, harm, 28.0, 130.0)
    k = int(5 + 6 * u[8])
    folds = (
        (k, 0.1 + 0.12 * float(u[9]), 2.0 * math.pi * float(u[10])),
        (k + 3, 0.06 + 0.08 * float(u[11]), 2.0 * math.pi * float(u[12])),
    )
    amyl = None
    if u[13] < 0.25 and not pin:
        a = 2.0 * math.pi * float(u[14])
        amyl = (0.3 * radius * math.cos(a), 0.3 * radius * math.sin(a), 6.0 + 8.0 * float(u[15]))
    epithelium = min(
        0.38 * radius, (22.0 + 6.0 * float(u[16])) if pin else 12.0 + 6.0 * float(u[16])
    )
    return Shape(
        GLAND,
        cx,
        cy,
        radius,
        2.0 * math.pi * float(u[17]),
        aspect,
        harm,
        epithelium=epithelium,
        tone=0.5 if pin else 0.1,
        nuclear_density=1.0 if pin else 0.9,
        nuclear_scale=1.2 if pin else 0.95,
        basal=not pin,
        papillae=folds,
        amylacea=amyl,
        key=key,
        basal_rim=3.0,
    )


def benign(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Large pale glands (100-260 µm) with papillary infoldings, a basal-cell rim and now
    and then corpora amylacea; about one in nine is PIN-like (crowded dark nuclei, stratified,
    but still with its basal layer)."""
    return [_benign_gland(cx, cy, room, u[1:], key, pin=bool(u[0] < 0.11))]


def crowded(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Benign glands at tumour density: small (50-80 µm) but pale, folded, with basal cells."""
    aspect = 1.0 + 0.35 * float(u[0])
    harm = _harm(u[1:7], (2, 3, 4), 0.03, 0.08)
    radius = _fit(room - 4.0, aspect, harm, 16.0, 45.0)
    k = int(4 + 4 * u[7])
    folds = ((k, 0.08 + 0.1 * float(u[8]), 2.0 * math.pi * float(u[9])),)
    return [
        Shape(
            GLAND,
            cx,
            cy,
            radius,
            2.0 * math.pi * float(u[10]),
            aspect,
            harm,
            epithelium=min(0.4 * radius, 8.0 + 3.0 * float(u[11])),
            tone=0.12,
            nuclear_density=0.9,
            nuclear_scale=0.95,
            basal=True,
            papillae=folds,
            key=key,
            basal_rim=2.5,
        )
    ]


def atrophy(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Atrophic glands: small (30-50 µm), angular, flattened epithelium (3-5 µm), scant
    cytoplasm; locally like Gleason 3 but inside a benign lobule, with a patchy basal rim."""
    aspect = 1.0 + 0.5 * float(u[0])
    harm = _harm(u[1:7], (2, 3, 5), 0.05, 0.13)
    radius = _fit(0.95 * (room - 2.0), aspect, harm, 9.0, 28.0)
    return [
        Shape(
            GLAND,
            cx,
            cy,
            radius,
            2.0 * math.pi * float(u[7]),
            aspect,
            harm,
            epithelium=min(0.4 * radius, 3.0 + 2.0 * float(u[8])),
            tone=0.3,
            nuclear_density=0.8,
            nuclear_scale=0.85,
            basal_rim=2.0 if u[9] < 0.7 else 0.0,
            key=key,
        )
    ]


def gleason3(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Well-formed small discrete glands (25-80 µm) packed back to back: one cell layer
    (7-11 µm), round open lumens, darker cytoplasm, no basal cells."""
    aspect = 1.0 + 0.3 * float(u[0])
    harm = _harm(u[1:5], (2, 3), 0.02, 0.07)
    radius = _fit(room + 1.0, aspect, harm, 12.0, 40.0)
    return [
        Shape(
            GLAND,
            cx,
            cy,
            radius,
            2.0 * math.pi * float(u[5]),
            aspect,
            harm,
            epithelium=min(0.45 * radius, 7.0 + 4.0 * float(u[6])),
            tone=0.65,
            nuclear_density=0.9,
            nuclear_scale=1.05,
            key=key,
        )
    ]


def gleason4(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Cribriform glands (punched-out lumens), fused glands, or poorly formed glands with
    slit or no lumens; dense (sites 150 µm apart)."""
    if u[0] < 0.45:
        harm = _harm(u[1:7], (2, 3, 4), 0.03, 0.09)
        aspect = 1.0 + 0.3 * float(u[7])
        radius = _fit(1.25 * room, aspect, harm, 40.0, 120.0)
        return [
            Shape(
                CRIBRIFORM,
                cx,
                cy,
                radius,
                2.0 * math.pi * float(u[8]),
                aspect,
                harm,
                epithelium=9.0,
                tone=0.7,
                nuclear_density=0.95,
                nuclear_scale=1.15,
                hole_spacing=18.0 + 8.0 * float(u[9]),
                hole_radius=5.0 + 3.0 * float(u[10]),
                key=key,
            )
        ]
    fused = u[0] < 0.8
    n = (3 + int(4 * u[11])) if fused else (5 + int(5 * u[11]))
    out = []
    for i in range(n):
        v = u[12 + 4 * i : 16 + 4 * i]
        radius = (14.0 + 10.0 * float(v[0])) if fused else (8.0 + 6.0 * float(v[0]))
        dist = 0.0 if i == 0 else (0.25 + 0.45 * float(v[1])) * room
        a = 2.0 * math.pi * float(v[2])
        harm = _harm(np.array([v[3], v[0], v[1], v[3]]), (2, 3), 0.04, 0.14)
        out.append(
            Shape(
                GLAND,
                cx + dist * math.cos(a),
                cy + dist * math.sin(a),
                radius,
                2.0 * math.pi * float(v[3]),
                1.0 + 0.5 * float(v[1]),
                harm,
                epithelium=(9.0 + 3.0 * float(v[2])) if fused else 0.8 * radius,
                tone=0.7,
                nuclear_density=0.95,
                nuclear_scale=1.15,
                key=derive_key(key, i),
            )
        )
    return out


def gleason5(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """Solid sheets without lumens (neighbouring sheets merge), or cords and single cells."""
    if u[0] < 0.65:
        harm = _harm(u[1:9], (2, 3, 4, 5), 0.04, 0.12)
        aspect = 1.0 + 0.3 * float(u[9])
        radius = _fit(room + 14.0, aspect, harm, 25.0, 90.0)
        return [
            Shape(
                SOLID,
                cx,
                cy,
                radius,
                2.0 * math.pi * float(u[10]),
                aspect,
                harm,
                epithelium=0.0,
                tone=0.85,
                nuclear_density=1.0,
                nuclear_scale=1.25,
                key=key,
            )
        ]
    out = []
    base = math.pi * float(u[11])
    for i in range(2 + int(3 * u[12])):
        v = u[13 + 4 * i : 17 + 4 * i]
        half = (0.5 + 0.4 * float(v[0])) * room
        width = 4.5 + 1.5 * float(v[1])
        offset = (float(v[2]) - 0.5) * room
        ox, oy = -offset * math.sin(base), offset * math.cos(base)
        out.append(
            Shape(
                SOLID,
                cx + ox,
                cy + oy,
                width,
                base + 0.4 * (float(v[3]) - 0.5),
                half / width,
                ((3, 0.05 * float(v[1]), 6.28 * float(v[0])),),
                epithelium=0.0,
                tone=0.85,
                nuclear_density=1.0,
                nuclear_scale=1.1,
                key=derive_key(key, i),
            )
        )
    for i in range(2 + int(3 * u[40])):
        v = u[41 + 3 * i : 44 + 3 * i]
        d = (0.3 + 0.6 * float(v[0])) * room
        a = 2.0 * math.pi * float(v[1])
        out.append(
            Shape(
                SOLID,
                cx + d * math.cos(a),
                cy + d * math.sin(a),
                4.0 + 1.5 * float(v[2]),
                0.0,
                1.0,
                (),
                epithelium=0.0,
                tone=0.85,
                nuclear_density=1.0,
                nuclear_scale=1.15,
                key=derive_key(key, 100 + i),
            )
        )
    return out


def distractor(cx: float, cy: float, room: float, u: np.ndarray, key: int) -> list[Shape]:
    """A nerve (wavy bundle), a vessel (lumen, endothelium, wall, red cells), a patch of
    inflammation, or nothing."""
    if u[0] < 0.22:
        half_width = 14.0 + 22.0 * float(u[1])
        length = min(0.9 * room, 80.0 + 140.0 * float(u[2]))
        wave = (3.0 + 6.0 * float(u[3]), 45.0 + 45.0 * float(u[4]), 6.28 * float(u[5]))
        return [
            Shape(
                NERVE,
                cx,
                cy,
                half_width,
                0.6 * (float(u[6]) - 0.5),
                max(1.0, length / half_width),
                (),
                epithelium=0.0,
                tone=0.0,
                nuclear_density=0.0,
                nuclear_scale=1.0,
                key=key,
                wave=wave,
            )
        ]
    if u[0] < 0.6:
        radius = 10.0 + 45.0 * float(u[1]) ** 1.3
        harm = _harm(u[2:6], (2, 3), 0.02, 0.08)
        return [
            Shape(
                VESSEL,
                cx,
                cy,
                radius,
                6.28 * float(u[6]),
                1.0 + 0.8 * float(u[7]),
                harm,
                epithelium=0.0,
                tone=0.0,
                nuclear_density=0.0,
                nuclear_scale=1.0,
                key=key,
                wall=0.28 * radius if radius > 18.0 else 0.0,
                red_cells=0.75 + 0.25 * float(u[9]) if u[8] < 0.55 else 0.0,
            )
        ]
    if u[0] < 0.78:
        radius = 30.0 + 60.0 * float(u[1])
        harm = _harm(u[2:10], (2, 3, 4, 6), 0.05, 0.15)
        return [
            Shape(
                INFLAMMATION,
                cx,
                cy,
                radius,
                6.28 * float(u[10]),
                1.0 + 0.6 * float(u[11]),
                harm,
                epithelium=0.0,
                tone=0.0,
                nuclear_density=0.0,
                nuclear_scale=1.0,
                key=key,
            )
        ]
    return []


BUILDERS: dict[str, Builder] = {
    "benign": benign,
    "crowded": crowded,
    "atrophy": atrophy,
    "gleason3": gleason3,
    "gleason4": gleason4,
    "gleason5": gleason5,
    "distractor": distractor,
}
