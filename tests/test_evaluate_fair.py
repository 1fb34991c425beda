"""The fair comparison of ``napari-sgnet evaluate``: tissue vs all-pixel, mean±sd over slides,
the tile-constant oracle's seams, ablations and the CLI report."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import torch

from napari_sgnet.cli.main import main
from napari_sgnet.inference.ablation import ABLATIONS, AblatedModel, parse_ablations
from napari_sgnet.inference.testing_torch import tiny_sgnet_config
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.metrics import SeamCounts, mean_sd, tile_constant
from napari_sgnet.model import build_model, save_checkpoint
from napari_sgnet.training.dataset import SlideSource
from napari_sgnet.training.evaluate import predict_level
from napari_sgnet.training.scoring import (
    majority_label,
    score_slide,
    seam_reference,
    slide_truth,
    summarise,
)
from napari_sgnet.training.sources import synthetic_source

CFG = tiny_sgnet_config()

# 4 x 4: tissue is the left half; truth 0 on glass (v2) and on one unlabelled tissue pixel.
TRUTH = np.array([[3, 3, 0, 0], [3, 3, 0, 0], [4, 4, 0, 0], [0, 4, 0, 0]], dtype=np.uint8)
TISSUE = np.zeros((4, 4), dtype=bool)
TISSUE[:, :2] = True
PRED = np.array([[3, 3, 1, 1], [3, 3, 1, 1], [3, 4, 2, 2], [4, 4, 1, 1]], dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_tissue_only_and_all_pixel_on_a_hand_made_case():
    s = score_slide("toy", PRED, TRUTH, TISSUE, CFG, 2, 1.0)
    # tissue: label 3 -> TP 4, FP 1 (IoU 4/5); label 4 -> TP 2, FN 1 (2/3); (3, 0) ignored
    assert s.tissue.total == 7
    assert s.tissue.miou() == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert s.tissue.pixel_accuracy() == pytest.approx(6 / 7)
    # all-pixel: glass is label 1 (predicted 1 on 6 of 8, 2 on 2): IoU 6/8, 0, 4/5, 2/3
    assert s.all_pixels.total == 15
    assert s.all_pixels.miou() == pytest.approx((6 / 8 + 0 + 4 / 5 + 2 / 3) / 4)
    assert s.all_pixels.pixel_accuracy() == pytest.approx(12 / 15)
    # a v1 ground truth (glass labelled 1) with the same tissue means the same thing
    v1 = np.where(TISSUE, TRUTH, 1).astype(np.uint8)
    s1 = score_slide("toy", PRED, v1, TISSUE, CFG, 2, 1.0)
    np.testing.assert_array_equal(s1.tissue.matrix, s.tissue.matrix)
    np.testing.assert_array_equal(s1.all_pixels.matrix, s.all_pixels.matrix)


def test_slide_truth_reads_the_tissue_pyramid_or_falls_back_to_labels():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    image = Pyramid((da.from_array(rgb),), (1.0,), mpp=4.0, name="toy")
    labels = Pyramid((da.from_array(TRUTH),), (1.0,), mpp=4.0, name="toy-labels")
    tissue = Pyramid((da.from_array(TISSUE),), (1.0,), mpp=4.0, name="toy-tissue")
    _, truth, mask = slide_truth(SlideSource(image, labels, "toy", tissue=tissue), 4.0)
    np.testing.assert_array_equal(truth, TRUTH)
    np.testing.assert_array_equal(mask, TISSUE)
    _, _, fallback = slide_truth(SlideSource(image, labels, "toy"), 4.0)
    np.testing.assert_array_equal(fallback, TRUTH > 0)
    assert majority_label([TRUTH], [TISSUE]) == 3  # 4 pixels of 3, 3 of 4


def test_mean_and_sd_over_two_slides_equal_numpy():
    other = PRED.copy()
    other[0, 0] = 4
    scores = [
        score_slide("a", PRED, TRUTH, TISSUE, CFG, 2, 1.0),
        score_slide("b", other, TRUTH, TISSUE, CFG, 2, 1.0),
    ]
    ref = seam_reference(TRUTH, TISSUE, 2)
    summary = summarise(scores, [ref, ref])
    for key in ("tissue_miou", "all_miou", "tissue_pixel_accuracy", "boundary_f1"):
        values = [p[key] for p in summary["per_slide"]]
        assert summary["mean"][key] == pytest.approx(np.mean(values), abs=1e-6)
        assert summary["sd"][key] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
    assert summary["per_slide"][0]["tissue_miou"] != summary["per_slide"][1]["tissue_miou"]
    assert summary["pooled"]["tissue"]["pixels"] == 14
    assert mean_sd([0.5]) == (0.5, pytest.approx(float("nan"), nan_ok=True))


def test_tile_constant_oracle_seams_equal_the_hand_count():
    truth = np.array([[1, 1, 2, 2], [1, 2, 2, 2], [3, 3, 2, 2], [3, 1, 2, 1]], dtype=np.uint8)
    oracle = tile_constant(truth, 2)
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 2, 2], [3, 3, 2, 2]])
    np.testing.assert_array_equal(oracle, expected)
    ref = seam_reference(truth, np.ones((4, 4), bool), 2)
    # across the column border: (1|2) (1|2) (3|2) (3|2); across the row border: (1/3) (1/3)
    # (2/2) (2/2): 8 pairs, 6 differ; the 16 interior pairs of a tile-constant map never do
    assert ref.oracle == SeamCounts(8, 6, 16, 0)
    assert ref.oracle.border_rate == 0.75 and ref.oracle.interior_rate == 0.0


@pytest.fixture(scope="module")
def slide() -> SlideSource:
    return synthetic_source(104, 1024, min_level_size=128, version=1)


def test_every_ablation_runs_and_changes_the_prediction(slide):
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    _, truth, _ = slide_truth(slide, CFG.mpp)
    image, level = slide_truth(slide, CFG.mpp)[0].as_pyramid()
    with torch.inference_mode():
        plain = predict_level(model, CFG, image, level, batch_size=4)
        assert plain.shape == truth.shape and len(np.unique(plain)) > 1
        for name in ABLATIONS:
            pred = predict_level(AblatedModel(model, name), CFG, image, level, batch_size=4)
            assert pred.shape == plain.shape and (pred != plain).any(), name
    # context-shuffle is a rotation by one within the batch: a batch of one keeps its context
    x, c = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        same = AblatedModel(model, "context-shuffle")(x, c)["logits"]
        torch.testing.assert_close(same, model(x, context=c)["logits"])
    assert parse_ablations("all") == list(ABLATIONS)
    with pytest.raises(ValueError, match="no context branch"):
        AblatedModel(build_model(CFG.replace(use_context=False)), "local-blank")


def test_cli_prints_the_new_columns_and_writes_the_json(tmp_path, capsys):
    torch.manual_seed(0)
    save_checkpoint(build_model(CFG).eval(), tmp_path / "sg")
    base = CFG.replace(use_context=False, name="tiny-base")
    save_checkpoint(build_model(base).eval(), tmp_path / "base")
    out = tmp_path / "scores.json"
    # generator v1: a 0.5 mm v2 slide is all glass (no core), with no seams to place the oracle
    argv = ["evaluate", "--synthetic-seed", "5", "--synthetic-seed", "6", "--size", "1024"]
    argv += ["--synthetic-version", "1"]
    argv += ["--model", str(tmp_path / "sg"), "--model", str(tmp_path / "base"), "--threads", "1"]
    argv += ["--ablations", "context-blank,aux-only", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for column in ("tissue mIoU", "all-pixel mIoU", "boundary F", "seam tile-const", "pooled"):
        assert column in printed, column
    assert "tiny (SGNet) [aux-only]" in printed and "tile-constant oracle [oracle]" in printed
    assert "rows truth, columns prediction" in printed and "16 µm = 4 px" in printed
    scores = json.loads(out.read_text())
    kinds = {name: row["kind"] for name, row in scores.items()}
    assert kinds == {
        "tiny (SGNet)": "model",
        "tiny (SGNet) [context-blank]": "ablation",
        "tiny (SGNet) [aux-only]": "ablation",
        "tiny-base (baseline)": "model",
        "majority class": "trivial",
        "tile-constant oracle [oracle]": "oracle",
    }
    row = scores["tiny (SGNet)"]
    assert [p["slide"] for p in row["per_slide"]] == ["synthetic-5", "synthetic-6"]
    assert {"miou", "pixel_accuracy", "iou", "seams", "mean", "sd", "pooled"} <= set(row)
    assert row["miou"] == row["pooled"]["all_pixels"]["miou"]
    counts = np.array(row["pooled"]["tissue"]["confusion"]["counts"])
    assert counts.sum() == row["pooled"]["tissue"]["pixels"]
    oracle = scores["tile-constant oracle [oracle]"]
    assert oracle["mean"]["seam_position"] == pytest.approx(1.0)
    assert "skipped" in " ".join(scores["tiny-base (baseline)"]["ablation_notes"])
