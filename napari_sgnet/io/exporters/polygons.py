"""Exact pixel-boundary polygons of label regions, traced block by block.

Each class region is outlined along pixel edges, so the polygons are rectilinear and
rasterising them back (pixel centres, even-odd) reproduces the label map exactly.

Method: every block (read with a one-pixel halo) contributes the directed boundary
edges of its own pixels: horizontal edges merged into runs, vertical edges kept per
row. Edges are oriented with the region on their right (in image coordinates, y
down), so an outer ring has positive shoelace area and a hole negative; with that
orientation GeoJSON's right-hand rule holds. Edges are linked into rings globally
(so regions crossing block borders need no merging pass), taking the right turn at
a vertex where two regions touch diagonally: regions are 4-connected, holes
8-connected. A ring that then passes one vertex twice (a C-shaped region whose ends
touch diagonally, a hole pinched at a corner) is cut there into simple rings (see
:func:`_split_pinches`), so every polygon is valid by OGC/JTS rules: no ring touches
itself, holes touch their shell or each other at single points only. A hole belongs
to the region of the pixel just left of its leftmost edge; that pixel's row run
starts at a left edge of some ring of the same region (the outer ring, or a hole
further left), which identifies the owner without any point-in-polygon test. Memory
is proportional to the boundary length, not the area.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from napari_sgnet.geometry import Box

__all__ = ["BoundaryTracer", "Polygon", "mask_polygons", "polygon_area2", "polygon_runs"]

#: A polygon: ``[exterior, *holes]``, each ring an ``(n, 2)`` int64 array of ``(x, y)``
#: pixel-corner vertices, not closed (the first vertex is not repeated).
Polygon = list[np.ndarray]

# Directions in image coordinates (y down). Turning right is ``d + 1``.
E, S, W, N = 0, 1, 2, 3
_DX = np.array([1, 0, -1, 0], dtype=np.int64)
_DY = np.array([0, 1, 0, -1], dtype=np.int64)


@dataclass
class _Edges:
    """Boundary pieces of one label: horizontal runs and vertical unit edges."""

    hy: list[np.ndarray] = field(default_factory=list)  # line y
    hx0: list[np.ndarray] = field(default_factory=list)  # run covers x0 .. x1
    hx1: list[np.ndarray] = field(default_factory=list)
    hd: list[np.ndarray] = field(default_factory=list)  # E (top edges) or W (bottom edges)
    vx: list[np.ndarray] = field(default_factory=list)  # line x
    vy: list[np.ndarray] = field(default_factory=list)  # pixel row
    vd: list[np.ndarray] = field(default_factory=list)  # N (left edges) or S (right edges)


def _runs(mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row-wise runs of True pixels of one label: ``(row, first col, last col + 1, label)``."""
    r, c = np.nonzero(mask)
    v = values[r, c]
    if r.size == 0:
        return r, c, c, v
    start = np.ones(r.size, dtype=bool)
    start[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1] + 1) | (v[1:] != v[:-1])
    first = np.flatnonzero(start)
    last = np.append(first[1:], r.size) - 1
    return r[first], c[first], c[last] + 1, v[first]


