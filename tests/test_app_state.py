"""The Qt-free app core: AppState events, the store-path rule, the app's runs, the export table.

Includes the join the app and the CLI share: a store written by ``napari-sgnet predict`` is
the store the app opens for that slide, without making a new one.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_sgnet.app.exports import EXPORTS, default_export_path, run_export
from napari_sgnet.app.review import ReviewSession
from napari_sgnet.app.runs import ViewportRuns
from napari_sgnet.app.state import AppState, open_review_session, state_for
from napari_sgnet.app.store_paths import (
    STORE_DIR_ENV,
    find_store_path,
    legacy_store_path,
    slide_stem,
    store_path_for,
)
from napari_sgnet.errors import OptionError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.models import describe_model
from napari_sgnet.inference.testing import PixelRulePredictor, expected_pixel_rule, pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.palette import GLEASON, Palette


class Recorder:
    """Every event of an AppState, in order, as ``(name, value)``."""

    def __init__(self, state: AppState) -> None:
        self.seen: list[tuple[str, object]] = []
        for name in ("model", "model_error", "device", "slide", "store", "session", "palette",
                     "offered"):
            getattr(state.events, name).connect(
                lambda value, n=name: self.seen.append((n, value))
            )

    def names(self) -> list[str]:
        return [n for n, _ in self.seen]


@pytest.fixture(autouse=True)
def _no_store_dir_env(monkeypatch):
    monkeypatch.delenv(STORE_DIR_ENV, raising=False)


@pytest.fixture
def slide():
    return pattern_slide(300, 200, mpp=0.5, levels=2, name="pattern")


# --------------------------------------------------------------------------- AppState
def test_model_choice_emits_model_and_follows_its_palette():
    state = AppState()
    rec = Recorder(state)
    model = PixelRulePredictor(64, mpp=1.0)
    assert state.set_model(model)
    assert rec.names() == ["palette", "model"]
    assert state.model.info.model_id == model.info.model_id and state.model_source is model
    assert state.palette == model.info.palette and not state.user_palette

    # a palette the person loads stays when the model changes
    mine = Palette.from_dict({"name": "mine", "classes": [
        {"name": f"c{i}", "color": [10 * i, 0, 0]} for i in range(4)]})
    state.set_palette(mine)
    rec.seen.clear()
    assert state.set_model(PixelRulePredictor(64, mpp=1.0, model_id="other"))
    assert rec.names() == ["model"] and state.palette is mine and state.user_palette


def test_a_bad_model_is_reported_not_raised(tmp_path):
    state = AppState()
    state.set_model(PixelRulePredictor(64))
    rec = Recorder(state)
    assert not state.set_model(tmp_path / "missing")
    assert rec.names() == ["model_error"] and "missing" in rec.seen[0][1]
    assert state.model is None and "missing" in state.model_error


def test_slide_session_store_and_device_events(tmp_path, slide):
    state = AppState(store_dir=tmp_path)
    rec = Recorder(state)
    state.set_slide(slide, scale=(0.5, 0.5), translate=(1.0, 2.0))
    assert rec.seen == [("slide", slide), ("store", tmp_path / "pattern.sgnet.zarr")]
    assert state.slide_transform == ((0.5, 0.5), (1.0, 2.0))

    store = LabelStore.create(tmp_path / "elsewhere.sgnet.zarr", slide=slide, palette=GLEASON,
                              tile=64)
    session = ReviewSession(slide, store)
    rec.seen.clear()
    state.set_session(session)
    assert rec.seen == [("session", session), ("store", store.path)]
    assert state.store_path == store.path  # the open session's store wins

    rec.seen.clear()
    state.set_slide(slide)  # another slide (here: the same one again) closes the session
    assert rec.names() == ["session", "slide", "store"] and rec.seen[0] == ("session", None)
    assert state.session is None and state.store_path == tmp_path / "pattern.sgnet.zarr"

    rec.seen.clear()
    state.set_device("cpu")
    state.set_store_dir(tmp_path / "other")
    assert rec.seen == [("device", "cpu"), ("store", tmp_path / "other" / "pattern.sgnet.zarr")]


def test_offered_model_is_used_only_when_asked(tmp_path):
    pytest.importorskip("torch")
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, sci_width=32, sci_heads=2,
                      sci_blocks=1, name="tuned")
    save_checkpoint(build_model(cfg), tmp_path / "ft")  # described, never loaded here
    state = AppState()
    assert not state.use_offered()  # nothing on offer
    state.set_model(PixelRulePredictor(64))
    rec = Recorder(state)
    state.offer_model(tmp_path / "ft")
    assert rec.seen == [("offered", tmp_path / "ft")]
    assert state.model.info.name != "tuned"  # offered, not swapped in
    assert state.use_offered()
    assert rec.names() == ["offered", "palette", "model", "offered"]
    assert state.model.info.name == "tuned" and state.model.path == (tmp_path / "ft").resolve()
    assert state.offered is None and rec.seen[-1] == ("offered", None)


def test_each_viewer_has_its_own_state():
    napari = pytest.importorskip("napari")
    from napari.components import ViewerModel

    assert napari is not None
    one, two = ViewerModel(), ViewerModel()
    state = state_for(one)
    assert state_for(one) is state and state_for(two) is not state
    state.set_model(PixelRulePredictor(64))
    assert state_for(two).model is None  # no process-wide model
    gone = [False]
    import weakref

    weakref.finalize(state, lambda: gone.__setitem__(0, True))
    del one, state
    gc.collect()
    assert gone[0]  # the state goes with its viewer


# --------------------------------------------------------------------------- store paths
@pytest.mark.parametrize(("name", "stem"), [
    ("CMU-1-Small-Region.svs", "CMU-1-Small-Region"),
    ("synthetic-8192-s7.ome.tif", "synthetic-8192-s7"),
    ("synthetic-8192-s7.ome.zarr", "synthetic-8192-s7"),
    ("Case.V2.NDPI", "Case.V2"),
    ("plain", "plain"),
])
def test_slide_stem(name, stem):
    assert slide_stem(Path("/data") / name) == stem


def test_store_folder_rule(tmp_path, monkeypatch, slide):
    svs = tmp_path / "a" / "s.svs"
    svs.parent.mkdir()
    assert store_path_for(svs) == tmp_path / "a" / "s.sgnet.zarr"  # beside a writable slide
    assert store_path_for(svs, tmp_path / "o") == tmp_path / "o" / "s.sgnet.zarr"
    monkeypatch.setenv(STORE_DIR_ENV, str(tmp_path / "env"))
    assert store_path_for(svs) == tmp_path / "env" / "s.sgnet.zarr"
    assert store_path_for(svs, tmp_path / "o") == tmp_path / "o" / "s.sgnet.zarr"
    monkeypatch.delenv(STORE_DIR_ENV)
    assert store_path_for(slide) == Path.home() / "napari-sgnet" / "stores" / "pattern.sgnet.zarr"


def test_a_store_with_the_old_app_name_is_still_opened(tmp_path, slide):
    from dataclasses import replace

    source = tmp_path / "s.ome.tif"
    pyr = replace(slide, source=source)
    assert legacy_store_path(pyr) == tmp_path / "s.ome.tif.sgnet.zarr"
    assert find_store_path(pyr) == tmp_path / "s.sgnet.zarr"  # nothing exists: the new name
    LabelStore.create(legacy_store_path(pyr), slide=pyr, palette=GLEASON, tile=64)
    assert find_store_path(pyr) == legacy_store_path(pyr)
    LabelStore.create(tmp_path / "s.sgnet.zarr", slide=pyr, palette=GLEASON, tile=64)
    assert find_store_path(pyr) == tmp_path / "s.sgnet.zarr"  # the new name wins


@pytest.mark.parametrize("out", ["beside", "elsewhere"])
def test_predict_writes_the_store_the_app_opens(tmp_path, out, monkeypatch):
    """The join: ``napari-sgnet predict --out DIR slide`` -> the app opens that very store."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("napari")
    import tifffile
    from napari.components import ViewerModel

    from napari_sgnet._napari.reader import read_slide
    from napari_sgnet._napari.session import pyramid_from_layer, slide_transform
    from napari_sgnet.cli.main import main
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=None, sci_width=32,
                      sci_heads=2, sci_blocks=1)
    model = save_checkpoint(build_model(cfg), tmp_path / "model")
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), 16, 0), 16, 1)
    (tmp_path / "slides").mkdir()
    slide_file = tmp_path / "slides" / "case-7.ome.tif"
    tifffile.imwrite(slide_file, img, tile=(64, 64), photometric="rgb")
    folder = slide_file.parent if out == "beside" else tmp_path / "stores"
    assert main(["predict", "--model", str(model), "--out", str(folder), "--no-progress",
                 str(slide_file)]) == 0
    (made,) = folder.glob("*.sgnet.zarr")
    assert made == folder / "case-7.sgnet.zarr"
    before = LabelStore.open(made, mode="r").requests

    # the app: the reader's layer -> the slide -> the store path -> the review session
    viewer = ViewerModel()
    data, kwargs, _ = read_slide(str(slide_file))[0]
    layer = viewer.add_image(data, **kwargs)
    state = AppState(store_dir=None if out == "beside" else folder)
    scale, translate = slide_transform(layer)
    state.set_slide(pyramid_from_layer(layer), scale=scale, translate=translate)
    assert state.store_path == made
    session = open_review_session(state.slide, state.store_path, transform=(scale, translate))
    state.set_session(session)
    assert session.store.path == made and LabelStore.open(made, mode="r").requests == before
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".zarr")) == [made.name]
    assert session.store.read_labels(Box(0, 0, 16, 16)).min() >= 1  # predict's labels


