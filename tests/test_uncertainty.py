"""``next_uncertain_region`` on a small store with known confidences."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.uncertainty import ConfidenceSummary, default_level, next_uncertain_region
from napari_sgnet.palette import GLEASON

H, W = 400, 600
R = 128  # region side: 5 x 4 regions, the last column and row clipped (88 x 16 px)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LabelStore:
    slide = Pyramid((da.zeros((H, W, 3), dtype=np.uint8, chunks=256),), (1.0,), name="s")
    path = Path(tmp_path_factory.mktemp("u")) / "s.sgnet.zarr"
    s = LabelStore.create(path, slide=slide, palette=GLEASON, tile=64)
    labels = np.ones((H, W), dtype=np.uint8)
    conf = np.full((H, W), 200, dtype=np.uint8)
    labels[:, 384:512] = 0  # region column 3 was never predicted (glass)
    conf[:, 384:512] = 0
    conf[128:256, 256:384] = 50  # region (row 1, col 2): the least confident
    conf[256:384, 0:128] = 90  # region (row 2, col 0): next
    # Region (row 0, col 1): half predicted at 60, half never predicted -> mean 60.
    conf[0:128, 128:192], labels[0:128, 128:192] = 0, 0
    conf[0:128, 192:256] = 60
    s.write_tile(Box(0, 0, W, H), labels, conf)
    return s


def test_picks_lowest_confidence_and_skips_reviewed(store: LabelStore):
    first = next_uncertain_region(store, None, R)
    assert first == Box(256, 128, R, R)
    second = next_uncertain_region(store, [first], R)
    assert second == Box(128, 0, R, R)  # mean over its predicted pixels only
    third = next_uncertain_region(store, [first, second], R)
    assert third == Box(0, 256, R, R)
    # Ties (all 200) go in row-major order; edge regions are clipped to the store.
    fourth = next_uncertain_region(store, [first, second, third], R)
    assert fourth == Box(0, 0, R, R)


def test_walks_every_predicted_region_once_then_none(store: LabelStore):
    reviewed: list[Box] = []
    while (box := next_uncertain_region(store, reviewed, R)) is not None:
        assert box not in reviewed
        reviewed.append(box)
    assert len(reviewed) == 4 * 4  # 5 x 4 regions minus the never-predicted column
    assert all(box.x != 384 for box in reviewed)
    assert Box(512, 384, 88, 16) in reviewed


def test_reviewed_boxes_need_not_be_regions(store: LabelStore):
    viewport = Box(200, 100, 300, 120)  # covers the centres of regions (row 1, cols 2-3)
    assert next_uncertain_region(store, [viewport], R) == Box(128, 0, R, R)


def test_summary_matches_brute_force_and_levels_agree(store: LabelStore):
    conf = store.read_confidence(Box(0, 0, W, H)).astype(np.int64)
    for level in (0, 3, default_level(R)):
        s = ConfidenceSummary.from_store(store, level)
        sums, counts = s.region_grid(R)
        for iy in range(sums.shape[0]):
            for ix in range(sums.shape[1]):
                block = conf[iy * R : (iy + 1) * R, ix * R : (ix + 1) * R]
                assert sums[iy, ix] == block.sum() and counts[iy, ix] == (block > 0).sum()
        assert next_uncertain_region(store, None, R, level=level) == Box(256, 128, R, R)


def test_default_level_and_bad_input():
    assert default_level(128) == 5 and default_level(1000) == 3 and default_level(3) == 0
    with pytest.raises(ValueError):
        default_level(0)


def test_empty_store_has_nothing_to_review(tmp_path: Path):
    slide = Pyramid((da.zeros((100, 100, 3), dtype=np.uint8, chunks=64),), (1.0,), name="e")
    s = LabelStore.create(tmp_path / "e.zarr", slide=slide, palette=GLEASON, tile=64)
    assert next_uncertain_region(s, [], 32) is None
