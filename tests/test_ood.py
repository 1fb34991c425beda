"""The out-of-distribution check: statistics in config.json, the verdicts, the CLI line, the
store and export records, and the dock's warning label (tiny models, small slides)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_sgnet.cli.main import main  # noqa: E402
from napari_sgnet.config import ModelConfig, OODReference  # noqa: E402
from napari_sgnet.inference.ood import (  # noqa: E402
    CANNOT_JUDGE,
    OODMonitor,
    OODResult,
    colour_descriptors,
)
from napari_sgnet.inference.ood_check import check_slide  # noqa: E402
from napari_sgnet.io.labelstore import LabelStore  # noqa: E402
from napari_sgnet.model import build_model, save_checkpoint  # noqa: E402
from napari_sgnet.synthetic import SynthConfig, generate_slide  # noqa: E402

SIZE = 2048  # level-0 px at 0.5 µm/px; 512 px at the tiny model's 2 µm/px
#: Generator v1: a 1 mm v2 slide has no needle core (all glass), and the thresholds and
#: verdicts below were calibrated on v1's tissue blobs.
VERSION = 1
HELD_OUT = (300, 301)  # calibration seeds; 302 is the in-distribution test slide


def _tiny_config(name: str = "tiny-ood") -> ModelConfig:
    return ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=2.0, sci_width=32,
                       sci_heads=2, sci_blocks=1, name=name)


def _slide(seed: int, shift: float = 0.0):
    return generate_slide(SynthConfig(width=SIZE, seed=seed, stain_shift=shift, version=VERSION,
                                      name=f"synthetic-{seed}-shift{shift:g}")).image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny SGNet with calibrated statistics, and the same weights without them."""
    from napari_sgnet.training.dataset import SlideSampler
    from napari_sgnet.training.ood_stats import add_ood_statistics
    from napari_sgnet.training.sources import synthetic_source

    torch.manual_seed(0)
    cfg = _tiny_config()
    plain = save_checkpoint(build_model(cfg), tmp_path_factory.mktemp("plain"))
    judged = tmp_path_factory.mktemp("judged") / "model"
    shutil.copytree(plain, judged)
    samplers = [SlideSampler(synthetic_source(s, SIZE, version=VERSION), cfg) for s in (0, 1)]
    ref = add_ood_statistics(judged, samplers, [_slide(s) for s in HELD_OUT], n_tiles=64,
                             tiles_per_slide=16, description={"held_out_seeds": list(HELD_OUT)})
    return {"plain": plain, "judged": judged, "reference": ref}


def test_statistics_round_trip_through_config_json(models):
    ref = models["reference"]
    loaded = ModelConfig.load(models["judged"] / "config.json")
    assert loaded.ood == ref
    assert loaded.ood.calibration["held_out_seeds"] == list(HELD_OUT)
    assert loaded.ood.colour_threshold > 0 and loaded.ood.feature_threshold > 0
    assert len(loaded.ood.feature_mean) == len(loaded.ood.feature_std) > 0
    assert OODReference.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    # the statistics are not part of the architecture (the weights' model id is unchanged)
    plain = ModelConfig.load(models["plain"] / "config.json")
    assert plain.ood is None
    assert plain.architecture_hash() == loaded.architecture_hash()
    # an old config.json without the key still loads
    data = loaded.to_dict()
    data.pop("ood")
    assert ModelConfig.from_dict(data).ood is None


def test_in_distribution_below_and_stain_shift_above(models):
    same = check_slide(_slide(302), models["judged"], device="cpu")
    shifted = check_slide(_slide(302, 2.0), models["judged"], device="cpu")
    assert same.judged and not same.out_of_distribution, same.message()
    assert shifted.out_of_distribution, shifted.message()
    assert shifted.colour > 2 * same.colour
    assert same.colour <= same.colour_threshold < shifted.colour
    assert same.tiles > 0 and same.feature is not None


def test_missing_statistics_cannot_judge(models):
    result = check_slide(_slide(302, 2.0), models["plain"], device="cpu")
    assert result.status == CANNOT_JUDGE and not result.judged
    assert "cannot judge" in result.message() and "statistics" in result.reason
    monitor = OODMonitor(None)
    monitor.add(np.full((2, 64, 64, 3), 128, np.uint8))
    assert monitor.result().status == CANNOT_JUDGE