# --------------------------------------------------------------------------- runs
def _spec(**kw):
    return describe_model(PixelRulePredictor(64, **kw))


def test_a_new_request_supersedes_the_running_one(tmp_path):
    slide = pattern_slide(700, 500, seed=7)
    runs = ViewportRuns()
    spec = _spec(delay_s=0.05)
    first = runs.ticket(slide, tmp_path / "s.zarr", spec, None, device="cpu", batch_size=2,
                        skip_glass=False, order="raster")
    seen: list = []
    started = threading.Event()

    def consume() -> None:
        for ev in runs.events(first):
            runs.record(first, ev)
            seen.append(ev)
            started.set()
        runs.end(first)

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(20) and runs.running
    view = Box(0, 0, 100, 100)
    second = runs.ticket(slide, tmp_path / "s.zarr", spec, view, device="cpu", batch_size=2,
                         skip_glass=False)
    assert not runs.is_current(first) and runs.is_current(second)
    assert runs.covers(view)  # about to be predicted: the camera follower adds no run
    assert not runs.covers(Box(600, 400, 100, 100))
    events = list(runs.events(second))
    worker.join(20)
    assert not worker.is_alive()
    assert seen[-1].stage == "cancelled" and events[-1].stage == "completed"
    runs.record(second, events[-1])
    runs.end(second)
    assert runs.covers(Box(10, 10, 50, 50)) and not runs.covers(Box(0, 0, 400, 400))
    store = LabelStore.open(tmp_path / "s.zarr")
    assert [r["status"] for r in store.requests] == ["cancelled", "completed"]
    labels, _ = expected_pixel_rule(np.asarray(slide.levels[0]))
    np.testing.assert_array_equal(store.read_labels(view), labels[:100, :100])
    runs.invalidate()
    assert not runs.covers(Box(10, 10, 50, 50))


