"""Boundary F-score (napari_sgnet.metrics.boundary_f): the properties evaluate relies on."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet.metrics import BoundaryScore, boundary_f, class_boundaries


def _blobs(shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """Label 1 background with a square of 2 and a disc of 3."""
    lab = np.ones(shape, dtype=np.uint8)
    lab[20:50, 15:45] = 2
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab[(yy - 65) ** 2 + (xx - 65) ** 2 < 15**2] = 3
    return lab


def _shift(lab: np.ndarray, dx: int) -> np.ndarray:
    out = np.ones_like(lab)
    out[:, dx:] = lab[:, : lab.shape[1] - dx]
    return out


def test_truth_against_itself_scores_one():
    lab = _blobs()
    s = boundary_f(lab, lab, tolerance=4)
    assert s.truth_pixels > 0 and s.f1 == s.precision == s.recall == 1.0


def test_shift_within_tolerance_keeps_one_beyond_it_drops():
    lab = _blobs()
    assert boundary_f(lab, _shift(lab, 3), tolerance=4).f1 == 1.0
    far = boundary_f(lab, _shift(lab, 12), tolerance=4)
    assert far.f1 < 0.5 and far.precision < 1 and far.recall < 1
    # a larger tolerance takes the same shift back to 1
    assert boundary_f(lab, _shift(lab, 12), tolerance=14).f1 == 1.0


def test_maps_without_boundaries():
    flat = np.full((32, 32), 2, dtype=np.uint8)
    assert boundary_f(flat, flat, tolerance=4).f1 == 1.0  # both empty -> 1
    halves = flat.copy()
    halves[:, 16:] = 3
    for truth, pred in ((flat, halves), (halves, flat)):  # one empty -> 0
        s = boundary_f(truth, pred, tolerance=4)
        assert s.f1 == s.precision == s.recall == 0.0


def test_boundaries_only_inside_the_mask_and_counts_add():
    lab = np.ones((8, 8), dtype=np.uint8)
    lab[:, 4:] = 2
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4] = True
    b = class_boundaries(lab, mask)
    assert b[:4, 3:5].all() and b.sum() == 8  # both sides of the edge, top half only
    assert not class_boundaries(lab, lab == 1).any()  # the mask edge is no class boundary
    s = boundary_f(lab, lab, 1, mask=mask)
    assert s + s == BoundaryScore(16, 16, 16, 16)
    with pytest.raises(ValueError):
        boundary_f(lab, lab[:4], 1)
