"""Gland architecture per Gleason-like class: placement on hashed jittered grids, and shapes.

Each graded class (benign, Gleason 3, 4, 5) owns a jittered grid of candidate gland sites.
A site's hash decides presence, position and shape; the site becomes a gland group only when
its centre lies in a tissue region of that class and its whole footprint stays inside that
region and inside the tissue. Every decision depends on the site alone, so any block of any
level finds the same glands.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key, uniforms
from napari_sgnet.synthetic._layout import Layout

__all__ = ["CLASS_SPECS", "ClassSpec", "GlandIndex", "Primitive"]

GLAND, CRIBRIFORM, SOLID = 0, 1, 2
_N_DRAWS = 80
_RING = 12
_ANGLES = np.linspace(0.0, 2.0 * np.pi, _RING, endpoint=False)


@dataclass(frozen=True)
class Primitive:
    """One gland-like shape, in level-0 µm.

    ``kind`` is ``GLAND`` (epithelial ring around one lumen), ``CRIBRIFORM`` (epithelial
    mass punched by many small lumens) or ``SOLID`` (sheet or cord of cells, no lumen).
    The outline is ``r(theta) = radius * (1 + sum_k amp_k cos(k theta + phase_k))`` in a
    frame rotated by ``angle`` and stretched by ``aspect`` along its first axis; papillary
    folds (``papillae``, same form) thicken the epithelium towards the lumen only.
    """

    kind: int
    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float
    harmonics: tuple[tuple[int, float, float], ...]
    epithelium: float
    tone: float
    nuclear_density: float
    nuclear_scale: float
    basal: bool = False
    papillae: tuple[tuple[int, float, float], ...] = ()
    hole_spacing: float = 0.0
    hole_radius: float = 0.0
    amylacea: tuple[float, float, float] | None = None
    key: int = 0

    @property
    def extent(self) -> float:
        """Radius of a disc around the centre that contains the whole shape."""
        return self.radius * self.aspect * (1.0 + sum(abs(a) for _, a, _ in self.harmonics))


@dataclass(frozen=True)
class ClassSpec:
    """Gland grid of one class: site spacing (µm), presence probability, max group radius."""

    label: int
    spacing_um: float
    presence: float
    max_extent_um: float


#: Gland grids. Spacing sets how often a 512 µm local patch of a graded region sees no gland
#: while its 1024 µm context does (see docs/synthetic.md).
CLASS_SPECS = (
    ClassSpec(2, 800.0, 0.95, 420.0),
    ClassSpec(3, 760.0, 0.95, 200.0),
    ClassSpec(4, 800.0, 0.95, 260.0),
    ClassSpec(5, 780.0, 0.95, 280.0),
)


def _harmonics(
    u: np.ndarray, ks: tuple[int, ...], lo: float, hi: float
) -> tuple[tuple[int, float, float], ...]:
    return tuple(
        (k, lo + (hi - lo) * u[2 * i], 2.0 * math.pi * u[2 * i + 1]) for i, k in enumerate(ks)
    )


def _benign(cx: float, cy: float, u: np.ndarray, key: int) -> list[Primitive]:
    """Large glands, lobulated, with papillary infolding; one to three merged lobes."""
    out = []
    n_lobes = 1 + int(u[0] < 0.55) + int(u[1] < 0.2)
    angle0 = 2.0 * math.pi * u[2]
    for i in range(n_lobes):
        v = u[8 + 14 * i : 22 + 14 * i]
        radius = 65.0 + 55.0 * v[0]
        ox = oy = 0.0
        if i:
            d = 1.2 * radius
            ox, oy = d * math.cos(angle0 + 2.2 * i), d * math.sin(angle0 + 2.2 * i)
        harm = _harmonics(v[2:8], (2, 3, 5), 0.04, 0.1)
        k = int(5 + 5 * v[8])
        folds = (
            (k, 0.12 + 0.12 * v[9], 2.0 * math.pi * v[10]),
            (k + 3, 0.08 + 0.1 * v[4], 2.0 * math.pi * v[5]),
        )
        amyl = None
        if v[11] < 0.3:
            a = 2.0 * math.pi * v[12]
            amyl = (0.3 * radius * math.cos(a), 0.3 * radius * math.sin(a), 7.0 + 9.0 * v[13])
        out.append(
            Primitive(
                GLAND,
                cx + ox,
                cy + oy,
                radius,
                2 * math.pi * v[12],
                1.0 + 0.35 * v[13],
                harm,
                epithelium=16.0 + 6.0 * v[1],
                tone=0.1,
                nuclear_density=0.9,
                nuclear_scale=0.95,
                basal=True,
                papillae=folds,
                amylacea=amyl,
                key=derive_key(key, i),
            )
        )
    return out


def _gleason3(cx: float, cy: float, u: np.ndarray, key: int) -> list[Primitive]:
    """Clusters of small, round, discrete glands with clear lumens and one cell layer."""
    out: list[Primitive] = []
    n = 3 + int(5 * u[0])
    for i in range(14):
        if len(out) == n:
            break
        v = u[4 + 5 * i : 9 + 5 * i]
        radius = 18.0 + 16.0 * v[0]
        dist = 0.0 if not out else 35.0 + 85.0 * v[1]
        a = 2.0 * math.pi * v[2]
        gx, gy = cx + dist * math.cos(a), cy + dist * math.sin(a)
        if any(math.hypot(gx - p.cx, gy - p.cy) < radius + p.radius + 12.0 for p in out):
            continue
        harm = _harmonics(np.array([v[3], v[4], v[4], v[3]]), (2, 3), 0.02, 0.07)
        out.append(
            Primitive(
                GLAND,
                gx,
                gy,
                radius,
                2 * math.pi * v[3],
                1.0 + 0.3 * v[4],
                harm,
                epithelium=7.0 + 3.0 * v[1],
                tone=0.55,
                nuclear_density=0.9,
                nuclear_scale=1.05,
                key=derive_key(key, i),
            )
        )
    return out


def _gleason4(cx: float, cy: float, u: np.ndarray, key: int) -> list[Primitive]:
    """Cribriform glands (many punched-out lumens) or fused clusters of poorly formed glands."""
    if u[0] < 0.55:
        radius = 80.0 + 70.0 * u[1]
        harm = _harmonics(u[2:8], (2, 3, 4), 0.03, 0.09)
        return [
            Primitive(
                CRIBRIFORM,
                cx,
                cy,
                radius,
                2 * math.pi * u[8],
                1.0 + 0.3 * u[9],
                harm,
                epithelium=9.0,
                tone=0.7,
                nuclear_density=0.95,
                nuclear_scale=1.15,
                hole_spacing=20.0 + 8.0 * u[10],
                hole_radius=5.5 + 3.0 * u[11],
                key=key,
            )
        ]
    out = []
    n = 7 + int(6 * u[12])
    for i in range(n):
        v = u[16 + 4 * i : 20 + 4 * i]
        radius = 20.0 + 16.0 * v[0]
        dist = 0.0 if i == 0 else 25.0 + 60.0 * v[1]
        a = 2.0 * math.pi * v[2]
        harm = _harmonics(np.array([v[3], v[0], v[1], v[3]]), (2, 3), 0.04, 0.12)
        out.append(
            Primitive(
                GLAND,
                cx + dist * math.cos(a),
                cy + dist * math.sin(a),
                radius,
                2 * math.pi * v[3],
                1.0 + 0.5 * v[1],
                harm,
                epithelium=11.0 + 4.0 * v[2],
                tone=0.7,
                nuclear_density=0.95,
                nuclear_scale=1.15,
                key=derive_key(key, i),
            )
        )
    return out


def _gleason5(cx: float, cy: float, u: np.ndarray, key: int) -> list[Primitive]:
    """Solid sheets of cells without lumens, or infiltrating single-cell files (cords)."""
    if u[0] < 0.6:
        radius = 65.0 + 70.0 * u[1]
        harm = _harmonics(u[2:12], (2, 3, 4, 5, 7), 0.04, 0.13)
        return [
            Primitive(
                SOLID,
                cx,
                cy,
                radius,
                2 * math.pi * u[12],
                1.0 + 0.4 * u[13],
                harm,
                epithelium=0.0,
                tone=0.85,
                nuclear_density=1.0,
                nuclear_scale=1.25,
                key=key,
            )
        ]
    out = []
    n = 5 + int(6 * u[14])
    base = math.pi * u[15]
    for i in range(n):
        v = u[16 + 4 * i : 20 + 4 * i]
        half = 45.0 + 75.0 * v[0]
        width = 4.5 + 2.0 * v[1]
        offset = -120.0 + 240.0 * v[2]
        along = 80.0 * (v[3] - 0.5)
        ox = -offset * math.sin(base) + along * math.cos(base)
        oy = offset * math.cos(base) + along * math.sin(base)
        out.append(
            Primitive(
                SOLID,
                cx + ox,
                cy + oy,
                width,
                base + 0.5 * (v[3] - 0.5),
                half / width,
                ((3, 0.05 * v[1], 6.28 * v[0]),),
                epithelium=0.0,
                tone=0.85,
                nuclear_density=1.0,
                nuclear_scale=1.1,
                key=derive_key(key, i),
            )
        )
    return out


_BUILDERS = {2: _benign, 3: _gleason3, 4: _gleason4, 5: _gleason5}


def _group_extent(prims: list[Primitive], cx: float, cy: float) -> float:
    return max(math.hypot(p.cx - cx, p.cy - cy) + p.extent for p in prims)


_Entry = tuple[tuple[Primitive, ...], float, float, float]
_EMPTY: _Entry = ((), 0.0, 0.0, 0.0)


class GlandIndex:
    """Finds the gland primitives near a rectangle; caches each grid site's outcome.

    A site's outcome (its primitives, or none) is a pure function of the site, so the cache
    only saves work: neighbouring blocks and coarser levels see the same sites again.

    Parameters
    ----------
    layout : Layout
        Tissue and region model the glands must respect.
    max_sites : int
        Cache capacity (sites); the cache is emptied when it fills up.
    """

    def __init__(self, layout: Layout, max_sites: int = 100_000) -> None:
        self.layout = layout
        self.max_sites = max_sites
        self._cache: dict[tuple[int, int, int], _Entry] = {}
        self._lock = threading.Lock()
        seed = layout.config.seed
        self._keys = {spec.label: derive_key(seed, "glands", spec.label) for spec in CLASS_SPECS}
        self._specs = {spec.label: spec for spec in CLASS_SPECS}

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dask.distributed: the cache and the lock stay behind.
        state = self.__dict__.copy()
        state["_cache"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def find(self, x0: float, y0: float, x1: float, y1: float) -> list[Primitive]:
        """Every primitive whose footprint may touch the µm rectangle ``[x0, x1] x [y0, y1]``.

        Ordered by class then grid cell (row-major), whatever the rectangle.
        """
        scale = self.layout.config.gland_spacing
        cells: list[tuple[int, int, int]] = []
        for spec in CLASS_SPECS:
            s, margin = spec.spacing_um * scale, spec.max_extent_um
            ix = range(math.floor((x0 - margin) / s), math.floor((x1 + margin) / s) + 1)
            iy = range(math.floor((y0 - margin) / s), math.floor((y1 + margin) / s) + 1)
            cells.extend((spec.label, i, j) for j in iy for i in ix)
        with self._lock:
            known = {c: self._cache[c] for c in cells if c in self._cache}
        missing = [c for c in cells if c not in known]
        if missing:
            found = self._evaluate(missing)
            known.update(found)
            with self._lock:
                if len(self._cache) + len(found) > self.max_sites:
                    self._cache.clear()
                self._cache.update(found)
        out: list[Primitive] = []
        for c in cells:
            prims, cx, cy, ext = known[c]
            if prims and cx + ext >= x0 and cx - ext <= x1 and cy + ext >= y0 and cy - ext <= y1:
                out.extend(prims)
        return out

    def _evaluate(self, cells: list[tuple[int, int, int]]) -> dict[tuple[int, int, int], _Entry]:
        """Outcome of grid sites (vectorised placement tests)."""
        scale = self.layout.config.gland_spacing
        layout = self.layout
        label = np.array([c[0] for c in cells], dtype=np.int64)
        gx = np.array([c[1] for c in cells], dtype=np.int64)
        gy = np.array([c[2] for c in cells], dtype=np.int64)
        u = np.empty((len(cells), _N_DRAWS))
        spacing = np.empty(len(cells))
        presence = np.empty(len(cells))
        for lab, spec in self._specs.items():
            m = label == lab
            if m.any():
                u[m] = uniforms(cell_hash(self._keys[lab], gx[m], gy[m]), _N_DRAWS)
                spacing[m] = spec.spacing_um * scale
                presence[m] = spec.presence
        cx = (gx + 0.3 + 0.4 * u[:, 1]) * spacing
        cy = (gy + 0.3 + 0.4 * u[:, 2]) * spacing
        result = dict.fromkeys(cells, _EMPTY)
        # 1. The centre must lie in tissue of the site's class.
        cand = np.flatnonzero(u[:, 0] < presence)
        if cand.size:
            ok = layout.region_points(cx[cand], cy[cand]) == label[cand]
            ok &= layout.tissue_points(cx[cand], cy[cand]) > layout.tissue_threshold + 0.02
            cand = cand[ok]
        if cand.size == 0:
            return result
        groups = []
        for k in cand:
            lab = int(label[k])
            key = derive_key(self._keys[lab], int(gx[k]), int(gy[k]))
            prims = _BUILDERS[lab](float(cx[k]), float(cy[k]), u[k, 3:], key)
            groups.append((k, tuple(prims), _group_extent(prims, float(cx[k]), float(cy[k]))))
        # 2. So must a ring around the whole footprint: glands never straddle a region
        #    boundary or hang over glass.
        idx = np.array([g[0] for g in groups])
        ring = np.array([g[2] for g in groups])[:, None] + 25.0
        px = cx[idx, None] + ring * np.cos(_ANGLES)
        py = cy[idx, None] + ring * np.sin(_ANGLES)
        same = layout.region_points(px, py).reshape(px.shape) == label[idx, None]
        tissue = layout.tissue_points(px, py).reshape(px.shape) > layout.tissue_threshold + 0.02
        for (k, members, ext), keep in zip(groups, np.all(same & tissue, axis=1), strict=True):
            if keep:
                result[cells[k]] = (members, float(cx[k]), float(cy[k]), ext)
        return result
