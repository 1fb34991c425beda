"""Corrected regions and their train / held-out split, by region, without leakage.

A *region* is the unit of the split: one connected component of a slide's corrected pixels
(8-connectivity), cut along a grid of ``block x block`` pixels when it is larger than one
block, so that one large correction still yields several units. Everything is in the pixels of
the model's working level.

The split is a pure function of the regions and a seed: regions are put in a canonical order
(source, then top-left corner, then size), permuted with ``numpy.random.default_rng(seed)``,
and the first ``round(fraction * n)`` (at least one, at most ``n - 1``) are held out.

Leakage rule (enforced by the samplers, checked by :func:`overlaps_any`): no training local
patch and no training surrounding patch may intersect the bounding box of a held-out region
of the same slide; held-out pixels never carry a label in training.

Pure numpy; no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_sgnet.geometry import Box

__all__ = [
    "Region",
    "Split",
    "class_counts",
    "merge_boxes",
    "overlaps_any",
    "regions_from_mask",
    "split_regions",
]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True, eq=False)
class Region:
    """One split unit: corrected pixels of one slide inside a bounding box.

    Parameters
    ----------
    source : int
        Index of the correction source (store or patch folder) it comes from.
    box : Box
        Bounding box in working-level pixels.
    labels : numpy.ndarray
        ``(box.h, box.w)`` uint8 label ids; 0 outside the region's pixels.
    group : str
        Leakage group: regions of the same group (the same slide) exclude each other.
    items : tuple of int
        Patch-folder entry indices (patch regions only); their local masks are stacked
        vertically in ``labels`` (for counting), and ``box`` is the hull of their local boxes.
    """

    source: int
    box: Box
    labels: np.ndarray = field(repr=False)
    group: str = ""
    items: tuple[int, ...] = ()

    @property
    def pixels(self) -> int:
        """Number of labelled pixels."""
        return int(np.count_nonzero(self.labels))

    @property
    def key(self) -> tuple[int, int, int, int, int, int]:
        """Canonical order: source, top, left, height, width, first item."""
        b = self.box
        return (self.source, b.y, b.x, b.h, b.w, self.items[0] if self.items else -1)


def merge_boxes(boxes: Iterable[Box], gap: int = 0) -> list[Box]:
    """Merge boxes that overlap or lie within ``gap`` pixels of each other into their hulls.

    Returns the merged boxes sorted by ``(y, x)``; the result has no two boxes within ``gap``.
    """
    out = [b for b in boxes if not b.is_empty]
    changed = True
    while changed:
        changed = False
        merged: list[Box] = []
        for box in out:
            for i, m in enumerate(merged):
                grown = Box(m.x - gap, m.y - gap, m.w + 2 * gap, m.h + 2 * gap)
                if not grown.intersect(box).is_empty or _touching(grown, box):
                    merged[i] = Box.from_bounds(
                        min(m.x, box.x), min(m.y, box.y), max(m.x1, box.x1), max(m.y1, box.y1)
                    )
                    changed = True
                    break
            else:
                merged.append(box)
        out = merged
    return sorted(out, key=lambda b: (b.y, b.x, b.h, b.w))


def _touching(a: Box, b: Box) -> bool:
    """True when two boxes share an edge or corner (8-adjacent pixels)."""
    return a.x <= b.x1 and b.x <= a.x1 and a.y <= b.y1 and b.y <= a.y1


def regions_from_mask(
    labels: np.ndarray,
    origin: Box,
    block: int,
    source: int,
    group: str = "",
    min_pixels: int = 1,
) -> list[Region]:
    """Split the labelled pixels of a crop into regions.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(origin.h, origin.w)`` uint8 corrected label ids (0 = not corrected).
    origin : Box
        Where the crop lies, in working-level pixels.
    block : int
        Side of the grid (anchored at the level's ``(0, 0)``) that cuts large components.
    source : int
        Source index recorded in each region.
    group : str
        Leakage group recorded in each region.
    min_pixels : int
        Regions with fewer labelled pixels are dropped (brush specks).

    Returns
    -------
    list of Region
        In canonical order.
    """
    if labels.shape != (origin.h, origin.w):
        raise ValueError(f"labels {labels.shape} do not match box {origin.as_tuple()}")
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    comp, n = ndimage.label(labels > 0, structure=_EIGHT)
    if n == 0:
        return []
    ys, xs = np.nonzero(comp)
    cid = comp[ys, xs].astype(np.int64)
    by = (ys + origin.y) // block
    bx = (xs + origin.x) // block
    # One unit per (component, block) pair.
    keys = np.stack([cid, by, bx], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    regions = []
    for u in range(len(uniq)):
        idx = order[bounds[u] : bounds[u + 1]]
        if idx.size < min_pixels:
            continue
        y, x = ys[idx], xs[idx]
        y0, x0, y1, x1 = int(y.min()), int(x.min()), int(y.max()) + 1, int(x.max()) + 1
        crop = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        crop[y - y0, x - x0] = labels[y, x]
        box = Box.from_bounds(origin.x + x0, origin.y + y0, origin.x + x1, origin.y + y1)
        regions.append(Region(source, box, crop, group))
    return sorted(regions, key=lambda r: r.key)


@dataclass(frozen=True)
class Split:
    """A train / held-out partition of regions (both in canonical order)."""

    train: tuple[Region, ...]
    held_out: tuple[Region, ...]
    seed: int

    def exclusions(self, group: str) -> list[Box]:
        """Bounding boxes of the held-out regions of one leakage group."""
        return [r.box for r in self.held_out if r.group == group]

    def summary(self) -> dict[str, int | list[int]]:
        """Counts for reports and lineage."""
        return {
            "seed": self.seed,
            "train_regions": len(self.train),
            "held_out_regions": len(self.held_out),
            "train_pixels": sum(r.pixels for r in self.train),
            "held_out_pixels": sum(r.pixels for r in self.held_out),
        }


def split_regions(regions: Sequence[Region], fraction: float, seed: int) -> Split:
    """Deterministically hold out a fraction of the regions.

    Parameters
    ----------
    regions : sequence of Region
        At least two.
    fraction : float
        Share of regions held out, in ``(0, 1)``; at least one region is held out and at least
        one is kept for training.
    seed : int
        Seed of the permutation.

    Raises
    ------
    ValueError
        With fewer than two regions or a fraction outside ``(0, 1)``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must lie in (0, 1), got {fraction}")
    ordered = sorted(regions, key=lambda r: r.key)
    n = len(ordered)
    if n < 2:
        raise ValueError(f"need at least 2 corrected regions to hold one out, got {n}")
    n_hold = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    held = sorted(perm[:n_hold].tolist())
    held_set = set(held)
    return Split(
        train=tuple(r for i, r in enumerate(ordered) if i not in held_set),
        held_out=tuple(ordered[i] for i in held),
        seed=int(seed),
    )


def overlaps_any(box: Box, boxes: Iterable[Box]) -> bool:
    """True when ``box`` shares at least one pixel with any of ``boxes``."""
    return any(not box.intersect(b).is_empty for b in boxes)


def class_counts(regions: Iterable[Region], num_classes: int) -> np.ndarray:
    """Labelled pixels per label id ``0..num_classes`` over some regions."""
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for r in regions:
        counts += np.bincount(r.labels.ravel(), minlength=num_classes + 1)[: num_classes + 1]
    return counts
