"""The headless ``napari-sgnet demo``: predict a region, export, say where everything is."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_headless_demo_writes_store_and_exports(tmp_path, capsys):
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.launch import main
    from napari_sgnet.model import build_model, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=1.0, sci_width=32,
                      sci_heads=2, sci_blocks=1, name="tiny")
    model = save_checkpoint(build_model(cfg), tmp_path / "model")
    out = tmp_path / "out"
    code = main(["demo", "--headless", "--model", str(model), "--out", str(out), "--size", "200"])
    assert code == 0
    text = capsys.readouterr().out
    store_path = out / "CMU-1-Small-Region.sgnet.zarr"  # napari_sgnet.app.store_paths
    assert f"napari {store_path}" in text
    assert "cannot judge" in text  # a model without training statistics: never a silent pass
    store = LabelStore.open(store_path, mode="r")
    assert store.requests[-1]["status"] == "completed"
    from napari_sgnet.geometry import Box, scale_box

    x, y = (2220 - 200) // 2, (2967 - 200) // 2  # the central region, slide pixels
    region = scale_box(Box(x, y, 200, 200), 1 / store.base_downsample)
    assert store.read_labels(region).min() >= 1
    geo = json.loads((out / "CMU-1-Small-Region.geojson").read_text())
    assert geo["features"]
    import tifffile

    tif = tifffile.imread(out / "CMU-1-Small-Region.labels.tif")  # at the slide's level 0
    b = int(store.base_downsample)
    level0 = store.read_labels(Box(0, 0, store.width, store.height))
    assert tif.shape == (2967, 2220)
    assert np.array_equal(tif, np.repeat(np.repeat(level0, b, 0), b, 1)[:2967, :2220])
    assert (out / "CMU-1-Small-Region.labels.ome.zarr").is_dir()


def test_headless_demo_with_the_bundled_model_warns_that_the_sample_is_out_of_distribution(
    tmp_path, capsys
):
    """The main job: the bundled SGNet (synthetic training data) on the real CMU sample slide
    says, in its summary, that the slide is out of distribution."""
    from napari_sgnet.launch import main

    code = main(["demo", "--headless", "--out", str(tmp_path / "out"), "--size", "512"])
    assert code == 0
    text = capsys.readouterr().out
    line = next(t for t in text.splitlines() if "out of distribution" in t)
    assert line.startswith("CMU-1-Small-Region.svs: warning:")


def test_headless_demo_without_a_model_says_so(tmp_path, capsys, monkeypatch):
    from napari_sgnet.launch import main

    code = main(["demo", "--headless", "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "nope" in capsys.readouterr().err
