"""LabelStore: layout, OME-NGFF readability, writes, edits, pyramid, identity checks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import pattern_slide
from napari_sgnet.io.labelstore import DONE_GLASS, DONE_PREDICTED, LabelStore
from napari_sgnet.io.labelstore.meta import MAX_REQUEST_RECORDS
from napari_sgnet.io.labelstore.pyramid import (
    chunk_index_runs,
    level_shapes,
    mode_downsample2,
)
from napari_sgnet.palette import GLEASON, ClassInfo, Palette


@pytest.fixture
def slide():
    return pattern_slide(700, 500, mpp=0.5)


@pytest.fixture
def store(tmp_path, slide):
    return LabelStore.create(
        tmp_path / "s.zarr", slide=slide, palette=GLEASON, base_downsample=2.0, tile=64, chunk=32
    )


def reference_pyramid(level0: np.ndarray, n: int) -> list[np.ndarray]:
    out = [level0]
    for _ in range(n - 1):
        out.append(mode_downsample2(out[-1]))
    return out


# ---------------------------------------------------------------- pure helpers
def test_mode_downsample_prefers_majority_nonzero_and_smaller_on_ties():
    a = np.array([[3, 3, 0, 0, 2, 5], [3, 1, 0, 4, 5, 2]], dtype=np.uint8)
    assert mode_downsample2(a).tolist() == [[3, 4, 2]]


def test_mode_downsample_odd_sizes_and_never_invents_labels():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(37, 23), dtype=np.uint8)
    d = mode_downsample2(a)
    assert d.shape == (19, 12)
    assert set(np.unique(d)) <= set(np.unique(a))
    assert mode_downsample2(np.full((5, 5), 2, np.uint8)).tolist() == [[2] * 3] * 3


def test_level_shapes_and_runs():
    assert level_shapes(500, 700, 256) == [(500, 700), (250, 350), (125, 175)]
    assert level_shapes(10, 10, 256) == [(10, 10)]
    assert list(chunk_index_runs({(0, 1), (0, 2), (0, 4), (1, 0)})) == [
        (0, 1, 3),
        (0, 4, 5),
        (1, 0, 1),
    ]


# ---------------------------------------------------------------- layout
def test_create_layout_and_attributes(store, slide):
    assert (store.height, store.width) == (250, 350)  # slide level 1
    assert store.level_shapes == [(250, 350), (125, 175), (63, 88), (32, 44), (16, 22)]
    assert store.grid_shape == (4, 6)
    assert store.palette.same_classes(GLEASON)
    ident = store.slide_identity
    assert (ident["width"], ident["height"], ident["mpp"]) == (700, 500, 0.5)
    store.validate(deep=True)
    import zarr

    group = zarr.open_group(store.path, mode="r")
    ome = group.attrs["ome"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    assert scales == [[2.0 * 2**k * 0.5] * 2 for k in range(5)]
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["y", "x"]
    props = ome["image-label"]["properties"]
    assert [p["class"] for p in props] == ["no label", *GLEASON.names]
    for name in ("confidence", "edited"):
        assert group[name].shape == (250, 350) and group[name].dtype == np.uint8
    assert group["done"].shape == (4, 6)


def test_ome_zarr_reader_opens_the_store(store):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(store.path)))())
    assert [tuple(d.shape) for d in nodes[0].data] == store.level_shapes
    colors = nodes[0].metadata["color"]
    assert colors[1][:3] == pytest.approx([c / 255 for c in GLEASON.classes[0].color])


def test_levels_as_dask(store):
    levels = store.levels_as_dask()
    assert [tuple(a.shape) for a in levels] == store.level_shapes
    assert all(a.dtype == np.uint8 for a in levels)
    assert store.confidence_as_dask().shape == store.level_shapes[0]


# ---------------------------------------------------------------- writes
def test_write_tile_and_pyramid_match_full_mode_pyramid(store):
    rng = np.random.default_rng(0)
    for idx in [(0, 0), (1, 2), (3, 5), (2, 5)]:
        box = store.tile_box(idx)
        store.write_tile(
            box,
            rng.integers(1, 6, (box.h, box.w), dtype=np.uint8),
            rng.integers(0, 256, (box.h, box.w), dtype=np.uint8),
        )
        store.update_pyramid(box)
    full = store.read_labels(Box(0, 0, store.width, store.height))
    for k, ref in enumerate(reference_pyramid(full, store.n_levels)):
        h, w = store.level_shapes[k]
        np.testing.assert_array_equal(store.read_labels(Box(0, 0, w, h), k), ref)


def test_unaligned_write_preserves_neighbours(store):
    store.write_tile(
        Box(0, 0, 64, 64), np.full((64, 64), 2, np.uint8), np.full((64, 64), 9, np.uint8)
    )
    store.write_tile(Box(10, 20, 5, 7), np.full((7, 5), 4, np.uint8), np.zeros((7, 5), np.uint8))
    got = store.read_labels(Box(0, 0, 64, 64))
    expected = np.full((64, 64), 2, np.uint8)
    expected[20:27, 10:15] = 4
    np.testing.assert_array_equal(got, expected)


def test_edits_survive_predictions_and_are_recorded(store):
    box = store.tile_box((1, 1))
    store.write_tile(
        box, np.full((box.h, box.w), 1, np.uint8), np.full((box.h, box.w), 50, np.uint8)
    )
    edit = np.full((box.h, box.w), 1, np.uint8)
    edit[5:15, 5:25] = 4
    record = store.commit_edit(box, edit, author="dr. x", message="fix")
    assert record["pixels"] == 200 and record["author"] == "dr. x" and "T" in record["time"]
    # The pyramid above the edit was refreshed.
    full = store.read_labels(Box(0, 0, store.width, store.height))
    np.testing.assert_array_equal(store.read_labels(Box(0, 0, 175, 125), 1), mode_downsample2(full))
    edited = store.read_edited(box)
    assert edited.sum() == 200 and edited[5:15, 5:25].all()
    assert (store.read_confidence(box)[5:15, 5:25] == 255).all()
    # A new prediction over the tile keeps the corrected pixels.
    store.write_tile(
        box, np.full((box.h, box.w), 3, np.uint8), np.full((box.h, box.w), 7, np.uint8)
    )
    got = store.read_labels(box)
    assert (got[5:15, 5:25] == 4).all() and (got[edited == 0] == 3).all()
    # respect_edited=False overrides (explicit).
    store.write_tile(
        box,
        np.full((box.h, box.w), 3, np.uint8),
        np.zeros((box.h, box.w), np.uint8),
        respect_edited=False,
    )
    assert (store.read_labels(box) == 3).all()
    assert store.commits[-1]["message"] == "fix"


def test_commit_edit_with_explicit_mask(store):
    box = Box(3, 3, 10, 10)
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True
    store.commit_edit(box, np.full((10, 10), 5, np.uint8), mask=mask)
    assert store.read_edited(box).sum() == 1
    assert store.read_labels(box)[0, 0] == 5 and store.read_labels(box)[1, 1] == 0


def test_done_map(store):
    store.mark_done((1, 2))
    store.mark_done([(0, 0), (3, 5)], DONE_GLASS)
    done = store.done_map()
    assert done[1, 2] == DONE_PREDICTED and done[0, 0] == DONE_GLASS and done.sum() == 5
    store.reset_done()
    assert store.done_map().sum() == 0
    with pytest.raises(IndexError):
        store.mark_done((4, 0))


def test_bad_boxes_and_shapes(store):
    with pytest.raises(ValueError, match="outside"):
        store.write_tile(
            Box(340, 0, 20, 4), np.zeros((4, 20), np.uint8), np.zeros((4, 20), np.uint8)
        )
    with pytest.raises(ValueError, match="shape"):
        store.write_tile(Box(0, 0, 4, 4), np.zeros((3, 4), np.uint8), np.zeros((4, 4), np.uint8))


def test_request_records_are_capped_and_updatable(store):
    for i in range(MAX_REQUEST_RECORDS + 5):
        n = store.record_request({"status": "running", "i": i})
    store.update_request(n, status="completed")
    reqs = store.requests
    assert len(reqs) == MAX_REQUEST_RECORDS
    assert reqs[-1]["status"] == "completed" and reqs[-1]["number"] == MAX_REQUEST_RECORDS + 5
    assert store.attrs["n_requests"] == MAX_REQUEST_RECORDS + 5


def test_metadata_updates_from_two_instances_do_not_clobber(store):
    other = LabelStore.open(store.path)
    store.commit_edit(Box(0, 0, 2, 2), np.full((2, 2), 1, np.uint8))
    other.set_model({"id": "m1"})
    assert len(store.commits) == 1 and store.model == {"id": "m1"}


# ---------------------------------------------------------------- errors
def test_open_checks_slide_and_palette(store, slide):
    LabelStore.open(store.path, slide=slide, palette=GLEASON)
    with pytest.raises(StoreError, match="size differs") as err:
        LabelStore.open(store.path, slide=pattern_slide(600, 500))
    assert str(store.path) in str(err.value)
    with pytest.raises(StoreError, match="pixel content differs"):
        LabelStore.open(store.path, slide=pattern_slide(700, 500, seed=5))
    with pytest.raises(StoreError, match="µm/px differs"):
        LabelStore.open(store.path, slide=slide.with_mpp(0.25))
    other = Palette("two", (ClassInfo("a", (1, 2, 3)), ClassInfo("b", (4, 5, 6))))
    with pytest.raises(StoreError, match="palette mismatch"):
        LabelStore.open(store.path, palette=other)


def test_read_only_store_refuses_writes(store):
    ro = LabelStore.open(store.path, mode="r")
    assert ro.read_labels(Box(0, 0, 4, 4)).shape == (4, 4)
    for call in (
        lambda: ro.write_tile(
            Box(0, 0, 2, 2), np.ones((2, 2), np.uint8), np.ones((2, 2), np.uint8)
        ),
        lambda: ro.commit_edit(Box(0, 0, 2, 2), np.ones((2, 2), np.uint8)),
        lambda: ro.mark_done((0, 0)),
        lambda: ro.update_pyramid(Box(0, 0, 2, 2)),
        lambda: ro.set_model({"id": "x"}),
    ):
        with pytest.raises(StoreError, match="read-only"):
            call()


def test_file_system_errors_name_the_store(store, monkeypatch):
    import zarr

    def deny(self, *args, **kwargs):
        raise PermissionError("denied")

    monkeypatch.setattr(zarr.Array, "__setitem__", deny)
    with pytest.raises(StoreError, match="cannot write") as err:
        store.write_tile(Box(0, 0, 2, 2), np.ones((2, 2), np.uint8), np.ones((2, 2), np.uint8))
    assert str(store.path) in str(err.value)


def test_create_and_open_errors(tmp_path, slide, store):
    with pytest.raises(StoreError, match="already exists"):
        LabelStore.create(store.path, slide=slide, palette=GLEASON)
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "data.txt").write_text("keep me")
    with pytest.raises(StoreError, match="refusing to delete"):
        LabelStore.create(folder, slide=slide, palette=GLEASON, overwrite=True)
    assert (folder / "data.txt").exists()
    with pytest.raises(StoreError, match="not a napari-sgnet label store"):
        LabelStore.open(folder)
    with pytest.raises(StoreError, match="does not exist"):
        LabelStore.open(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="divide"):
        LabelStore.create(tmp_path / "x.zarr", slide=slide, palette=GLEASON, tile=64, chunk=48)
    fresh = LabelStore.create(store.path, slide=slide, palette=GLEASON, overwrite=True, tile=32)
    assert fresh.tile == 32 and not fresh.commits


def test_validate_reports_damage(store):
    import shutil

    import zarr

    shutil.rmtree(store.path / "done")
    zarr.open_group(store.path, mode="r+").create_array(
        "done", shape=(1, 1), dtype="uint8", chunks=(1, 1), fill_value=0
    )
    with pytest.raises(StoreError, match="done-map"):
        LabelStore.open(store.path).validate()


def test_review_state_writes_under_the_store_lock(store):
    """One lock per store: the review state of a second instance waits for a store write."""
    import threading

    other = LabelStore.open(store.path)
    worker = threading.Thread(target=other.review.add_reviewed, args=(Box(0, 0, 8, 8),))
    with store._guard.writing():
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive()  # blocked on the store's lock
        assert store.review.reviewed() == []
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert store.review.reviewed() == [Box(0, 0, 8, 8)]


def test_read_only_store_refuses_review_writes(store):
    ro = LabelStore.open(store.path, mode="r")
    with pytest.raises(StoreError, match="read-only"):
        ro.review.add_reviewed(Box(0, 0, 2, 2))
    crop = np.ones((2, 2), np.uint8)
    with pytest.raises(StoreError, match="read-only"):
        ro.review.save_pending(Box(0, 0, 2, 2), crop, crop, "t")
    assert ro.review.load_pending() is None