def _by_label(values: np.ndarray, *columns: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Split parallel arrays by label value (each group keeps its original order)."""
    order = np.argsort(values, kind="stable")
    labels, starts = np.unique(values[order], return_index=True)
    bounds = [*starts.tolist(), values.size]
    return {
        int(v): [col[order[bounds[i] : bounds[i + 1]]] for col in columns]
        for i, v in enumerate(labels.tolist())
    }


class BoundaryTracer:
    """Collect boundary edges block by block, then trace each label's polygons.

    Parameters
    ----------
    width, height : int
        Size of the label image being traced.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = int(width)
        self.height = int(height)
        self._edges: dict[int, _Edges] = {}

    @property
    def labels(self) -> list[int]:
        """Label ids seen so far, ascending."""
        return sorted(self._edges)

    def add_block(self, labels: np.ndarray, box: Box, skip: Collection[int] = ()) -> None:
        """Add the boundary edges of the pixels in ``box``.

        Parameters
        ----------
        labels : numpy.ndarray
            ``(box.h + 2, box.w + 2)`` labels of ``box`` grown by one pixel on every side
            (0 past the image edge).
        box : Box
            The block, in the traced image's pixels.
        skip : collection of int
            Label ids not to trace (0, "no label", is never traced).
        """
        if labels.shape != (box.h + 2, box.w + 2):
            raise ValueError(f"block of {labels.shape} does not match box {box} with halo")
        inner = labels[1:-1, 1:-1]
        traced = np.ones(256, dtype=bool)
        traced[[0, *skip]] = False
        own = traced[inner]
        # An edge of pixel p's label lies where the neighbour across it has another label.
        for neighbour, direction, dy in ((labels[:-2, 1:-1], E, 0), (labels[2:, 1:-1], W, 1)):
            r, x0, x1, v = _runs(own & (inner != neighbour), inner)
            for value, (rr, a0, a1) in _by_label(v, r, x0, x1).items():
                edges = self._edges.setdefault(value, _Edges())
                edges.hy.append(rr.astype(np.int64) + box.y + dy)
                edges.hx0.append(a0.astype(np.int64) + box.x)
                edges.hx1.append(a1.astype(np.int64) + box.x)
                edges.hd.append(np.full(rr.size, direction, dtype=np.int8))
        for neighbour, direction, dx in ((labels[1:-1, :-2], N, 0), (labels[1:-1, 2:], S, 1)):
            r, c = np.nonzero(own & (inner != neighbour))
            for value, (rr, cc) in _by_label(inner[r, c], r, c).items():
                edges = self._edges.setdefault(value, _Edges())
                edges.vx.append(cc.astype(np.int64) + box.x + dx)
                edges.vy.append(rr.astype(np.int64) + box.y)
                edges.vd.append(np.full(rr.size, direction, dtype=np.int8))

    def polygons(self, label: int) -> list[Polygon]:
        """Trace and return the polygons of ``label`` (its edges are released)."""
        edges = self._edges.pop(int(label), None)
        if edges is None:
            return []
        return _trace(edges, self.width + 1)


def _segments(e: _Edges) -> tuple[np.ndarray, ...]:
    """Start/end vertices and directions of all segments (horizontal runs first)."""
    hy, hx0, hx1 = (np.concatenate(a) for a in (e.hy, e.hx0, e.hx1))
    hd = np.concatenate(e.hd).astype(np.int64)
    vx, vy = np.concatenate(e.vx), np.concatenate(e.vy)
    vd = np.concatenate(e.vd).astype(np.int64)
    east = hd == E
    sx = np.concatenate([np.where(east, hx0, hx1), vx])
    ex = np.concatenate([np.where(east, hx1, hx0), vx])
    north = vd == N
    sy = np.concatenate([hy, np.where(north, vy + 1, vy)])
    ey = np.concatenate([hy, np.where(north, vy, vy + 1)])
    return sx, sy, ex, ey, np.concatenate([hd, vd])


def _link(
    sx: np.ndarray, sy: np.ndarray, ex: np.ndarray, ey: np.ndarray, d: np.ndarray, wp: int
) -> np.ndarray:
    """``next[i]``: the segment that continues segment ``i`` (right turn first)."""
    key = (sy * wp + sx) * 4 + d
    order = np.argsort(key, kind="stable")
    skey = key[order]
    base = (ey * wp + ex) * 4
    nxt = np.full(d.size, -1, dtype=np.int64)
    for turn in (1, 0, 3):  # right, straight (a run split at a block border), left
        want = base + (d + turn) % 4
        pos = np.minimum(np.searchsorted(skey, want), skey.size - 1)
        hit = (skey[pos] == want) & (nxt < 0)
        nxt[hit] = order[pos[hit]]
    if (nxt < 0).any():
        raise RuntimeError("internal error: an open boundary was traced")
    return nxt


def _cycles(nxt: np.ndarray) -> tuple[int, np.ndarray]:
    """Number of cycles of the permutation ``nxt`` and the cycle of each element."""
    n = nxt.size
    graph = csr_matrix((np.ones(n, dtype=np.int8), (np.arange(n), nxt)), shape=(n, n))
    n_rings, ring = connected_components(graph, directed=True, connection="weak")
    return int(n_rings), ring


def _split_pinches(nxt: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Cut rings that touch themselves at a vertex into simple rings.

    With the right-turn rule a vertex where two pixels of the label touch diagonally
    starts two segments. When both lie on one ring, that ring passes the vertex twice,
    which OGC/JTS validity forbids ("Ring Self-intersection"). Exchanging the successors
    of the two segments arriving there (a transposition within one cycle) cuts the cycle
    into two rings that each pass the vertex once: a C-shaped outline becomes an outer
    ring plus a hole touching it at that point, a pinched hole two holes touching at a
    point. Pinch points of one ring never interleave (the region is 4-connected, its
    interior connected), so all of them can be cut at once. Pinches between two
    different rings (regions or holes touching at a corner) are valid and kept.

    Parameters
    ----------
    nxt : numpy.ndarray
        Successor of each segment (from :func:`_link`).
    start : numpy.ndarray
        Key of each segment's start vertex.

    Returns
    -------
    numpy.ndarray
        The successors with every self-touching ring cut (``nxt`` is modified in place).
    """
    order = np.argsort(start, kind="stable")
    same = start[order[1:]] == start[order[:-1]]
    if not same.any():
        return nxt
    a, b = order[:-1][same], order[1:][same]
    _, ring = _cycles(nxt)
    own = ring[a] == ring[b]
    a, b = a[own], b[own]
    pred = np.empty_like(nxt)
    pred[nxt] = np.arange(nxt.size)
    pa, pb = pred[a], pred[b]
    nxt[pa], nxt[pb] = b, a
    return nxt


def _walk(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order segments ring by ring, vectorised.

    Rings are the cycles of the permutation ``nxt`` (found as connected components);
    each ring starts at one of its segments, and positions along it come from
    list ranking by pointer jumping (``log2`` of the longest ring rounds).

    Returns
    -------
    order : numpy.ndarray
        Segment indices, ring after ring, each ring in traversal order.
    starts : numpy.ndarray
        Start of each ring in ``order``, plus a final sentinel.
    ring : numpy.ndarray
        Ring index of each segment.
    """
    n = nxt.size
    n_rings, ring = _cycles(nxt)
    sizes = np.bincount(ring, minlength=n_rings)
    head = np.empty(n_rings, dtype=np.int64)
    head[ring] = np.arange(n)  # any one segment of each ring
    pred = np.empty(n, dtype=np.int64)
    pred[nxt] = np.arange(n)
    tail = pred[head]
    step = nxt.copy()
    step[tail] = tail
    dist = np.ones(n, dtype=np.int64)
    dist[tail] = 0
    for _ in range(int(sizes.max()).bit_length()):
        dist = dist + dist[step]
        step = step[step]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    order = np.empty(n, dtype=np.int64)
    order[starts[ring] + sizes[ring] - 1 - dist] = np.arange(n)
    return order, starts, ring.astype(np.int64)


def _trace(e: _Edges, wp: int) -> list[Polygon]:
    sx, sy, ex, ey, d = _segments(e)
    if d.size == 0:
        return []
    nxt = _split_pinches(_link(sx, sy, ex, ey, d, wp), sy * wp + sx)
    order, starts, ring_of = _walk(nxt)
    n_rings = starts.size - 1
    ring_at = ring_of[order]  # ring of each ordered position (ascending)
    area2 = np.add.reduceat((sx * ey - ex * sy)[order], starts[:-1])
    is_hole = area2 < 0

    # Vertices: segment starts where the direction changes (drops block-border joints).
    prev = np.arange(order.size) - 1
    prev[starts[:-1]] = starts[1:] - 1
    keep = d[order] != d[order[prev]]
    kx, ky, kring = sx[order][keep], sy[order][keep], ring_at[keep]
    bounds = np.searchsorted(kring, np.arange(n_rings + 1))

    owner = np.arange(n_rings)
    holes = np.flatnonzero(is_hole)
    if holes.size:
        owner[holes] = _hole_parents(sx, sy, d, ring_of, holes, wp)
        while is_hole[owner].any():
            owner = np.where(is_hole[owner], owner[owner], owner)

    ring_xy, first = _canonical_rings(kx, ky, bounds, wp)
    by_owner: dict[int, list[int]] = {}
    for h in holes[np.argsort(first[holes], kind="stable")]:
        by_owner.setdefault(int(owner[h]), []).append(int(h))
    exteriors = np.flatnonzero(~is_hole)
    return [
        [ring_xy[r], *(ring_xy[h] for h in by_owner.get(int(r), []))]
        for r in exteriors[np.argsort(first[exteriors], kind="stable")]
    ]


def _canonical_rings(
    kx: np.ndarray, ky: np.ndarray, bounds: np.ndarray, wp: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Split vertices into rings, each rotated to start at its top-left vertex.

    The output then does not depend on how the image was cut into blocks. Returns the
    rings and each ring's start key (``y * wp + x``) for sorting.
    """
    key = ky * wp + kx
    lengths = np.diff(bounds)
    ring = np.repeat(np.arange(lengths.size), lengths)
    least = np.minimum.reduceat(key, bounds[:-1]) if key.size else key
    # The top-left vertex of a ring is never a pinch point, so it occurs once per ring.
    shift = np.flatnonzero(key == least[ring]) - bounds[:-1]
    local = np.arange(key.size) - bounds[:-1][ring]
    dest = bounds[:-1][ring] + (local - shift[ring]) % lengths[ring]
    xy = np.empty((key.size, 2), dtype=np.int64)
    xy[dest, 0], xy[dest, 1] = kx, ky
    return np.split(xy, bounds[1:-1]), least


def _hole_parents(
    sx: np.ndarray, sy: np.ndarray, d: np.ndarray, ring_of: np.ndarray, holes: np.ndarray, wp: int
) -> np.ndarray:
    """For each hole ring (ascending ids), the ring bounding the row run just left of it."""
    # A hole's leftmost edges go south; the pixel (row sy, col sx - 1) is left of them.
    south = np.flatnonzero((d == S) & np.isin(ring_of, holes))
    pick = np.lexsort((sx[south], ring_of[south]))
    south = south[pick]
    first = np.ones(south.size, dtype=bool)
    first[1:] = ring_of[south][1:] != ring_of[south][:-1]
    south = south[first]
    if not np.array_equal(ring_of[south], holes):
        raise RuntimeError("internal error: a hole without a leftmost edge")
    query = sy[south] * wp + (sx[south] - 1)
    # Left (north-going) edges, keyed by the row and column of the pixel on their right.
    north = np.flatnonzero(d == N)
    nkey = (sy[north] - 1) * wp + sx[north]
    o = np.argsort(nkey, kind="stable")
    idx = np.searchsorted(nkey[o], query, side="right") - 1
    return ring_of[north[o[idx]]]


def polygon_area2(polygon: Polygon) -> int:
    """Twice the area of a polygon (exterior minus holes), in squared pixels."""
    total = 0
    for ring in polygon:
        x, y = ring[:, 0], ring[:, 1]
        total += int(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    return total


def polygon_runs(polygons: list[Polygon]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row runs of the pixels inside ``polygons`` (even-odd over all their rings).

    Parameters
    ----------
    polygons : list of Polygon
        Non-overlapping rectilinear polygons on the pixel grid (as traced here).

    Returns
    -------
    rows, x0, x1 : numpy.ndarray
        Pixels ``x0 <= x < x1`` of row ``rows`` are inside; sorted by row, then x.
    """
    rings = [ring for poly in polygons for ring in poly]
    if not rings:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    p = np.concatenate(rings)
    q = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    vertical = p[:, 0] == q[:, 0]
    x = p[vertical, 0]
    y0 = np.minimum(p[vertical, 1], q[vertical, 1])
    n = np.abs(p[vertical, 1] - q[vertical, 1])
    rows = np.repeat(y0, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    xs = np.repeat(x, n)
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    return rows[0::2], xs[0::2], xs[1::2]


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """Exact polygons of the True pixels of a 2-D mask (one block, for small images)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    tracer = BoundaryTracer(w, h)
    padded = np.zeros((h + 2, w + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask
    tracer.add_block(padded, Box(0, 0, w, h))
    return tracer.polygons(1)
