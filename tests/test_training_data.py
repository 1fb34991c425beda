"""Training samples: determinism, image/label alignment under augmentation, patch folders."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_sgnet.config import ModelConfig
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import GLEASON
from napari_sgnet.training.augment import (
    AugmentConfig,
    Sample,
    augment,
    flip_rotate,
    flip_rotate_box,
    hed_jitter,
)
from napari_sgnet.training.dataset import (
    DataError,
    PatchFolderSampler,
    SlideSampler,
    SlideSource,
    make_batch,
)
from napari_sgnet.training.patches import (
    PatchFolderError,
    PatchItem,
    read_patch_folder,
    write_patch_folder,
)

SIZE = 256


def coord_image(h: int, w: int) -> np.ndarray:
    """RGB whose pixels encode their own (row, col): R = row % 256, G = col % 256, B = blocks."""
    r, c = np.mgrid[0:h, 0:w]
    return np.stack([r % 256, c % 256, (r // 256) * 16 + c // 256], axis=-1).astype(np.uint8)


def label_of(rgb: np.ndarray) -> np.ndarray:
    """The label the fixture assigns to the pixel an RGB value encodes (0 on glass padding)."""
    r = rgb[..., 0].astype(int) + 256 * (rgb[..., 2].astype(int) // 16)
    c = rgb[..., 1].astype(int) + 256 * (rgb[..., 2].astype(int) % 16)
    return (1 + (r // 7 + c // 5) % 5).astype(np.uint8)


def two_level(array: np.ndarray, mpp: float = 1.0) -> Pyramid:
    levels = (da.from_array(array, chunks=64), da.from_array(array[::2, ::2], chunks=64))
    return Pyramid(levels, (1.0, 2.0), mpp=mpp, name="fixture")


@pytest.fixture
def source() -> SlideSource:
    image = coord_image(SIZE, SIZE)
    labels = label_of(image)
    labels[:, : SIZE // 4] = 0  # an unlabelled margin
    return SlideSource(two_level(image), two_level(labels), "fixture")


CONFIG = ModelConfig(general_branch="fcn_lite", patch_size=32, mpp=1.0)


def test_slide_sampler_is_deterministic_and_respects_labels(source):
    sampler = SlideSampler(source, CONFIG, max_unlabelled=0.25)
    a = sampler.sample(np.random.default_rng(7))
    b = sampler.sample(np.random.default_rng(7))
    for key in ("local", "context", "local_mask", "context_mask"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.offset == b.offset
    assert a.local.shape == (32, 32, 3) and a.context.shape == (64, 64, 3)
    for seed in range(20):
        s = sampler.sample(np.random.default_rng(seed))
        assert np.mean(s.local_mask == 0) <= 0.25
        # the local patch is the crop of the surrounding patch at the reported offset
        x, y, w, h = s.local_box
        np.testing.assert_array_equal(s.context[y : y + h, x : x + w], s.local)
        np.testing.assert_array_equal(s.context_mask[y : y + h, x : x + w], s.local_mask)
        # image and labels are aligned wherever the patch is labelled and on the slide
        inside = s.local_mask != 0
        np.testing.assert_array_equal(label_of(s.local)[inside], s.local_mask[inside])


def test_batches_are_a_pure_function_of_seed_and_step(source):
    sampler = SlideSampler(source, CONFIG)
    b1 = make_batch([sampler], 3, seed=1, step=5)
    b2 = make_batch([sampler], 3, seed=1, step=5)
    b3 = make_batch([sampler], 3, seed=1, step=6)
    assert all((b1[k] == b2[k]).all() for k in b1)
    assert not (b1["local"] == b3["local"]).all()
    assert b1["local"].shape == (3, 3, 32, 32) and b1["context_labels"].shape == (3, 64, 64)
    assert b1["local_box"].shape == (3, 4)


def test_flip_rotate_box_matches_array_transform():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (12, 20))
    box = (3, 2, 5, 4)
    crop = arr[2:6, 3:8]
    for flip in (False, True):
        for k in range(4):
            out = flip_rotate(arr, flip, k)
            x, y, w, h = flip_rotate_box(box, (20, 12), flip, k)
            np.testing.assert_array_equal(out[y : y + h, x : x + w], flip_rotate(crop, flip, k))


def test_augmentation_keeps_images_labels_and_offsets_consistent(source):
    sampler = SlideSampler(source, CONFIG)
    geometric = AugmentConfig.geometric()
    seen = set()
    for seed in range(24):
        rng = np.random.default_rng(seed)
        s = augment(sampler.sample(rng), rng, geometric)
        x, y, w, h = s.local_box
        np.testing.assert_array_equal(s.context[y : y + h, x : x + w], s.local)
        np.testing.assert_array_equal(s.context_mask[y : y + h, x : x + w], s.local_mask)
        inside = s.context_mask != 0
        np.testing.assert_array_equal(label_of(s.context)[inside], s.context_mask[inside])
        seen.add((s.local[0, 0, 0], s.local[0, 0, 1]))
    assert len(seen) > 1


def test_colour_augmentation_same_for_both_images_and_identity_when_off():
    img = np.random.default_rng(1).uniform(0.05, 1, (8, 8, 3)).astype(np.float32)
    same = hed_jitter([img], np.ones(3), np.zeros(3))[0]
    np.testing.assert_allclose(same, img, atol=1e-5)
    assert same.dtype == np.float32
    context = coord_image(64, 64)
    sample = Sample(
        context[16:48, 16:48].copy(),
        context,
        np.ones((32, 32), np.uint8),
        np.ones((64, 64), np.uint8),
        (16, 16),
    )
    colour = AugmentConfig(
        flips=False, rotations=False, hed_scale=0.2, hed_bias=0.05, brightness=0.1, contrast=0.2
    )
    out = augment(sample, np.random.default_rng(3), colour)
    np.testing.assert_array_equal(out.context[16:48, 16:48], out.local)
    assert not np.array_equal(out.context, context)
    still = augment(sample, np.random.default_rng(3), AugmentConfig.none())
    np.testing.assert_array_equal(still.context, context)


def test_unlabelled_slide_is_a_clear_error():
    image = coord_image(64, 64)
    with pytest.raises(DataError, match="no labelled"):
        SlideSampler(SlideSource(two_level(image), two_level(np.zeros((64, 64), np.uint8))), CONFIG)


def _item(seed: int) -> PatchItem:
    rng = np.random.default_rng(seed)
    context = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = rng.integers(0, 6, (64, 64), dtype=np.uint8)
    return PatchItem(
        context[8:40, 16:48],
        context,
        mask[8:40, 16:48],
        mask,
        (16, 8),
        slide="s.svs",
        level=2,
        mpp=2.0,
        model_id="abc",
        meta={"edited": 0.5},
    )


def test_patch_folder_round_trip_and_sampler(tmp_path):
    folder = tmp_path / "patches"
    write_patch_folder(
        folder, [_item(0), _item(1)], GLEASON, mpp=2.0, patch_size=32, context_factor=2.0
    )
    with pytest.raises(PatchFolderError, match="exists"):
        write_patch_folder(folder, [_item(2)], GLEASON)
    write_patch_folder(folder, [_item(2)], GLEASON, append=True)
    pf = read_patch_folder(folder)
    assert len(pf) == 3 and pf.palette == GLEASON and pf.mpp == 2.0
    for i, item in enumerate(pf):
        ref = _item(i)
        for key in ("local", "context", "local_mask", "context_mask"):
            np.testing.assert_array_equal(getattr(item, key), getattr(ref, key))
        assert item.offset == (16, 8) and item.model_id == "abc" and item.meta == {"edited": 0.5}
    s = PatchFolderSampler(pf, CONFIG).sample(np.random.default_rng(0))
    np.testing.assert_array_equal(s.context[8:40, 16:48], s.local)
    with pytest.raises(DataError, match="needs"):
        PatchFolderSampler(pf, CONFIG.replace(patch_size=64))
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(PatchFolderError, match="manifest.json"):
        read_patch_folder(folder)


def test_patch_item_validation():
    item = _item(0)
    with pytest.raises(PatchFolderError, match="does not fit"):
        PatchItem(item.local, item.context, item.local_mask, item.context_mask, (40, 0)).validate()
