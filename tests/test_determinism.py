"""Determinism with the real bundled model: single-process, resumed and distributed runs
write the same label and confidence bytes, whatever batch each tile falls in."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.inference import InferenceRequest, predict_slide, run_distributed, run_inference
from napari_sgnet.inference.loop import pad_batch, run_tiles
from napari_sgnet.inference.plan import grid_plan
from napari_sgnet.inference.sinks import ArraySink
from napari_sgnet.inference.testing import PixelRulePredictor, differing_arrays, pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.registry import bundled_model_dir

torch = pytest.importorskip("torch")

BATCH = 5


@pytest.fixture(scope="module")
def slide():
    # at the bundled model's 4 µm/px: a 4 x 3 grid of 128-px tiles, glass all round
    return pattern_slide(500, 380, seed=3, glass_border=40, mpp=4.0)


@pytest.fixture(scope="module")
def sgnet_dir():
    return bundled_model_dir("sgnet")


def test_pad_batch_repeats_the_last_row():
    a = np.arange(6).reshape(2, 3)
    padded = pad_batch(a, 4)
    assert padded.shape == (4, 3)
    assert (padded[2] == a[1]).all() and (padded[3] == a[1]).all()
    assert pad_batch(a, 2) is a


def test_every_forward_pass_has_batch_size_tiles(slide):
    inner = PixelRulePredictor(64)
    sizes: list[int] = []

    class Recording:
        info = inner.info

        def predict(self, local, context, crop=0):
            sizes.append(len(local))
            return inner.predict(local, context, crop=crop)

    plan = grid_plan(slide.width, slide.height, patch=64, context_factor=inner.info.context_factor)
    # 10 tiles, glass every third: batches of 3 tissue tiles, the last one short
    work = [(idx, i % 3 == 2) for i, idx in enumerate(plan.tiles[:10])]
    sink = ArraySink(plan, confidence=True)
    list(run_tiles(slide, plan, Recording(), sink, work, batch_size=4, ramp=True))
    assert sizes and set(sizes) == {4}
    reference = ArraySink(plan, confidence=True)
    list(run_tiles(slide, plan, inner, reference, work, batch_size=1))
    assert np.array_equal(sink.labels, reference.labels)
    assert np.array_equal(sink.confidence, reference.confidence)


def test_bundled_model_tile_bytes_do_not_depend_on_batch_companions():
    """The premise of the padding: at a fixed batch size a tile's logits are bit-identical
    whichever tiles share its batch and wherever it sits in it."""
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.model.bundled import load_bundled

    predictor = TorchPredictor(load_bundled("sgnet"), device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    local = rng.integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)
    context = rng.integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)

    def logits(order):
        with torch.inference_mode():
            x = predictor._to_device(local[order])
            c = predictor._to_device(context[order])
            return predictor.module(x, context=c)["logits"].numpy()

    batches = [[0, 1, 2], [3, 0, 4], [5, 2, 0]]
    outs = [logits(b)[b.index(0)] for b in batches]
    for other in outs[1:]:
        assert np.array_equal(outs[0], other)
    labels = [predictor.predict(local[b], context[b])[0][b.index(0)] for b in batches]
    assert all(np.array_equal(labels[0], x) for x in labels[1:])


def test_single_resumed_and_distributed_runs_are_byte_identical(tmp_path, slide, sgnet_dir):
    distributed = pytest.importorskip("distributed")
    options = dict(batch_size=BATCH, device="cpu", precision="fp32", threads=2, probabilities=True)
    single = predict_slide(slide, tmp_path / "single.zarr", sgnet_dir, **options)
    assert single.tiles_predicted > BATCH and single.tiles_predicted % BATCH  # a short batch

    # resumed: stopped after two batches, then finished by a second run
    events = run_inference(
        InferenceRequest(slide, tmp_path / "resumed.zarr", sgnet_dir, commit_interval=0, **options)
    )
    for event in events:
        if event.stage == "progress" and event.tiles_done >= 2:
            break
    events.close()
    rest = predict_slide(slide, tmp_path / "resumed.zarr", sgnet_dir, **options)
    assert 0 < rest.tiles_cached < single.tiles_done

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        request = InferenceRequest(slide, tmp_path / "dist.zarr", sgnet_dir, **options)
        final = list(run_distributed(request, client=client, block_tiles=2))[-1]
    assert final.stage == "completed" and final.tiles_done == single.tiles_done

    for other in ("resumed.zarr", "dist.zarr"):  # labels, confidence, probabilities, levels...
        assert LabelStore.open(tmp_path / other).has_probabilities
        assert differing_arrays(tmp_path / "single.zarr", tmp_path / other) == []
        LabelStore.open(tmp_path / other).validate(deep=True)
    store = LabelStore.open(tmp_path / "single.zarr")
    labels = store.read_labels(Box(0, 0, store.width, store.height))
    assert len(np.unique(labels)) >= 2  # the model predicted something, not all glass
