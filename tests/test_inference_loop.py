"""The one tile loop and its sinks: store == array, scorer == metrics of the array, evaluation
and held-out scoring through the loop equal independent computations, no import circle."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tomllib
import torch
from torch import nn

from napari_sgnet.config import ModelConfig
from napari_sgnet.geometry import Box, chunk_aligned_tiles
from napari_sgnet.inference.loop import iter_batches, run_tiles
from napari_sgnet.inference.plan import grid_plan, make_plan
from napari_sgnet.inference.sinks import ArraySink, ScoreSink, StoreSink
from napari_sgnet.inference.testing import PixelRulePredictor, expected_pixel_rule, pattern_slide
from napari_sgnet.inference.testing_torch import tiny_sgnet_config
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD, read_local_and_context
from napari_sgnet.metrics import ConfusionMatrix, grid_borders, seam_counts
from napari_sgnet.model import build_model
from napari_sgnet.model.runtime import normalise
from napari_sgnet.palette import GLEASON
from napari_sgnet.training.dataset import SlideSource
from napari_sgnet.training.evaluate import evaluate_model, predict_level, score_prediction
from napari_sgnet.training.finetune.correction_types import CorrectionSet
from napari_sgnet.training.finetune.evaluate import evaluate_held_out
from napari_sgnet.training.finetune.splits import Region
from napari_sgnet.training.sources import synthetic_source

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def slide() -> Pyramid:
    return pattern_slide(333, 257, seed=5, mpp=0.5)


def _work(plan, glass_every: int = 0):
    return [(idx, bool(glass_every and i % glass_every == 0)) for i, idx in enumerate(plan.tiles)]


def _random_truth(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, size=(shape[0] // 8 + 1, shape[1] // 8 + 1), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[: shape[0], : shape[1]]


# ------------------------------------------------------------------------------- the loop


def test_iter_batches_counts_tissue_and_ramps():
    work = [((0, i), i % 3 == 0) for i in range(20)]
    batches = list(iter_batches(work, 4))
    assert [item for b in batches for item in b] == work
    assert all(sum(not g for _, g in b) == 4 for b in batches[:-1])
    ramped = [sum(not g for _, g in b) for b in iter_batches(work, 4, ramp=True)]
    assert ramped[:3] == [1, 2, 4]


@pytest.mark.parametrize(("overlap", "glass_every", "order"), [(0, 0, "raster"), (6, 4, "center")])
def test_array_sink_equals_store_sink_level0(tmp_path, slide, overlap, glass_every, order):
    predictor = PixelRulePredictor(64)
    plan = make_plan(slide, predictor.info, overlap=overlap, order=order)
    work = _work(plan, glass_every)
    store = LabelStore.create(
        tmp_path / "s.zarr", slide=slide, palette=GLEASON, base_downsample=1.0, tile=plan.tile
    )
    store_sink = StoreSink(store, plan, glass_label=1)
    for _ in run_tiles(slide, plan, predictor, store_sink, work, batch_size=3):
        store_sink.flush()
    array_sink = ArraySink(plan, glass_label=1, confidence=True)
    list(run_tiles(slide, plan, predictor, array_sink, work, batch_size=5, readers=1))
    full = Box(0, 0, plan.width, plan.height)
    np.testing.assert_array_equal(store.read_labels(full), array_sink.labels)
    np.testing.assert_array_equal(store.read_confidence(full), array_sink.confidence)
    # and both are the pixel rule outside the glass tiles
    labels, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    glass = np.zeros(labels.shape, bool)
    for idx, g in work:
        if g:
            glass[plan.tile_box(idx).slices()] = True
    np.testing.assert_array_equal(array_sink.labels[~glass], labels[~glass])
    assert (array_sink.labels[glass] == 1).all() and (array_sink.confidence[glass] == 255).all()


@pytest.mark.parametrize(("overlap", "order"), [(0, "raster"), (0, "center"), (5, "center")])
def test_score_sink_equals_metrics_of_the_array_sink(slide, overlap, order):
    predictor = PixelRulePredictor(48, context_factor=None)
    plan = make_plan(slide, predictor.info, overlap=overlap, order=order)
    work = _work(plan, 5)
    truth = _random_truth((plan.height, plan.width))
    array_sink = ArraySink(plan, glass_label=None)
    list(run_tiles(slide, plan, predictor, array_sink, work, batch_size=4, ramp=True))
    scorer = ScoreSink(plan, truth, ConfusionMatrix(5), seams=True, glass_label=None)
    list(run_tiles(slide, plan, predictor, scorer, work, batch_size=4, ramp=True))
    pred = array_sink.labels
    expected = ConfusionMatrix(5).update(truth, pred)
    np.testing.assert_array_equal(scorer.confusion.matrix, expected.matrix)
    seams = seam_counts(
        pred,
        grid_borders(plan.width, plan.tile),
        grid_borders(plan.height, plan.tile),
        mask=truth != 0,
    )
    assert scorer.seams == seams and seams.border_pairs > 0 and seams.interior_diff > 0
    assert not scorer._edges  # every tile met all its neighbours: no edge kept


def test_score_sink_with_target_boxes(slide):
    predictor = PixelRulePredictor(32)
    plan = make_plan(slide, predictor.info)
    truth = _random_truth((plan.height, plan.width), seed=2)
    boxes = [Box(10, 20, 70, 50), Box(200, 100, 133, 157), Box(40, 30, 20, 20)]  # two overlap
    tiles = sorted(
        {t for b in boxes for t in chunk_aligned_tiles(plan.width, plan.height, 32, b)},
        key=lambda t: (t.y, t.x),
    )
    work = [((t.y // 32, t.x // 32), False) for t in tiles]
    scorer = ScoreSink(plan, [(b, truth[b.slices()]) for b in boxes], ConfusionMatrix(5))
    list(run_tiles(slide, plan, predictor, scorer, work, batch_size=4))
    pred, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    expected = ConfusionMatrix(5)
    for b in boxes:
        expected.update(truth[b.slices()], pred[b.slices()])
    np.testing.assert_array_equal(scorer.confusion.matrix, expected.matrix)
    assert scorer.seams.border_pairs == 0  # not asked for


# ------------------------------------------------------------------- evaluation through it

CFG = tiny_sgnet_config()


class RedBins(nn.Module):
    """Per-pixel model: class k where the red value is nearest ``64 k + 31.7`` (no ties)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        centres = (64.0 * torch.arange(config.num_classes) + 31.7) / 255.0
        self.register_buffer("centres", (centres - config.mean[0]) / config.std[0])

    def forward(self, local: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        if self.config.use_context:
            assert context is not None and context.shape[-1] == 2 * local.shape[-1]
        return {"logits": -(local[:, :1] - self.centres.view(1, -1, 1, 1)).abs()}


def red_bins(rgb: np.ndarray, num_classes: int) -> np.ndarray:
    centres = 64.0 * np.arange(num_classes) + 31.7
    return (np.abs(rgb[..., :1].astype(np.float64) - centres).argmin(axis=-1) + 1).astype(np.uint8)


def reference_predict_level(
    model: nn.Module, config: ModelConfig, image: Pyramid, level: int, tile: int
) -> np.ndarray:
    """The pre-loop evaluation tiler, written out plainly: per-tile reads, one forward each."""
    width, height = image.level_size(level)
    out = np.zeros((height, width), np.uint8)
    model.eval()
    with torch.no_grad():
        for t in chunk_aligned_tiles(width, height, tile):
            local, context, _ = read_local_and_context(
                image,
                level,
                Box(t.x, t.y, tile, tile),
                config.context_factor,
                pad_value=GLASS_PAD,
            )
            x = normalise(torch.from_numpy(local[None, ..., :3]).permute(0, 3, 1, 2), config)
            c = normalise(torch.from_numpy(context[None, ..., :3]).permute(0, 3, 1, 2), config)
            logits = model(x, c if config.use_context else None)["logits"]
            out[t.slices()] = (logits.argmax(dim=1)[0] + 1).to(torch.uint8).numpy()[: t.h, : t.w]
    return out


@pytest.fixture(scope="module")
def source() -> SlideSource:
    torch.set_num_threads(1)
    return synthetic_source(104, 2048, min_level_size=128)


def _truth(src: SlideSource, config: ModelConfig) -> tuple[int, np.ndarray]:
    from napari_sgnet.training.dataset import working_views

    img, lab = working_views(src.image, src.labels, config.mpp)
    assert img.exact and lab.exact  # the slide has levels at the model's µm/px
    return img.level, np.asarray(lab.array)


def test_evaluation_equals_a_numpy_computation(source):
    model = RedBins(CFG)
    level, truth = _truth(source, CFG)
    rgb = np.asarray(source.image.levels[level])
    expected = red_bins(rgb, CFG.num_classes)
    np.testing.assert_array_equal(predict_level(model, CFG, source.image, level), expected)
    res = evaluate_model(model, CFG, [source], batch_size=3)
    cm = ConfusionMatrix(CFG.num_classes).update(truth, expected)
    np.testing.assert_array_equal(res.confusion.matrix, cm.matrix)
    h, w = expected.shape
    seams = seam_counts(expected, grid_borders(w, 64), grid_borders(h, 64), mask=truth != 0)
    assert res.seams == seams and res.confusion.total == int((truth != 0).sum())


@pytest.mark.parametrize("use_context", [True, False])
def test_evaluation_of_sgnet_equals_the_plain_tiler(source, use_context):
    config = CFG if use_context else CFG.replace(use_context=False, name="tiny-baseline")
    torch.manual_seed(0)
    model = build_model(config)
    level, truth = _truth(source, config)
    reference = reference_predict_level(model, config, source.image, level, 64)
    assert len(np.unique(reference)) > 1
    np.testing.assert_array_equal(predict_level(model, config, source.image, level), reference)
    res = evaluate_model(model, config, [source])
    old = score_prediction(reference, truth, config, 64)
    np.testing.assert_array_equal(res.confusion.matrix, old.confusion.matrix)
    assert res.seams == old.seams and res.to_dict() == old.to_dict()
    other = reference_predict_level(model, config, source.image, level, 96)
    np.testing.assert_array_equal(predict_level(model, config, source.image, level, 96), other)


def test_held_out_store_scoring_equals_scoring_the_predicted_level():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(200, 168, 3), dtype=np.uint8)
    slide = Pyramid((da.from_array(image, chunks=(64, 64, 3)),), (1.0,), mpp=2.0, name="toy")
    config = tiny_sgnet_config(patch_size=32, sci_heads=4, mpp=2.0, name="toy")
    torch.manual_seed(1)
    model = build_model(config)
    truth = _random_truth((200, 168), seed=4)
    boxes = [Box(0, 0, 40, 40), Box(100, 40, 50, 70), Box(130, 150, 38, 50)]
    regions = [Region(0, b, truth[b.slices()].copy()) for b in boxes]
    cs = CorrectionSet("store", Path("toy.zarr"), regions, image=slide, level=0)
    seen = []
    model.train()  # fine-tuning scores a model in training: its mode is restored
    res = evaluate_held_out(
        model,
        config,
        [cs],
        regions,
        torch.device("cpu"),
        batch_size=5,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert model.training
    pred = reference_predict_level(model, config, slide, 0, 32)
    cm = ConfusionMatrix(config.num_classes, config.palette.names)
    for r in regions:
        cm.update(r.labels, pred[r.box.slices()])
    tiles = {t for b in boxes for t in chunk_aligned_tiles(168, 200, 32, b)}
    assert res == {**cm.to_dict(), "tiles": len(tiles), "regions": 3}
    assert seen[-1] == (len(tiles), len(tiles))


def test_grid_plan_is_make_plans_grid(slide):
    info = PixelRulePredictor(64, mpp=1.0).info
    plan = make_plan(slide, info, overlap=4, region=Box(30, 40, 300, 200))
    again = grid_plan(
        plan.width,
        plan.height,
        patch=64,
        context_factor=2.0,
        level=plan.level,
        downsample=plan.downsample,
        overlap=4,
        region=plan.region,
    )
    assert again == plan


# -------------------------------------------------------------------------- no import circle


LOWER = [
    "napari_sgnet.inference.engine",
    "napari_sgnet.inference.lifecycle",
    "napari_sgnet.inference.loop",
    "napari_sgnet.inference.sinks",
]


def test_engine_loop_and_sinks_never_import_distributed():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("napari_sgnet")
    for module in LOWER:
        assert graph.find_shortest_chain(module, "napari_sgnet.inference.distributed") is None
    imported = graph.find_modules_directly_imported_by("napari_sgnet.inference.distributed")
    assert "napari_sgnet.inference.lifecycle" in imported
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    kept = [
        c
        for c in contracts["contracts"]
        if c.get("forbidden_modules") == ["napari_sgnet.inference.distributed"]
    ]
    assert kept and set(LOWER) <= set(kept[0]["source_modules"])
