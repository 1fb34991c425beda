"""Per-class probabilities: kept in the store on request (bundled SGNet), crash-safe like the
labels, untouched by edits, exported as an OME-Zarr image checked by ome-zarr-models."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_sgnet.app.exports import run_export
from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.inference import InferenceRequest, predict_slide, run_inference
from napari_sgnet.inference.request import RequestError
from napari_sgnet.inference.testing import PixelRulePredictor, differing_arrays, pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.registry import bundled_model_dir

pytest.importorskip("torch")

OPTIONS = dict(batch_size=4, device="cpu", precision="fp32", probabilities=True)


@pytest.fixture(scope="module")
def slide():
    return pattern_slide(500, 380, seed=3, glass_border=40, mpp=4.0)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, slide):
    path = tmp_path_factory.mktemp("probs") / "p.sgnet.zarr"
    predict_slide(slide, path, bundled_model_dir("sgnet"), **OPTIONS)
    return path


def test_store_keeps_probabilities_consistent_with_labels(predicted):
    store = LabelStore.open(predicted)
    store.validate(deep=True)
    assert store.has_probabilities
    box = Box(0, 0, store.width, store.height)
    probs = store.read_probabilities(box)
    labels, conf = store.read_labels(box), store.read_confidence(box)
    assert probs.shape == (store.palette.num_classes, store.height, store.width)
    assert probs.dtype == np.uint8
    tissue = labels > 0
    assert tissue.mean() > 0.3 and (~tissue).any()
    # the max class probability is the confidence, the label's class holds it, glass is 0
    assert np.array_equal(probs.max(0)[tissue], conf[tissue])
    ys, xs = np.nonzero(tissue)
    assert (probs[labels[ys, xs] - 1, ys, xs] == conf[ys, xs]).all()
    assert (probs[:, ~tissue] == 0).all()
    sums = probs.sum(0, dtype=np.int32)[tissue]
    assert sums.min() >= 255 - 3 and sums.max() <= 255 + 3  # K roundings of a softmax
    assert store.requests[-1]["probabilities"] is True


def test_probabilities_are_crash_safe_and_resume_byte_identical(tmp_path, slide, predicted):
    path = tmp_path / "resumed.sgnet.zarr"
    model = bundled_model_dir("sgnet")
    events = run_inference(InferenceRequest(slide, path, model, commit_interval=0, **OPTIONS))
    for event in events:
        if event.stage == "progress":
            break
    events.close()
    store = LabelStore.open(path)
    assert 0 < store.done_map().sum() and store.has_probabilities
    # a store that keeps probabilities is always written with them, even when not asked
    rest = predict_slide(slide, path, model, **{**OPTIONS, "probabilities": False})
    assert rest.tiles_cached > 0
    assert differing_arrays(predicted, path) == []
    assert np.array_equal(
        np.asarray(zarr.open_group(predicted, mode="r")["probabilities"][...]),
        np.asarray(zarr.open_group(path, mode="r")["probabilities"][...]),
    )


def test_edits_do_not_change_probabilities(tmp_path, predicted):
    import shutil

    path = tmp_path / "edited.sgnet.zarr"
    shutil.copytree(predicted, path)
    store = LabelStore.open(path)
    box = Box(128, 128, 64, 64)
    before = store.read_probabilities(box)
    store.commit_edit(box, np.full((64, 64), 5, dtype=np.uint8))
    assert (store.read_labels(box) == 5).all()
    assert np.array_equal(store.read_probabilities(box), before)


def test_refusals(tmp_path, slide, predicted, capsys):
    # a predictor that gives no probabilities: refused before any store exists
    with pytest.raises(RequestError, match="no per-class probabilities"):
        predict_slide(slide, tmp_path / "rule.zarr", PixelRulePredictor(64), probabilities=True)
    assert not (tmp_path / "rule.zarr").exists()
    # a store with predicted tiles but no probabilities: refused, not silently half-filled
    plain = tmp_path / "plain.sgnet.zarr"
    options = {**OPTIONS, "probabilities": False}
    predict_slide(slide, plain, bundled_model_dir("sgnet"), region=(200, 200, 50, 50), **options)
    with pytest.raises(StoreError, match="keeps no probabilities"):
        predict_slide(slide, plain, bundled_model_dir("sgnet"), **OPTIONS)
    LabelStore.open(plain).validate()  # old-style store (no probabilities array) stays valid
    with pytest.raises(StoreError, match="keeps no per-class probabilities"):
        run_export("probabilities", LabelStore.open(plain), tmp_path / "p.ome.zarr")
    assert not (tmp_path / "p.ome.zarr").exists()
    from napari_sgnet.cli.main import main

    argv = ["export", str(plain), "--format", "probabilities", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "keeps no per-class probabilities" in capsys.readouterr().err


def test_export_is_a_valid_ome_zarr_image(tmp_path, predicted):
    v05 = pytest.importorskip("ome_zarr_models.v05")
    store = LabelStore.open(predicted)
    from napari_sgnet.cli.main import main
    from napari_sgnet.io.exporters.probabilities import export_probabilities

    table = tmp_path / "table.probabilities.ome.zarr"
    assert main(["export", str(predicted), "--format", "probabilities", "--out", str(table)]) == 0
    v05.Image.from_zarr(zarr.open_group(table, mode="r"))  # one level (fits one 512 chunk)
    out = export_probabilities(store, tmp_path / "p.probabilities.ome.zarr", chunk=128)
    group = zarr.open_group(out, mode="r")
    image = v05.Image.from_zarr(group)  # the outside validator
    ms = image.attributes.ome.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "y", "x"]
    assert [a.unit for a in ms.axes[1:]] == ["micrometer", "micrometer"]
    attrs = group.attrs.asdict()
    names = [c["label"] for c in attrs["ome"]["omero"]["channels"]]
    assert names == [c.name for c in store.palette.classes]
    level0 = np.asarray(group["0"][...])
    box = Box(0, 0, store.width, store.height)
    assert np.array_equal(level0, store.read_probabilities(box))
    # µm scale: the store's level 0 is at 4 µm/px (the model's)
    scale = ms.datasets[0].coordinateTransformations[0].scale
    assert scale[0] == 1.0 and scale[1] == pytest.approx(4.0) and scale[2] == pytest.approx(4.0)
    assert len(ms.datasets) == 3 and group["1"].shape == (5, 190, 250)
    assert ms.datasets[1].coordinateTransformations[0].scale[1] == pytest.approx(8.0)
    # a 2 x 2 mean, rounded: a second reader (numpy on the written level 0) agrees
    block = level0[:, : 190 * 2, : 250 * 2].reshape(5, 190, 2, 250, 2).astype(np.uint16)
    expected = (block.sum(axis=(2, 4)) + 2) // 4
    assert np.array_equal(np.asarray(group["1"][...]), expected.astype(np.uint8))
