"""Gland and distractor placement: jittered site lattices, one per kind, cached by block.

A site's hash decides presence, jitter and shape; its size comes from the distance to the
nearest neighbouring site (so glands pack back to back without overlapping). A site becomes
shapes only when its centre and a ring around its whole footprint (plus a margin) lie in a
region of the lattice's code (and, for benign lobules and atrophy patches, on the right side
of their fields). Every decision depends on the site alone: any block of any level finds the
same shapes.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sgnet.synthetic._hash import cell_hash, derive_key, uniforms
from napari_sgnet.synthetic._noise import Octave, SmoothField
from napari_sgnet.synthetic.v2._builders import BUILDERS
from napari_sgnet.synthetic.v2._fields import smooth_points
from napari_sgnet.synthetic.v2._regions import BENIGN, CROWDED, STROMA, RegionMap
from napari_sgnet.synthetic.v2._shapes import Shape

__all__ = ["LATTICES", "Lattice", "ShapeIndex"]

_N_DRAWS = 64
_RING = np.linspace(0.0, 2.0 * np.pi, 10, endpoint=False)
_BLOCK_UM = 1200.0
#: Blocks of sites are skipped when a coarse sampling (every ``_TILE_UM / _TILE_SAMPLES``
#: µm, regions being >= 250 µm across) of the tiles around them finds no region of their code.
_TILE_UM, _TILE_SAMPLES = 1200.0, 48
#: Benign glands grow in lobules (where this field is high); atrophy fills patches of them.
LOBULE_THRESHOLD, ATROPHY_THRESHOLD = -0.15, 0.4
_LOBULE = (Octave.iso(650.0, 0), Octave.iso(240.0, 1))
_MIMIC = (Octave.iso(1100.0, 0), Octave.iso(420.0, 1))


@dataclass(frozen=True)
class Lattice:
    """A site lattice: builder name, region code, spacing and jitter (fraction of the
    spacing), presence probability, margin to the region outline and largest extent (µm),
    and the field condition (``""``, ``"benign"`` or ``"atrophy"``)."""

    name: str
    code: int
    spacing: float
    jitter: float
    presence: float
    margin: float
    max_extent: float
    condition: str = ""


LATTICES = (
    Lattice("benign", BENIGN, 270.0, 0.35, 0.95, 8.0, 260.0, "benign"),
    Lattice("atrophy", BENIGN, 68.0, 0.3, 0.85, 8.0, 60.0, "atrophy"),
    Lattice("crowded", CROWDED, 105.0, 0.3, 0.93, 10.0, 90.0),
    Lattice("gleason3", 3, 62.0, 0.5, 0.93, 8.0, 80.0),
    Lattice("gleason4", 4, 150.0, 0.3, 0.97, 10.0, 210.0),
    Lattice("gleason5", 5, 110.0, 0.3, 0.97, 8.0, 180.0),
    Lattice("distractor", STROMA, 420.0, 0.5, 1.0, 12.0, 260.0),
)

_Block = tuple[tuple[Shape, ...], np.ndarray]


class ShapeIndex:
    """Finds the shapes near a rectangle; caches each block of sites.

    Parameters
    ----------
    regions : RegionMap
        Where each lattice may place shapes.
    seed : int
        Slide seed.
    gland_spacing : float
        Multiplier of every lattice spacing.
    max_blocks : int
        Cache capacity (blocks); emptied when full.
    """

    def __init__(
        self, regions: RegionMap, seed: int, gland_spacing: float = 1.0, max_blocks: int = 4096
    ) -> None:
        self.regions = regions
        self.scale = gland_spacing
        self.max_blocks = max_blocks
        self._keys = [derive_key(seed, "v2-sites", lat.name) for lat in LATTICES]
        self.lobule = SmoothField(derive_key(seed, "v2-lobule"), _LOBULE, 30.0)
        self.mimic = SmoothField(derive_key(seed, "v2-mimic"), _MIMIC, 40.0)
        self._cache: dict[tuple[int, int, int], _Block] = {}
        self._tiles: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_tiles"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _geometry(self, lat: Lattice) -> tuple[float, int]:
        s = lat.spacing * (1.0 if lat.name == "distractor" else self.scale)
        return s, max(1, round(_BLOCK_UM / s))

    def find(self, x0: float, y0: float, x1: float, y1: float) -> list[Shape]:
        """Every shape whose footprint may touch the µm rectangle ``[x0, x1] x [y0, y1]``."""
        out: list[Shape] = []
        for li, lat in enumerate(LATTICES):
            s, n = self._geometry(lat)
            b = n * s
            m = lat.max_extent
            for by in range(math.floor((y0 - m) / b), math.floor((y1 + m) / b) + 1):
                for bx in range(math.floor((x0 - m) / b), math.floor((x1 + m) / b) + 1):
                    shapes, box = self._block(li, bx, by)
                    if not shapes:
                        continue
                    hit = (box[:, 0] <= x1) & (box[:, 1] >= x0)
                    hit &= (box[:, 2] <= y1) & (box[:, 3] >= y0)
                    out.extend(shapes[i] for i in np.flatnonzero(hit))
        return out

    def _block(self, li: int, bx: int, by: int) -> _Block:
        key = (li, bx, by)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        block = self._evaluate(li, bx, by)
        with self._lock:
            if len(self._cache) >= self.max_blocks:
                self._cache.clear()
            self._cache[key] = block
        return block

    def _codes_near(self, x0: float, y0: float, x1: float, y1: float) -> int:
        """Bit mask of the region codes found on a coarse sampling of tiles covering a box."""
        mask = 0
        t = _TILE_UM
        for ty in range(math.floor(y0 / t), math.floor(y1 / t) + 1):
            for tx in range(math.floor(x0 / t), math.floor(x1 / t) + 1):
                with self._lock:
                    m = self._tiles.get((tx, ty))
                if m is None:
                    xs = tx * t + np.arange(-1, _TILE_SAMPLES + 2) * (t / _TILE_SAMPLES)
                    ys = ty * t + np.arange(-1, _TILE_SAMPLES + 2) * (t / _TILE_SAMPLES)
                    codes, _ = self.regions.grid(xs, ys)
                    m = int(sum(1 << int(c) for c in np.unique(codes)))
                    with self._lock:
                        if len(self._tiles) >= 4 * self.max_blocks:
                            self._tiles.clear()
                        self._tiles[(tx, ty)] = m
                mask |= m
        return mask

    def _evaluate(self, li: int, bx: int, by: int) -> _Block:
        """The shapes of one block of sites (vectorised placement tests)."""
        lat = LATTICES[li]
        s, n = self._geometry(lat)
        b = n * s
        if not (self._codes_near(bx * b, by * b, (bx + 1) * b, (by + 1) * b) >> lat.code) & 1:
            return ((), np.zeros((0, 4)))
        ix = np.arange(bx * n - 1, bx * n + n + 1)
        iy = np.arange(by * n - 1, by * n + n + 1)
        gx, gy = np.meshgrid(ix, iy)
        u = uniforms(cell_hash(self._keys[li], gx, gy), _N_DRAWS)
        cx = (gx + 0.5 + lat.jitter * (u[..., 1] - 0.5)) * s
        cy = (gy + 0.5 + lat.jitter * (u[..., 2] - 0.5)) * s
        nn = np.full((n, n), np.inf)
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                if ox or oy:
                    d = np.hypot(
                        cx[1 + oy : 1 + oy + n, 1 + ox : 1 + ox + n] - cx[1:-1, 1:-1],
                        cy[1 + oy : 1 + oy + n, 1 + ox : 1 + ox + n] - cy[1:-1, 1:-1],
                    )
                    nn = np.minimum(nn, d)
        cx, cy, u = (
            cx[1:-1, 1:-1].ravel(),
            cy[1:-1, 1:-1].ravel(),
            u[1:-1, 1:-1].reshape(-1, _N_DRAWS),
        )
        room = 0.5 * nn.ravel()
        site = np.arange(cx.size)
        cand = np.flatnonzero(u[:, 0] < lat.presence)
        if cand.size:
            cand = cand[self.regions.points(cx[cand], cy[cand]) == lat.code]
        if cand.size and lat.condition:
            lob = smooth_points(self.lobule, cx[cand], cy[cand])
            mim = smooth_points(self.mimic, cx[cand], cy[cand])
            ok = lob > LOBULE_THRESHOLD
            ok &= (
                (mim > ATROPHY_THRESHOLD)
                if lat.condition == "atrophy"
                else (mim <= ATROPHY_THRESHOLD)
            )
            cand = cand[ok]
        empty: _Block = ((), np.zeros((0, 4)))
        if cand.size == 0:
            return empty
        build = BUILDERS[lat.name]
        groups: list[tuple[int, list[Shape], float]] = []
        for k in cand:
            key = derive_key(self._keys[li], int(site[k]), bx, by)
            shapes = build(float(cx[k]), float(cy[k]), float(room[k]), u[k, 3:], key)
            if not shapes:
                continue
            ext = max(math.hypot(p.cx - cx[k], p.cy - cy[k]) + p.extent for p in shapes)
            if ext <= lat.max_extent:
                groups.append((int(k), shapes, ext))
        if not groups:
            return empty
        idx = np.array([g[0] for g in groups])
        ring = np.array([g[2] for g in groups])[:, None] + lat.margin
        px = cx[idx, None] + ring * np.cos(_RING)
        py = cy[idx, None] + ring * np.sin(_RING)
        ok = np.all(self.regions.points(px, py).reshape(px.shape) == lat.code, axis=1)
        if lat.condition == "benign":
            ok &= np.all(
                smooth_points(self.mimic, px, py).reshape(px.shape) <= ATROPHY_THRESHOLD, axis=1
            )
        shapes_out: list[Shape] = []
        boxes = []
        for (_, shapes, _), keep in zip(groups, ok, strict=True):
            if keep:
                for p in shapes:
                    e = p.extent
                    shapes_out.append(p)
                    boxes.append((p.cx - e, p.cx + e, p.cy - e, p.cy + e))
        if not shapes_out:
            return empty
        return tuple(shapes_out), np.array(boxes)
