"""The whole app workflow in a real napari window (Xvfb via pytest-xvfb, xcb platform).

open a slide -> run on view (tiny SGNet) -> labels appear -> edit region -> paint ->
commit -> run again with another model (the correction stays) -> export every format
-> read the exports back. Plus: discard, autosave + close guard, zoomed-out view,
superseding runs, next uncertain region, confidence overlay, palette loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")

from napari_sgnet._napari.layers import image_layer_data  # noqa: E402
from napari_sgnet._qt import dialogs  # noqa: E402
from napari_sgnet._qt.widget import SGNetWidget  # noqa: E402
from napari_sgnet.app.exports import DOCK_EXPORT_KINDS, EXPORTS  # noqa: E402
from napari_sgnet.app.viewport import camera_of, view_of_viewer  # noqa: E402
from napari_sgnet.config import ModelConfig  # noqa: E402
from napari_sgnet.geometry import Box  # noqa: E402
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide  # noqa: E402
from napari_sgnet.inference.tissue import tissue_mask  # noqa: E402
from napari_sgnet.io.labelstore import LabelStore  # noqa: E402

pytestmark = pytest.mark.gui

MPP = 0.5
TIMEOUT = 60_000


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny, randomly initialised SGNet checkpoints (different weights)."""
    from napari_sgnet.model import build_model, save_checkpoint

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=1.0, sci_width=32,
                          sci_heads=2, sci_blocks=1, name=f"tiny-{seed}")
        out.append(save_checkpoint(build_model(cfg), tmp_path_factory.mktemp(f"m{seed}")))
    return out


def _open(make_napari_viewer, tmp_path, model, slide=None):
    viewer = make_napari_viewer(show=True)
    slide = slide or pattern_slide(1024, 768, mpp=MPP, levels=3, name="pattern")
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(viewer, model=model, store_dir=tmp_path / "stores")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    _show_all(viewer, slide)
    return viewer, widget


