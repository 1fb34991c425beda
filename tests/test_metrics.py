"""Metrics on hand-made label maps: exact IoU values and the seam-consistency figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sgnet.metrics import ConfusionMatrix, SeamCounts, grid_borders, seam_counts


def test_confusion_iou_exact_values_and_ignore_label_zero():
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 0], [3, 3, 0, 0]])
    pred = np.array([[1, 2, 2, 2], [1, 1, 2, 3], [3, 1, 1, 1]])
    cm = ConfusionMatrix(4, ["a", "b", "c", "d"]).update(truth, pred)
    # labelled pixels: 9; correct: (1: 3) + (2: 3) + (3: 1) = 7
    assert cm.total == 9
    assert cm.pixel_accuracy() == pytest.approx(7 / 9)
    iou = cm.iou()
    # class a (label 1): TP 3, FP 1 (a 3 predicted as 1), FN 1 (a 1 predicted as 2) -> 3/5
    assert iou[0] == pytest.approx(3 / 5)
    # class b (label 2): TP 3, FP 1, FN 0 -> 3/4
    assert iou[1] == pytest.approx(3 / 4)
    # class c (label 3): TP 1, FP 0 (the 3 on an unlabelled pixel is ignored), FN 1 -> 1/2
    assert iou[2] == pytest.approx(1 / 2)
    # class d (label 4) is in neither ground truth nor prediction: nan, left out of the mean
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((3 / 5 + 3 / 4 + 1 / 2) / 3)
    summary = cm.to_dict()
    assert summary["iou"]["d"] is None and summary["pixels"] == 9


def test_confusion_streaming_equals_one_shot_and_prediction_zero_is_a_miss():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (64, 64))
    pred = rng.integers(0, 4, (64, 64))
    whole = ConfusionMatrix(3).update(truth, pred)
    parts = ConfusionMatrix(3)
    for rows in (slice(0, 10), slice(10, 40), slice(40, 64)):
        parts.update(truth[rows], pred[rows])
    np.testing.assert_array_equal(whole.matrix, parts.matrix)
    merged = ConfusionMatrix(3).update(truth[:32], pred[:32])
    merged.merge(ConfusionMatrix(3).update(truth[32:], pred[32:]))
    np.testing.assert_array_equal(whole.matrix, merged.matrix)
    # a prediction of 0 on a labelled pixel is a false negative only
    cm = ConfusionMatrix(2).update(np.array([1, 1, 2]), np.array([0, 1, 2]))
    assert cm.iou()[0] == pytest.approx(1 / 2) and cm.iou()[1] == pytest.approx(1.0)


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="label ids"):
        ConfusionMatrix(2).update(np.array([1, 3]), np.array([1, 1]))
    assert math.isnan(ConfusionMatrix(2).miou())


def test_grid_borders():
    np.testing.assert_array_equal(grid_borders(10, 4), [4, 8])
    np.testing.assert_array_equal(grid_borders(8, 4), [4])
    np.testing.assert_array_equal(grid_borders(10, 4, offset=2), [2, 6])


def test_seam_metric_constant_map_has_no_seams():
    counts = seam_counts(np.full((32, 32), 3), grid_borders(32, 8), grid_borders(32, 8))
    assert counts.border_rate == 0 and counts.interior_rate == 0
    assert counts.ratio == 1.0
    # pairs: 32 rows x 31 horizontal + 31 x 32 vertical; 3 border columns/rows
    assert counts.border_pairs == 2 * 3 * 32
    assert counts.border_pairs + counts.interior_pairs == 2 * 32 * 31


def test_seam_metric_detects_an_artificial_seam():
    # smooth content: a vertical stripe boundary at column 13 (not on the tile grid)
    labels = np.ones((32, 32), dtype=np.uint8)
    labels[:, 13:] = 2
    borders = grid_borders(32, 8)
    clean = seam_counts(labels, borders, borders)
    assert clean.border_diff == 0 and clean.interior_diff == 32
    # an artificial seam: the tile column [8, 16) predicted as class 3
    seamed = labels.copy()
    seamed[:, 8:16] = 3
    s = seam_counts(seamed, borders, borders)
    assert s.border_diff == 64  # both vertical borders of that tile column, on every row
    assert s.ratio > 5 and s.excess > 0
    # masked-out and unpredicted (0) pixels are never counted
    mask = np.zeros((32, 32), bool)
    mask[:, :8] = True
    masked = seam_counts(seamed, borders, borders, mask=mask)
    assert masked.border_pairs == 3 * 8 and masked.border_diff == 0  # the row borders only
    assert seam_counts(np.zeros((8, 8), int), [4], [4]) == SeamCounts()


def test_seam_counts_add_and_serialise():
    a = SeamCounts(10, 5, 100, 10)
    total = a + SeamCounts(10, 1, 100, 0)
    assert total.border_rate == pytest.approx(6 / 20)
    assert total.interior_rate == pytest.approx(10 / 200)
    assert total.ratio == pytest.approx(6.0)
    assert total.to_dict()["ratio"] == pytest.approx(6.0)
    assert SeamCounts(4, 1, 10, 0).ratio == math.inf
    assert math.isnan(SeamCounts().ratio)
