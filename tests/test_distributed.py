"""dask.distributed backend: byte-identical to the single-process engine."""

from __future__ import annotations

import pytest

from napari_sgnet.inference import InferenceRequest, predict_slide, run_distributed
from napari_sgnet.inference.distributed import make_blocks
from napari_sgnet.inference.testing import PixelRulePredictor, differing_arrays, pattern_slide
from napari_sgnet.io.labelstore import LabelStore

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield cluster, client


@pytest.fixture(scope="module")
def slide():
    return pattern_slide(700, 500, seed=5, glass_border=96, mpp=0.5)


OPTIONS = dict(overlap=5, batch_size=3)


def test_blocks_partition_the_work():
    work = [((ty, tx), False) for ty in range(5) for tx in range(7)]
    blocks = make_blocks(work, 2)
    assert sorted(i for b in blocks for i in b) == sorted(work)
    assert len(blocks) == 3 * 4
    for block in blocks:
        assert len({(ty // 2, tx // 2) for (ty, tx), _ in block}) == 1


def test_distributed_equals_single_process(tmp_path, slide, cluster):
    _, client = cluster
    model = PixelRulePredictor(64)
    single = predict_slide(slide, tmp_path / "single.zarr", model, **OPTIONS)
    request = InferenceRequest(slide, tmp_path / "dist.zarr", model, **OPTIONS)
    events = list(run_distributed(request, client=client, block_tiles=2))
    final = events[-1]
    assert final.stage == "completed" and final.tiles_done == single.tiles_done
    assert final.tiles_glass == single.tiles_glass > 0
    assert differing_arrays(tmp_path / "single.zarr", tmp_path / "dist.zarr") == []
    LabelStore.open(tmp_path / "dist.zarr").validate(deep=True)


def test_distributed_with_a_torch_model_and_scheduler_address(tmp_path, slide, cluster):
    from napari_sgnet.inference.testing_torch import tiny_model

    local_cluster, _ = cluster
    model = tiny_model(32, mpp=1.0)
    predict_slide(slide, tmp_path / "single.zarr", model, device="cpu", **OPTIONS)
    request = InferenceRequest(slide, tmp_path / "dist.zarr", model, device="cpu", **OPTIONS)
    final = list(run_distributed(request, scheduler_address=local_cluster.scheduler_address))[-1]
    assert final.stage == "completed" and final.level == 1
    assert differing_arrays(tmp_path / "single.zarr", tmp_path / "dist.zarr") == []


def test_distributed_resume_and_region(tmp_path, slide, cluster):
    _, client = cluster
    model = PixelRulePredictor(64)
    path = tmp_path / "dist.zarr"
    first = list(
        run_distributed(
            InferenceRequest(slide, path, model, region=(0, 0, 350, 250), **OPTIONS), client=client
        )
    )[-1]
    rest = list(run_distributed(InferenceRequest(slide, path, model, **OPTIONS), client=client))[-1]
    assert rest.tiles_cached == first.tiles_done
    predict_slide(slide, tmp_path / "single.zarr", model, **OPTIONS)
    assert differing_arrays(tmp_path / "single.zarr", path) == []