def test_requests_superseded_or_cancelled_before_they_start_never_run(tmp_path):
    slide = pattern_slide(300, 200, seed=1)
    runs = ViewportRuns()
    spec = _spec()
    store = tmp_path / "s.zarr"
    stale = runs.ticket(slide, store, spec, Box(0, 0, 64, 64), skip_glass=False)
    newest = runs.ticket(slide, store, spec, Box(64, 0, 64, 64), skip_glass=False)
    assert list(runs.events(stale)) == []  # superseded before its worker started
    assert list(runs.events(newest))[-1].stage == "completed"
    cancelled = runs.ticket(slide, store, spec, None, skip_glass=False)
    runs.cancel()
    assert list(runs.events(cancelled)) == []
    assert [r["status"] for r in LabelStore.open(store).requests] == ["completed"]


def test_a_model_change_recomputes_and_a_new_store_gets_a_new_session(tmp_path):
    slide = pattern_slide(300, 200, seed=2)
    runs = ViewportRuns()
    view = Box(0, 0, 128, 128)
    a = runs.ticket(slide, tmp_path / "s.zarr", _spec(), view, skip_glass=False)
    assert list(runs.events(a))[-1].tiles_done == 4
    b = runs.ticket(slide, tmp_path / "s.zarr", _spec(model_id="pixel-rule:v2"), view,
                    skip_glass=False)
    final = list(runs.events(b))[-1]
    assert final.tiles_done == 4 and final.tiles_cached == 0  # the new model's tiles
    c = runs.ticket(slide, tmp_path / "t.zarr", _spec(), view, skip_glass=False)
    assert list(runs.events(c))[-1].store == tmp_path / "t.zarr"
    assert LabelStore.is_store(tmp_path / "t.zarr")


