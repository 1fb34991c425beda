"""Trainer and evaluation on a tiny synthetic slide: loss falls, checkpoints, exact resume."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from napari_sgnet.cli import evaluate_cmd, train_cmd
from napari_sgnet.config import ModelConfig
from napari_sgnet.inference.testing_torch import tiny_sgnet_config
from napari_sgnet.model import load_checkpoint
from napari_sgnet.training.augment import AugmentConfig
from napari_sgnet.training.config import TrainConfig
from napari_sgnet.training.dataset import SlideSampler
from napari_sgnet.training.evaluate import evaluate_model
from napari_sgnet.training.sources import parse_seeds, synthetic_source
from napari_sgnet.training.state import read_trainer_state
from napari_sgnet.training.trainer import TrainError, train

SIZE = 4096  # level 3 (4 µm/px) is 512 x 512
TINY = tiny_sgnet_config()


def tiny_train_config(**changes) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        val_every=4,
        checkpoint_every=4,
        device="cpu",
        num_threads=1,
        seed=3,
        augment=AugmentConfig(hed_scale=0.02, hed_bias=0.01),
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def slides():
    torch.set_num_threads(1)
    # generator v1: the tests below rely on v1 labelling every pixel (glass as stroma)
    train_src = synthetic_source(3, SIZE, min_level_size=256, version=1)
    val_src = synthetic_source(104, SIZE, min_level_size=256, version=1)
    return train_src, val_src


@pytest.fixture(scope="module")
def trained(slides, tmp_path_factory):
    train_src, val_src = slides
    out = tmp_path_factory.mktemp("runs") / "tiny"
    events = []
    result = train(
        TINY,
        [SlideSampler(train_src, TINY)],
        out,
        tiny_train_config(),
        val_sources=[val_src],
        data_description={"slides": "tiny"},
        progress=events.append,
    )
    return out, result, events


def test_train_writes_checkpoints_with_provenance_and_metrics(trained):
    out, result, events = trained
    assert [e.step for e in events] == list(range(1, 9))
    assert events[3].val is not None and events[0].val is None
    assert all(np.isfinite(e.loss) and e.eta_s >= 0 for e in events)
    for name in ("step-000004", "step-000008", "last", "best"):
        assert (out / name / "model.safetensors").is_file(), name
        assert (out / name / "optimizer.safetensors").is_file(), name
    model = load_checkpoint(out / "best")
    cfg = model.config
    assert cfg.training["steps"] in (4, 8) and cfg.training["data"] == {"slides": "tiny"}
    assert cfg.training["torch_version"] == torch.__version__
    assert cfg.training["device"] == "cpu" and cfg.training["wall_time_s"] >= 0
    held_out = cfg.metrics["held_out"]
    assert 0 <= held_out["miou"] <= 1 and set(held_out["iou"]) == set(TINY.palette.names)
    assert result.steps == 8 and read_trainer_state(out / "last")["step"] == 8
    with pytest.raises(TrainError, match="already holds"):
        train(TINY, [], out, tiny_train_config())


def test_resume_continues_exactly_like_an_uninterrupted_run(trained, slides, tmp_path):
    out, _, _ = trained
    train_src, _ = slides
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(out / "step-000004", resumed / "last")
    steps_seen = []
    train(
        TINY,
        [SlideSampler(train_src, TINY)],
        resumed,
        tiny_train_config(val_every=0),
        resume=True,
        progress=lambda p: steps_seen.append(p.step),
    )
    assert steps_seen == [5, 6, 7, 8]
    a = load_checkpoint(out / "last").state_dict()
    b = load_checkpoint(resumed / "last").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_loss_falls_on_a_tiny_slide(slides, tmp_path):
    train_src, _ = slides
    baseline = TINY.replace(use_context=False, name="tiny-baseline")
    losses = []
    train(
        baseline,
        [SlideSampler(train_src, baseline)],
        tmp_path / "b",
        tiny_train_config(
            steps=40, val_every=0, checkpoint_every=0, lr=3e-3, augment=AugmentConfig.none()
        ),
        progress=lambda p: losses.append(p.loss),
    )
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_evaluate_model_and_cli_table(trained, slides, tmp_path, capsys, monkeypatch):
    out, _, _ = trained
    _, val_src = slides
    model = load_checkpoint(out / "best")
    res = evaluate_model(model, model.config, [val_src])
    assert res.confusion.total == 512 * 512  # the generator labels every pixel
    assert res.seams.border_pairs > 0

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    evaluate_cmd.register(sub)
    json_path = tmp_path / "scores.json"
    best = tmp_path / "best"
    shutil.copytree(out / "best", best)
    args = parser.parse_args(
        [
            "evaluate",
            "--synthetic-seed",
            "104",
            "--model",
            str(best),
            "--model",
            str(out / "step-000004"),
            "--simple",
            "--json",
            str(json_path),
            "--record",
        ]
    )
    monkeypatch.setattr(evaluate_cmd, "_slides", lambda a: [val_src])  # the fixture's pyramid
    assert evaluate_cmd.run(args) == 0
    printed = capsys.readouterr().out
    assert "tissue mIoU" in printed and "seam ratio" in printed and "tiny (SGNet)" in printed
    scores = json.loads(json_path.read_text())
    assert [r["kind"] for r in scores.values()] == ["model", "model", "trivial", "oracle"]
    first = next(iter(scores.values()))
    assert first["miou"] == pytest.approx(res.confusion.miou(), abs=1e-6)
    recorded = ModelConfig.load(best / "config.json").metrics["test"]
    assert recorded["miou"] == first["miou"] and "held_out" in load_checkpoint(best).config.metrics


def test_train_cli_end_to_end(slides, tmp_path, monkeypatch, capsys):
    train_src, val_src = slides
    from napari_sgnet.training import sources

    made = {3: train_src, 104: val_src}
    monkeypatch.setattr(sources, "synthetic_source", lambda seed, size, **kw: made[seed])
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    train_cmd.register(sub)
    argv = [
        "train",
        "--out",
        str(tmp_path / "cli"),
        "--synthetic-train-seeds",
        "3",
        "--synthetic-val-seeds",
        "104",
        "--arch",
        "fcn_lite",
        "--baseline",
        "--patch-size",
        "64",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--val-every",
        "3",
        "--checkpoint-every",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    assert train_cmd.run(parser.parse_args(argv)) == 0
    assert "held-out mIoU" in capsys.readouterr().out
    cfg = ModelConfig.load(tmp_path / "cli" / "best" / "config.json")
    assert not cfg.use_context and cfg.training["data"]["synthetic"]["train_seeds"] == [3]
    overlap = parser.parse_args(
        [*argv[:3], "--synthetic-train-seeds", "3", "--synthetic-val-seeds", "3"]
    )
    assert train_cmd.run(overlap) == 2
    assert "overlap" in capsys.readouterr().err


def test_parse_seeds():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds(None) == [] and parse_seeds("") == []


def test_engine_with_overlap_0_reproduces_the_simple_tiler(trained, slides, tmp_path):
    """The evaluation protocol and the inference engine agree pixel for pixel."""
    from napari_sgnet.geometry import Box
    from napari_sgnet.inference.engine import predict_slide
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.training.evaluate import predict_level

    out, _, _ = trained
    _, val_src = slides
    model = load_checkpoint(out / "best")
    simple = predict_level(model, model.config, val_src.image)
    store = tmp_path / "store.zarr"
    predict_slide(
        val_src.image, store, str(out / "best"), overlap=0, skip_glass=False, device="cpu"
    )
    labels = LabelStore.open(store, mode="r")
    engine = labels.read_labels(Box(0, 0, labels.width, labels.height))
    np.testing.assert_array_equal(engine, simple)
