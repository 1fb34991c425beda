"""The review queue, the eraser's meanings, palette-only commits and commit undo (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet.app.review import (
    ERASER_BACKGROUND,
    ERASER_UNLABELLED,
    OutOfPaletteError,
    ReviewError,
    ReviewSession,
)
from napari_sgnet.app.review_queue import rank_regions, region_side
from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.labelstore.history import HISTORY_DEPTH

MPP = 0.5  # slide µm/px; the store's level 0 is at 1 µm/px (base_downsample 2)
SIDE = 32  # region side in store pixels for region_um=32


def _store(tmp_path):
    slide = pattern_slide(256, 192, mpp=MPP, levels=2, name="q")
    store = LabelStore.create(tmp_path / "q.sgnet.zarr", slide=slide,
                              palette=PixelRulePredictor().info.palette, base_downsample=2.0,
                              tile=32)
    return slide, store  # level 0: 128 x 96 store pixels = 4 x 3 regions of 32 µm


def _predict(store, box, label, conf):
    store.write_tile(box, np.full((box.h, box.w), label, np.uint8),
                     np.full((box.h, box.w), conf, np.uint8))
    store.update_pyramid(box)
    store.mark_done([(box.y // store.tile, box.x // store.tile)])


def _arrays(store):
    whole = Box(0, 0, store.width, store.height)
    return (store.read_labels(whole), store.read_confidence(whole), store.read_edited(whole),
            store.done_map(), [store.read_labels(Box(0, 0, *s[::-1]), k)
                               for k, s in enumerate(store.level_shapes)])


def _equal(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, list):
            assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y)


def test_queue_order_score_skips_and_no_repeats(tmp_path):
    _slide, store = _store(tmp_path)
    assert region_side(store, 32.0) == SIDE
    # three predicted regions with known confidence; one region mostly unpredicted
    _predict(store, Box(0, 0, 32, 32), 2, 230)     # sure: score 25/255
    _predict(store, Box(32, 0, 32, 32), 3, 100)    # least sure: 155/255
    _predict(store, Box(64, 32, 32, 32), 1, 180)   # 75/255
    store.write_tile(Box(96, 64, 4, 4), np.full((4, 4), 4, np.uint8),
                     np.full((4, 4), 1, np.uint8))  # 1.6 % of a region: skipped however doubtful
    queue = rank_regions(store, region_um=32.0)
    assert [r.box for r in queue] == [Box(32, 0, 32, 32), Box(64, 32, 32, 32), Box(0, 0, 32, 32)]
    assert [round(r.score * 255) for r in queue] == [155, 75, 25]
    assert queue[0].predicted == 1.0
    # position and size in µm: 1 µm per store pixel here
    assert queue[0].describe() == "32 x 32 µm centred at (48, 16) µm"
    # reviewed regions are skipped: following the queue visits each region once, then stops
    seen, reviewed = [], []
    while (left := rank_regions(store, reviewed, region_um=32.0)):
        seen.append(left[0].box)
        reviewed.append(left[0].box)
    assert seen == [r.box for r in queue] and len(set(seen)) == len(seen)


def test_palette_only_commit_is_refused_with_class_and_place(tmp_path):
    slide, store = _store(tmp_path)
    _predict(store, Box(0, 0, 32, 32), 2, 200)
    session = ReviewSession(slide, store)
    before = _arrays(store)
    edit = session.start_edit(Box(0, 0, 32, 32))
    edit.labels[5:9, 10:14] = 6  # napari's "new label" past the palette's 5 classes
    with pytest.raises(OutOfPaletteError) as info:
        session.commit()
    message = str(info.value)
    assert "label 6 (16 pixels)" in message and "label pixel (10, 5)" in message
    assert ("10 x 5 µm" in message and "Gleason 5" in message) or "5 " in message
    _equal(_arrays(store), before)  # nothing written
    assert session.edit is not None and store.commits == []
    with pytest.raises(ValueError, match="label id 6"):  # the store refuses it too
        store.commit_edit(Box(0, 0, 4, 4), np.full((4, 4), 6, np.uint8))


def test_eraser_unlabelled_background_and_undo(tmp_path):
    slide, store = _store(tmp_path)
    for x in (0, 32, 64, 96):
        for y in (0, 32, 64):
            _predict(store, Box(x, y, 32, 32), 2, 200)
    session = ReviewSession(slide, store)
    session.region_um = 32.0
    snapshots = [_arrays(store)]

    # "background": erased pixels become class 1, edited
    edit = session.start_edit(Box(0, 0, 40, 40))
    edit.labels[0:4, 0:4] = 0
    session.commit(eraser=ERASER_BACKGROUND)
    assert (store.read_labels(Box(0, 0, 4, 4)) == 1).all()
    assert store.read_edited(Box(0, 0, 4, 4)).all()
    snapshots.append(_arrays(store))

    # "unlabelled": label 0, confidence 0, not edited, the tiles to do again; review goes there
    edit = session.start_edit(Box(64, 32, 40, 40))
    edit.labels[10:20, 10:20] = 0
    edit.labels[30:32, 30:32] = 4
    record = session.commit(eraser=ERASER_UNLABELLED)
    assert record["unlabelled"] == 100
    erased = Box(74, 42, 10, 10)
    assert not store.read_labels(erased).any() and not store.read_confidence(erased).any()
    assert not store.read_edited(erased).any()
    assert store.done_map()[1, 2] == 0 and store.done_map()[0, 0] == 1
    queue = session.review_queue()
    assert queue[0].reason == "unlabelled" and not queue[0].box.intersect(erased).is_empty
    assert [r.reason for r in queue].count("unlabelled") == 1
    # the next run predicts the erased pixels again (the other correction stays)
    from napari_sgnet.inference.engine import run_inference
    from napari_sgnet.inference.request import InferenceRequest

    req = InferenceRequest(slide=slide, store=store.path, model=PixelRulePredictor(32, mpp=1.0),
                           device="cpu", skip_glass=False)
    assert list(run_inference(req))[-1].stage == "completed"
    assert store.read_labels(erased).all() and store.done_map()[1, 2] == 1
    assert (store.read_labels(Box(94, 62, 2, 2)) == 4).all()
    assert session.review_queue()[0].reason == "uncertain"  # predicted again: not unlabelled

    # undo, twice: byte-exact back to before each commit (the run's tiles stay as they are)
    store.reset_done()  # so the done-map compares with before the run
    store.mark_done([(ty, tx) for ty in range(3) for tx in range(4)])
    session.undo_commit()
    after_first = _arrays(store)
    for k in (0, 1, 2):  # labels, confidence, edited under the second commit's changes
        assert np.array_equal(after_first[k][42:52, 74:84], snapshots[1][k][42:52, 74:84])
    session.undo_commit()
    assert session.undo_commit() is None
    assert not store.read_edited(Box(0, 0, store.width, store.height)).any()
    assert (store.read_labels(Box(0, 0, 4, 4)) == 2).all()
    assert [bool(c.get("undone")) for c in store.commits] == [True, True]


def test_undo_is_exact_survives_reopen_and_is_bounded(tmp_path):
    slide, store = _store(tmp_path)
    _predict(store, Box(0, 0, 32, 32), 2, 200)
    before = _arrays(store)
    session = ReviewSession(slide, store)
    edit = session.start_edit(Box(3, 5, 20, 17))
    edit.labels[2:9, 1:12] = 5
    edit.labels[12:15, 0:3] = 0
    session.commit()
    reopened = ReviewSession(slide, LabelStore.open(store.path, slide=slide))
    assert reopened.undoable == 1
    edit = reopened.start_edit(Box(0, 0, 8, 8))
    with pytest.raises(ReviewError, match="before undoing"):
        reopened.undo_commit()
    reopened.discard()
    assert reopened.undo_commit()["left"] == 0
    _equal(_arrays(reopened.store), before)
    assert not (store.path / "sgnet_history" / "e1").exists()
    # bounded: only the last HISTORY_DEPTH commits can be undone
    for k in range(HISTORY_DEPTH + 2):
        store.commit_edit(Box(k, 0, 1, 1), np.full((1, 1), 3, np.uint8))
    assert len(store.history) == HISTORY_DEPTH
    folders = [p.name for p in (store.path / "sgnet_history").iterdir() if p.is_dir()]
    assert len(folders) == HISTORY_DEPTH


def test_interrupted_history_save_is_ignored(tmp_path):
    _slide, store = _store(tmp_path)
    _predict(store, Box(0, 0, 32, 32), 2, 200)
    store.commit_edit(Box(0, 0, 2, 2), np.full((2, 2), 3, np.uint8))
    # a crash after the arrays of a second record were written but before it was listed
    group = store.history._group(create=False)
    group.create_group("e2")
    assert len(store.history) == 1
    store.commit_edit(Box(4, 4, 2, 2), np.full((2, 2), 4, np.uint8))  # cleans the leftover
    assert [r.id for r in store.history.records()] == [1, 2]
    store.undo_commit()
    store.undo_commit()
    assert (store.read_labels(Box(0, 0, 6, 6)) == 2).all()


def test_an_import_ends_the_undo_history(tmp_path):
    """``commit_blocks`` (the CLI import) keeps no undo record, so it clears the history:
    undo must never revert an older commit from under the imported pixels."""
    _slide, store = _store(tmp_path)
    _predict(store, Box(0, 0, 32, 32), 2, 200)
    store.commit_edit(Box(0, 0, 4, 4), np.full((4, 4), 3, np.uint8))
    assert len(store.history) == 1
    box = Box(8, 8, 4, 4)
    store.commit_blocks([(box, np.full((4, 4), 5, np.uint8), np.ones((4, 4), bool))])
    assert len(store.history) == 0
    assert store.undo_commit() is None
    assert (store.read_labels(box) == 5).all() and (store.read_labels(Box(0, 0, 4, 4)) == 3).all()
    assert not [p for p in (store.path / "sgnet_history").iterdir() if p.is_dir()]