# --------------------------------------------------------------------------- exports
def test_export_table_is_the_cli_and_the_npe2_writers():
    import yaml

    from napari_sgnet._napari import writer
    from napari_sgnet.cli.export_cmd import FORMATS

    assert FORMATS == tuple(EXPORTS) == ("ome-zarr", "geojson", "tiff", "patches", "probabilities")
    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    by_function = {"write_omezarr": "ome-zarr", "write_geojson": "geojson", "write_tiff": "tiff"}
    for w in manifest["contributions"]["writers"]:
        module, function = commands[w["command"]].split(":")
        assert module == writer.__name__ and hasattr(writer, function)
        row = EXPORTS[by_function[function]]
        assert set(w["filename_extensions"]) <= set(row.extensions), w
    assert EXPORTS["geojson"].file_filter == "GeoJSON (*.geojson *.json)"


def test_run_export_through_the_table(tmp_path, slide):
    import json

    store = LabelStore.create(tmp_path / "pattern.sgnet.zarr", slide=slide, palette=GLEASON,
                              tile=64)
    assert default_export_path("geojson", store.path, slide) == tmp_path / "pattern.geojson"
    assert default_export_path("ome-zarr", store.path) == tmp_path / "pattern.labels.ome.zarr"
    with pytest.raises(OptionError, match="known: ome-zarr, geojson, tiff, patches"):
        run_export("omezarr", store, tmp_path / "x")
    with pytest.raises(OptionError, match="does not take ngff"):
        run_export("tiff", store, tmp_path / "x.tif", ngff="0.4")
    with pytest.raises(OptionError, match="needs the slide"):
        run_export("patches", store, tmp_path / "p")
    out = run_export("geojson", store, tmp_path / "a.geojson", skip_background=True, level=None)
    assert out == tmp_path / "a.geojson" and json.loads(out.read_text())["type"]
    zarr_out = run_export("ome-zarr", store, tmp_path / "a.ome.zarr", ngff="0.4")
    assert (zarr_out / ".zattrs").is_file() or (zarr_out / "zarr.json").is_file()
