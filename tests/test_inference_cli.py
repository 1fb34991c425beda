"""``napari-sgnet predict``: stores, summaries, refusals and exit codes."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tifffile

from napari_sgnet.cli import predict_cmd
from napari_sgnet.cli.main import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK
from napari_sgnet.io.labelstore import LabelStore


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="napari-sgnet")
    predict_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    tifffile.imwrite(root / "slide.tif", img, tile=(64, 64), photometric="rgb")
    for seed, name in ((0, "model_a"), (1, "model_b")):
        torch.manual_seed(seed)
        cfg = ModelConfig(
            general_branch="fcn_lite",
            patch_size=64,
            mpp=None,
            sci_width=32,
            sci_heads=2,
            sci_blocks=1,
        )
        save_checkpoint(build_model(cfg), root / name)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))


def test_store_names():
    """``predict`` names stores with the app's one rule (napari_sgnet.app.store_paths)."""
    from pathlib import Path

    from napari_sgnet.app.store_paths import store_path_for

    assert store_path_for(Path("a/b/CMU-1.svs"), Path("o")) == Path("o/CMU-1.sgnet.zarr")
    assert store_path_for(Path("x.ome.zarr"), Path("o")) == Path("o/x.sgnet.zarr")
    assert store_path_for(Path("synthetic-8192-s7.ome.tif"), Path("o")) == Path(
        "o/synthetic-8192-s7.sgnet.zarr"
    )


def test_predict_writes_a_store_and_a_summary(files, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        str(files / "slide.tif"),
        "--model",
        str(files / "model_a"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--overlap",
        "8",
        "--no-progress",
    ]
    assert cli(*args, "--json") == EXIT_OK
    summary = json.loads(capsys.readouterr().out)[0]
    n_tiles = 4 * 6  # 192 x 256 px in 48-px tiles (64-px patches, 8-px overlap)
    assert summary["status"] == "completed"
    assert summary["predicted"] + summary["glass"] == n_tiles
    assert summary["store"] == str(out / "slide.sgnet.zarr")
    store = LabelStore.open(out / "slide.sgnet.zarr")
    store.validate(deep=True)
    assert (store.done_map() > 0).all()
    # Same slide and model again: recomputed without complaint; --resume: nothing to do.
    assert cli(*args, "--region", "0,0,10,10") == EXIT_OK
    assert "Mpix/s" in capsys.readouterr().out
    assert cli(*args, "--resume", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["cached"] == n_tiles


def test_refuses_to_clobber_another_models_store(files, tmp_path, capsys):
    out = tmp_path / "out"
    base = [
        str(files / "slide.tif"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--region",
        "0,0,64,64",
    ]
    assert cli(*base, "--model", str(files / "model_a")) == EXIT_OK
    capsys.readouterr()
    assert cli(*base, "--model", str(files / "model_b")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "holds predictions of model" in err and "slide.sgnet.zarr" in err
    assert cli(*base, "--model", str(files / "model_b"), "--resume") == EXIT_OK
    assert cli(*base, "--model", str(files / "model_a"), "--overwrite") == EXIT_OK


def test_bad_input_exit_codes(files, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out"), "--model", str(files / "model_a"), "--no-progress"]
    assert cli(str(tmp_path / "missing.svs"), *out) == EXIT_BAD_INPUT
    assert "missing.svs" in capsys.readouterr().err
    assert cli(str(files / "slide.tif"), *out, "--region", "5000,5000,10,10") == EXIT_BAD_INPUT
    assert "outside the slide" in capsys.readouterr().err
    assert (
        cli(
            str(files / "slide.tif"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "nomodel"),
        )
        == EXIT_BAD_INPUT
    )
    assert "checkpoint folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(str(files / "slide.tif"), *out, "--region", "1,2,3")
    assert exc.value.code == 2


def test_default_model_is_the_bundled_one(files, tmp_path):
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import bundled_model_dir

    bundled = ModelConfig.load(bundled_model_dir("sgnet") / "config.json")
    out = tmp_path / "o"
    # the bundled model has a µm/px and the file none: without --mpp it is refused (exit 2)
    assert cli(str(files / "slide.tif"), "--out", str(out), "--no-progress") == EXIT_BAD_INPUT
    assert not out.exists() or not list(out.glob("*.sgnet.zarr"))
    slide = str(files / "slide.tif")
    assert cli(slide, "--out", str(out), "--no-progress", "--mpp", "0.5") == EXIT_OK
    (store_path,) = out.glob("*.sgnet.zarr")
    model = LabelStore.open(store_path, mode="r").model
    assert model["name"] == bundled.name
    assert model["patch_size"] == bundled.patch_size


def test_ctrl_c_exits_130_and_leaves_a_consistent_store(files, tmp_path, monkeypatch, capsys):
    import napari_sgnet.inference as inference

    real = inference.run_inference

    def interrupted(request, **kwargs):
        events = real(request, **kwargs)
        try:
            yield next(events)
            yield next(events)
            raise KeyboardInterrupt
        finally:
            events.close()

    monkeypatch.setattr(inference, "run_inference", interrupted)
    out = tmp_path / "out"
    code = cli(
        str(files / "slide.tif"),
        "--out",
        str(out),
        "--model",
        str(files / "model_a"),
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == EXIT_CANCELLED
    assert "run the same command again" in capsys.readouterr().err  # it resumes by default
    store = LabelStore.open(out / "slide.sgnet.zarr")
    store.validate(deep=True)
    assert store.requests[-1]["status"] == "cancelled"
    assert 0 < (store.done_map() > 0).sum() < store.done_map().size