def test_glass_tiles_are_not_judged(models):
    glass = np.full((3, 64, 64, 3), 235, np.uint8)
    _, usable = colour_descriptors(glass)
    assert not usable.any()
    monitor = OODMonitor(models["reference"])
    monitor.add(glass)
    assert monitor.result().status == CANNOT_JUDGE


def test_cli_line_store_and_exports_record_it(models, tmp_path, capsys):
    from napari_sgnet.app.exports import run_export
    from napari_sgnet.io.writers import write_ome_tiff

    slide = tmp_path / "shifted.ome.tif"
    write_ome_tiff(_slide(303, 2.0), slide, compression="zlib")
    out = tmp_path / "stores"
    code = main(["predict", str(slide), "--model", str(models["judged"]), "--out", str(out),
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "out of distribution" in ln]
    assert lines and "warning" in lines[0] and "threshold" in lines[0], lines
    store_path = next(out.glob("*.sgnet.zarr"))
    record = LabelStore.open(store_path).requests[-1]["ood"]
    assert record["status"] == "out of distribution" and record["scope"] == "slide"
    assert record["colour"] > record["colour_threshold"]
    store = LabelStore.open(store_path)
    geo = run_export("geojson", store, tmp_path / "x.geojson")
    assert json.loads(geo.read_text())["napari_sgnet"]["provenance"]["ood"] == record
    zarr_out = run_export("ome-zarr", store, tmp_path / "x.labels.ome.zarr")
    attrs = json.loads((zarr_out / "zarr.json").read_text())["attributes"]
    assert attrs["napari_sgnet"]["provenance"]["ood"] == record
    from napari_sgnet.io.exporters.tiff import read_tiff_record

    tif = run_export("tiff", store, tmp_path / "x.labels.tif")
    assert read_tiff_record(tif)["provenance"]["ood"] == record


def test_cli_without_statistics_says_cannot_judge(models, tmp_path, capsys):
    from napari_sgnet.io.writers import write_ome_tiff

    slide = tmp_path / "plain.ome.tif"
    write_ome_tiff(_slide(302), slide, compression="zlib")
    code = main(["predict", str(slide), "--model", str(models["plain"]), "--out",
                 str(tmp_path / "s"), "--device", "cpu", "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert OODResult.from_dict(summary["ood"]).status == CANNOT_JUDGE


@pytest.mark.gui
def test_dock_shows_the_warning(models, make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("napari")
    from napari_sgnet._napari.layers import image_layer_data
    from napari_sgnet._qt.widget import SGNetWidget

    viewer = make_napari_viewer(show=True)
    slide = _slide(302, 2.0)
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(viewer, model=models["judged"], store_dir=tmp_path / "stores")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    with qtbot.waitSignal(widget.state.events.ood, timeout=60_000,
                          check_params_cb=lambda r: r is not None):
        widget.controller.attach()
    assert widget.state.ood_slide.out_of_distribution
    text = widget.ood_label.text()
    assert "Warning" in text and "out of distribution" in text, text
    assert widget.ood_label.isVisibleTo(widget)
    widget.shutdown()


def test_trainer_saves_calibrated_statistics(tmp_path):
    from napari_sgnet.registry import weights_digest
    from napari_sgnet.training.config import TrainConfig
    from napari_sgnet.training.dataset import SlideSampler
    from napari_sgnet.training.sources import synthetic_source
    from napari_sgnet.training.trainer import train

    cfg = _tiny_config("tiny-trained")
    tc = TrainConfig(steps=2, batch_size=2, warmup_steps=1, val_every=0, checkpoint_every=0,
                     device="cpu", num_threads=1, seed=1)
    sampler = SlideSampler(synthetic_source(0, SIZE, version=VERSION), cfg)
    result = train(cfg, [sampler], tmp_path / "run", tc,
                   val_sources=[synthetic_source(300, SIZE, version=VERSION)], ood_tiles=32)
    for folder in {result.best_dir, result.last_dir}:
        ood = ModelConfig.load(folder / "config.json").ood
        assert ood is not None and ood.colour_threshold is not None
        assert ood.calibration["source"] == "held-out slides"
        assert ood.calibration["held_out_slides"] == ["synthetic-300"]
        assert ood.weights == weights_digest(folder / "model.safetensors")[:12]
    assert result.config.ood is not None