def _show_all(viewer, slide):
    """Fit the whole slide in the canvas (whatever size the docked window left it)."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    h, w = viewer.canvas.size
    camera = camera_of(viewer)
    camera.center = (slide.height * MPP / 2, slide.width * MPP / 2)
    camera.zoom = 0.95 * min(h / slide.height, w / slide.width) / MPP


def _run(qtbot, widget, click):
    c = widget.controller
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        click()
    assert c.last_event.stage == "completed", c.last_event
    return c.last_event


def _look_at(viewer, y, x, zoom):
    """Centre the camera on slide pixel (y, x) with ``zoom`` screen px per slide px."""
    camera = camera_of(viewer)
    camera.center = (y * MPP, x * MPP)
    camera.zoom = zoom / MPP


def test_full_workflow(make_napari_viewer, qtbot, tmp_path, tiny_models, monkeypatch):
    viewer, widget = _open(make_napari_viewer, tmp_path, tiny_models[0])
    c, review = widget.controller, widget.review
    assert "tiny-0" in widget.model_label.text() and "5 classes" in widget.model_label.text()
    shown = []
    c.shown.connect(shown.append)

    # run on view: labels appear, as a read-only multiscale layer aligned with the slide
    ev = _run(qtbot, widget, widget.run_view_btn.click)
    assert ev.tiles_done == ev.tiles_total == 48 and shown
    pred = c.layer("prediction")
    store = c.session.store
    assert pred.multiscale and pred.visible and not pred.editable  # read-only
    assert np.allclose(pred.scale, (2 * MPP, 2 * MPP))
    level0 = np.asarray(pred.data[0])
    assert np.array_equal(level0, store.read_labels(Box(0, 0, 512, 384)))
    # every pixel is labelled but the glass, which is "no label" (0; the pattern has a few
    # unsaturated blocks at its edge that the tissue mask calls glass)
    mask = tissue_mask(pattern_slide(1024, 768, mpp=MPP, levels=3, name="pattern"))
    glass = mask.glass(Box(0, 0, 512, 384), 2.0)
    assert np.array_equal(level0 == 0, glass) and glass.mean() < 0.05
    _level, value = pred.get_value((100 * MPP, 200 * MPP))  # what the canvas shows there
    assert 1 <= value <= 5

    # edit region: full-resolution crop of the view, painted like a brush would
    _look_at(viewer, 300, 400, 2.0)
    assert review.edit_region()
    edit = c.layer("edit")
    box = c.session.edit.box
    assert not edit.multiscale and edit.mode == "paint"
    assert np.allclose(edit.translate, (box.y * 2 * MPP + MPP / 2, box.x * 2 * MPP + MPP / 2))
    widget.palette_view.setCurrentRow(4)  # "Gleason 5" -> label 5
    assert edit.selected_label == 5
    edit.brush_size = 8
    cy, cx = box.h // 2, box.w // 2
    edit.paint((cy, cx), 5)
    painted = edit.data != c.session.edit.original
    assert painted.sum() > 20
    edit.paint((cy + 20, cx + 20), 3)  # a slip of the brush ...
    edit.undo()  # ... undone
    assert np.array_equal(edit.data != c.session.edit.original, painted)
    review.autosave_now(background=False)
    assert c.session.pending() is not None

    with qtbot.waitSignal(review.committed, timeout=TIMEOUT) as blocker:
        widget.commit_btn.click()
    assert blocker.args[0]["pixels"] == painted.sum()
    assert c.layer("edit") is None and c.session.pending() is None
    edited = store.read_edited(box).astype(bool)
    assert np.array_equal(edited, painted)
    assert (np.asarray(pred.data[0])[box.slices()][painted] == 5).all()

    # run again with another model: everything is re-predicted except the correction
    widget.state.set_model(tiny_models[1])
    _run(qtbot, widget, widget.run_slide_btn.click)
    after = store.read_labels(Box(0, 0, 512, 384))
    assert not np.array_equal(after, level0)
    assert (after[box.slices()][painted] == 5).all()

    # export every format with the dock's own buttons and read it back
    paths = {
        "ome-zarr": tmp_path / "out.ome.zarr",
        "geojson": tmp_path / "out.geojson",
        "tiff": tmp_path / "out.ome.tif",
    }
    asked = {}

    def ask_save_path(parent, title, start, filters):
        kind = next(k for k in paths if str(start).endswith(EXPORTS[k].suffix))
        asked[kind] = filters
        return paths[kind]

    monkeypatch.setattr(dialogs, "ask_save_path", ask_save_path)
    monkeypatch.setattr(dialogs, "ask_directory", lambda *a: tmp_path)
    for kind in DOCK_EXPORT_KINDS:
        with qtbot.waitSignal(widget.exports.exported, timeout=TIMEOUT) as blocker:
            widget.export_buttons[kind].click()
        paths[kind] = blocker.args[1]
    assert asked == {k: EXPORTS[k].file_filter for k in ("ome-zarr", "geojson", "tiff")}
    qtbot.waitUntil(lambda: not widget.exports._workers, timeout=TIMEOUT)
    _check_exports(paths, store, after)


def _check_exports(paths, store, labels):
    import tifffile

    from napari_sgnet.io.exporters import read_omezarr_labels

    source = read_omezarr_labels(paths["ome-zarr"])
    assert np.array_equal(np.asarray(source.levels[0]), labels)
    assert source.palette.names == store.palette.names
    b = int(store.base_downsample)  # the TIFF mask is at the slide's level 0
    slide_res = np.repeat(np.repeat(labels, b, axis=0), b, axis=1)
    assert np.array_equal(tifffile.imread(paths["tiff"]), slide_res)
    doc = json.loads(paths["geojson"].read_text())
    names = {f["properties"]["classification"]["name"] for f in doc["features"]}
    assert "Gleason 5" in names and names <= set(store.palette.names)
    folder = paths["patches"]
    manifest = folder / "manifest.json" if folder.is_dir() else folder
    assert manifest.is_file()
    assert any((manifest.parent / "items").iterdir())  # patches around the correction


def test_choosing_a_checkpoint_digests_its_weights_on_a_worker(
        make_napari_viewer, qtbot, tmp_path, tiny_models, monkeypatch):
    """Picking a checkpoint in the model box reads its weights (the digest) off the main
    thread; the label shows the model once described, and a later choice wins."""
    import shutil
    import threading

    from napari_sgnet.registry import cards

    _viewer, widget = _open(make_napari_viewer, tmp_path, PixelRulePredictor(64, mpp=MPP))
    fresh = [shutil.copytree(m, tmp_path / f"copy-{i}") for i, m in enumerate(tiny_models)]
    threads: list[str] = []
    digest = cards.weights_digest

    def recording(path):
        threads.append(threading.current_thread().name)
        return digest(path)

    monkeypatch.setattr(cards, "weights_digest", recording)
    combo = widget.model_combo
    for path in fresh:  # two quick choices: only the last one is applied
        combo.select(path)
        combo.activated.emit(combo.currentIndex())
    assert "Reading the chosen model" in widget.model_label.text()
    qtbot.waitUntil(lambda: "tiny-1" in widget.model_label.text(), timeout=TIMEOUT)
    assert widget.state.model_source == fresh[1]
    assert threads and threading.main_thread().name not in threads, threads
    qtbot.wait(200)
    assert "tiny-1" in widget.model_label.text()  # the earlier choice did not land after
    broken = tmp_path / "broken"
    broken.mkdir()
    combo.select(broken)
    combo.activated.emit(combo.currentIndex())
    qtbot.waitUntil(lambda: widget.state.model is None, timeout=TIMEOUT)
    assert "broken" in widget.model_label.text()


def test_discard_autosave_and_close_guard(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    model = PixelRulePredictor(64, mpp=1.0)
    viewer, widget = _open(make_napari_viewer, tmp_path, model)
    c, review = widget.controller, widget.review
    _run(qtbot, widget, widget.run_view_btn.click)
    _look_at(viewer, 200, 300, 2.0)

    # discard asks first: "no" keeps the edit, "yes" drops it
    assert review.edit_region()
    c.layer("edit").paint((20, 20), 5)
    monkeypatch.setattr(dialogs, "confirm", lambda *a, **k: False)
    widget.discard_btn.click()
    assert c.session.edit is not None and c.layer("edit") is not None
    monkeypatch.setattr(dialogs, "confirm", lambda *a, **k: True)
    widget.discard_btn.click()
    assert c.session.edit is None and c.layer("edit") is None
    assert not c.session.store.read_edited(Box(0, 0, 512, 384)).any()

    # closing with an uncommitted edit: "cancel" keeps the window, "keep" autosaves
    from qtpy.QtGui import QCloseEvent
    from qtpy.QtWidgets import QApplication

    assert review.edit_region()
    c.layer("edit").paint((30, 30), 5)
    expected = np.array(c.layer("edit").data)
    monkeypatch.setattr(dialogs, "ask_close", lambda *a: "cancel")
    event = QCloseEvent()
    QApplication.sendEvent(viewer.window._qt_window, event)
    assert not event.isAccepted() and viewer.window._qt_window.isVisible()
    monkeypatch.setattr(dialogs, "ask_close", lambda *a: "keep")
    assert review.close_guard()
    pending = c.session.pending()
    assert pending is not None and np.array_equal(pending.labels, expected)
    c.session.edit = None  # as if the app had exited

    # reopening the slide brings the edit back, ready to commit
    _viewer2, widget2 = _open(make_napari_viewer, tmp_path, model,
                             slide=c.slide)
    c2 = widget2.controller
    qtbot.waitUntil(lambda: c2.layer("edit") is not None, timeout=TIMEOUT)  # opened on a worker
    assert c2.session is not None
    assert np.array_equal(c2.layer("edit").data, expected)
    with qtbot.waitSignal(widget2.review.committed, timeout=TIMEOUT):
        widget2.commit_btn.click()
    assert c2.session.store.read_edited(pending.box).any()


def test_zoomed_out_superseded_and_review_tools(make_napari_viewer, qtbot, tmp_path):
    slow = PixelRulePredictor(64, mpp=1.0, delay_s=0.3)
    viewer, widget = _open(make_napari_viewer, tmp_path, slow)
    c, review = widget.controller, widget.review

    # zoomed out too far: a message and a "run anyway" button instead of a run
    c.max_view_tiles = 4
    assert not c.run_on_view()
    assert not widget.coarse_label.isHidden() and "tiles" in widget.coarse_label.text()
    assert not widget.force_btn.isHidden()

    # a new view supersedes the running whole-slide request
    c.max_view_tiles = 64
    c.run_whole_slide()
    qtbot.waitUntil(lambda: c.last_event is not None and c.last_event.tiles_done > 0,
                    timeout=TIMEOUT)
    _look_at(viewer, 100, 100, 4.0)
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        c.run_on_view()
    statuses = [r["status"] for r in c.session.store.requests]
    assert statuses == ["cancelled", "completed"]
    assert c.last_event.tiles_total < 48

    # pan: the debounced camera handler re-runs on the new view by itself
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        _look_at(viewer, 600, 900, 4.0)
    assert len(c.session.store.requests) == 3

    # next uncertain region: the camera goes there and it is marked reviewed
    with qtbot.waitSignal(review.region_shown, timeout=TIMEOUT) as blocker:
        widget.next_btn.click()
    region = blocker.args[0]
    assert region is not None and region in c.session.reviewed
    assert c.session.store_box(view_of_viewer(viewer)).contains(region)

    # confidence overlay on and off; a palette from JSON recolours the labels
    widget.confidence_check.setChecked(True)
    conf = c.layer("confidence")
    assert conf is not None and conf.multiscale
    widget.confidence_check.setChecked(False)
    assert c.layer("confidence") is None
    pal = {"name": "mine", "classes": [{"name": f"c{i}", "color": [10 * i, 0, 0]}
                                       for i in range(5)]}
    path = tmp_path / "palette.json"
    path.write_text(json.dumps(pal))
    assert c.load_palette(path)
    assert widget.palette_view.item(2).text().endswith("c2")
    color = c.layer("prediction").colormap.map(np.array([3]))[0]
    assert np.allclose(color[:3], (20 / 255, 0, 0), atol=1e-3)


def test_store_opened_with_its_slide_reopens_layers(make_napari_viewer, qtbot, tmp_path):
    slide = pattern_slide(512, 512, mpp=MPP, levels=2, name="small")
    store = LabelStore.create(tmp_path / "stores" / "slide.sgnet.zarr", slide=slide,
                              palette=PixelRulePredictor().info.palette, base_downsample=2.0,
                              tile=64)
    assert store.path.exists()
    _, widget = _open(make_napari_viewer, tmp_path, PixelRulePredictor(64, mpp=1.0), slide)
    qtbot.waitUntil(lambda: widget.controller.layer("prediction") is not None, timeout=TIMEOUT)
    assert widget.store_label.toolTip() == str(store.path)


SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "screenshot.png"


def test_screenshot_of_the_sample(make_napari_viewer, qtbot, tmp_path):
    """The README's screenshot: the synthetic Gleason-like sample slide, the bundled model's
    labels, and the dock."""
    from napari_sgnet._napari.samples import synthetic_sample
    from napari_sgnet.model import list_bundled

    model = None if "sgnet" in list_bundled() else PixelRulePredictor(128, mpp=4.0)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    for data, kwargs, kind in synthetic_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers[-1].visible = False  # the ground truth
    viewer.layers.selection.active = viewer.layers[0]
    widget = SGNetWidget(viewer, model=model, store_dir=tmp_path / "napari-sgnet-demo")
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    c = widget.controller
    qtbot.wait(500)  # let the window settle to its final size
    _look_at(viewer, 9000, 7000, 0.12)
    _run(qtbot, widget, widget.run_view_btn.click)
    viewer.layers.selection.active = c.layer("prediction")
    qtbot.wait(2 * c.DEBOUNCE_MS)  # a late resize re-runs on the newly visible area
    qtbot.waitUntil(lambda: not c.running, timeout=TIMEOUT)
    qtbot.wait(200)
    # Tests write only to temporary folders; NAPARI_SGNET_REFRESH_SCREENSHOT=1 refreshes the
    # README's picture in docs/images/.
    target = SCREENSHOT if os.environ.get("NAPARI_SGNET_REFRESH_SCREENSHOT") else (
        tmp_path / "screenshot.png"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(target), canvas_only=False)
    assert target.stat().st_size > 50_000
