"""Review, palette-only corrections, eraser meanings, undo, layout and shortcuts in a SHOWN window.

Every check clicks the dock's own buttons (or presses its shortcuts) in a real napari
window under Xvfb; the store is read back with LabelStore / zarr.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_sgnet._napari.layers import image_layer_data
from napari_sgnet._qt import dialogs
from napari_sgnet._qt.review_controls import SHORTCUTS, palette_label
from napari_sgnet._qt.widget import SGNetWidget
from napari_sgnet.app.review import ERASER_BACKGROUND, ERASER_UNLABELLED
from napari_sgnet.app.viewport import camera_of
from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide
from napari_sgnet.palette import GLEASON

pytestmark = pytest.mark.gui

MPP = 0.5
TIMEOUT = 60_000


def _slide():
    return pattern_slide(1024, 768, mpp=MPP, levels=3, name="pattern")


def _open(make_napari_viewer, tmp_path, slide=None, model=None):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    slide = slide or _slide()
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(viewer, model=model or PixelRulePredictor(64, mpp=1.0),
                         store_dir=tmp_path / "stores")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    widget.controller.follow_view = False
    QApplication.processEvents()
    _look_at(viewer, slide.height / 2, slide.width / 2,
             0.95 * min(s / n for s, n in zip(viewer.canvas.size, slide.shape[:2], strict=False)))
    return viewer, widget


def _look_at(viewer, y, x, zoom):
    camera = camera_of(viewer)
    camera.center = (y * MPP, x * MPP)
    camera.zoom = zoom / MPP


def _run(qtbot, widget, click):
    c = widget.controller
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        click()
    assert c.last_event.stage == "completed", c.last_event


def _arrays(store):
    whole = Box(0, 0, store.width, store.height)
    return [store.read_labels(whole), store.read_confidence(whole), store.read_edited(whole),
            store.done_map()] + [np.asarray(store.levels_as_dask()[k])
                                 for k in range(store.n_levels)]


def _same(a, b):
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_palette_label_mapping():
    assert palette_label(3, 1, GLEASON) == 3
    assert palette_label(0, 4, GLEASON) == 0  # the eraser's "no label"
    assert palette_label(6, 2, GLEASON) == 3  # napari's "new label": the next class
    assert palette_label(6, 5, GLEASON) == 1  # ... wrapping round


def test_out_of_palette_label_never_reaches_the_store(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _open(make_napari_viewer, tmp_path)
    c, review = widget.controller, widget.review
    _run(qtbot, widget, widget.run_view_btn.click)
    _look_at(viewer, 300, 400, 2.0)
    widget.edit_btn.click()
    edit = c.layer("edit")
    assert edit is not None
    # the dock's class list and napari's label control stay in sync both ways
    widget.palette_view.setCurrentRow(2)
    assert edit.selected_label == 3
    edit.selected_label = 4
    assert widget.palette_view.currentRow() == 3
    # napari's "new label" (M) would pick 6: it is mapped to the next palette class
    viewer.layers.selection.active = edit
    edit.selected_label = 6
    assert edit.selected_label == 5 and widget.palette_view.currentRow() == 4
    # the class under the cursor is named in napari's status bar
    status = edit.get_status(edit.data_to_world((10, 10)), world=True)
    label = int(edit.data[10, 10])
    assert f"class: {GLEASON.names[label - 1] if label else 'no label'}" in str(status)
    # the brush size is shown in µm (1 label px = 1 µm here)
    edit.brush_size = 8
    assert widget.brush_label.text() == "Brush: 8 label px = 8 µm"
    # paint label 6 anyway (as a script or a plugin could) and Commit: refused, store unchanged
    store = c.session.store
    before = _arrays(store)
    box = c.session.edit.box
    edit.paint((20, 30), 6, refresh=True)
    assert (edit.data == 6).any()
    widget.commit_btn.click()
    text = widget.status_label.text()
    ys, xs = np.nonzero(edit.data == 6)
    assert "Not committed: label 6" in text and "Gleason 5" in text
    assert f"label pixel ({box.x + xs[0]}, {box.y + ys[0]})" in text and "µm" in text
    assert c.session.edit is not None and edit.editable and edit in viewer.layers
    assert _same(_arrays(store), before) and store.commits == []
    # repaint with a class: the commit goes through
    edit.data[edit.data == 6] = 2
    with qtbot.waitSignal(review.committed, timeout=TIMEOUT):
        widget.commit_btn.click()
    assert len(store.commits) == 1


def test_next_follows_the_score_skips_and_says_when_done(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _open(make_napari_viewer, tmp_path)
    c, review = widget.controller, widget.review
    _look_at(viewer, 200, 300, 2.0)  # predict only the top-left part: the rest is unpredicted
    _run(qtbot, widget, widget.run_view_btn.click)
    session = c.session
    session.region_um = 64.0
    expected = session.review_queue()
    assert expected and all(r.predicted >= 0.25 for r in expected)
    scores = [r.score for r in expected]
    assert scores == sorted(scores, reverse=True)
    seen = []
    for region in expected:
        with qtbot.waitSignal(review.region_shown, timeout=TIMEOUT) as blocker:
            widget.next_btn.click()
        seen.append(blocker.args[0])
        assert blocker.args[0] == region.box
        assert f"Region {region.describe()}" in widget.status_label.text()
        assert "µm centred at" in widget.status_label.text()
    assert len(set(seen)) == len(seen)
    assert "this is the last region" in widget.status_label.text()
    # every region shown holds predicted tissue; the unpredicted part of the slide never came
    store = session.store
    for box in seen:
        assert (store.read_labels(box) > 0).mean() >= 0.25
    with qtbot.waitSignal(review.region_shown, timeout=TIMEOUT) as blocker:
        widget.next_btn.click()
    assert blocker.args[0] is None
    assert "No region left to review" in widget.status_label.text()


def test_eraser_meanings_and_undo_after_reopening(make_napari_viewer, qtbot, tmp_path):
    slide = _slide()
    viewer, widget = _open(make_napari_viewer, tmp_path, slide)
    c, review = widget.controller, widget.review
    _run(qtbot, widget, widget.run_view_btn.click)
    store = c.session.store
    before = _arrays(store)

    # "unlabelled": the erased pixels are predicted again, and review goes there first
    _look_at(viewer, 300, 400, 2.0)
    widget.edit_btn.click()
    edit, box = c.layer("edit"), c.session.edit.box
    widget.eraser_buttons[ERASER_UNLABELLED].setChecked(True)
    edit.data[10:30, 10:40] = 0  # as napari's eraser does
    edit.paint((50, 50), 5, refresh=True)
    erased = Box(box.x + 10, box.y + 10, 30, 20)
    with qtbot.waitSignal(review.committed, timeout=TIMEOUT):
        widget.commit_btn.click()
    assert "unlabelled: the next run predicts them again" in widget.status_label.text()
    assert not store.read_labels(erased).any() and not store.read_confidence(erased).any()
    assert not store.read_edited(erased).any()
    assert (store.done_map() == 0).any()
    with qtbot.waitSignal(review.region_shown, timeout=TIMEOUT) as blocker:
        widget.next_btn.click()
    assert not blocker.args[0].intersect(erased).is_empty
    assert "unlabelled tissue" in widget.status_label.text()
    _run(qtbot, widget, widget.run_slide_btn.click)
    assert store.read_labels(erased).all() and not (store.done_map() == 0).any()
    after_unlabelled = _arrays(store)

    # "background": erased pixels become class 1 (Stroma/background), edited
    widget.eraser_buttons[ERASER_BACKGROUND].setChecked(True)
    assert review.eraser == ERASER_BACKGROUND
    _look_at(viewer, 300, 400, 2.0)
    widget.edit_btn.click()
    box = c.session.edit.box
    c.layer("edit").data[0:5, 0:5] = 0
    with qtbot.waitSignal(review.committed, timeout=TIMEOUT):
        widget.commit_btn.click()
    corner = Box(box.x, box.y, 5, 5)
    assert (store.read_labels(corner) == 1).all() and store.read_edited(corner).all()
    assert "Stroma/background" == store.palette.names[0]

    # reopen the slide in a new window: the undo history is in the store
    _v2, widget2 = _open(make_napari_viewer, tmp_path, slide)
    qtbot.waitUntil(lambda: widget2.controller.session is not None, timeout=TIMEOUT)
    store2 = widget2.controller.session.store
    assert widget2.controller.session.undoable == 2
    with qtbot.waitSignal(widget2.review.undone, timeout=TIMEOUT):
        widget2.undo_btn.click()
    assert _same(_arrays(store2), after_unlabelled)
    with qtbot.waitSignal(widget2.review.undone, timeout=TIMEOUT):
        widget2.undo_btn.click()
    # labels, confidence, edited mask, done-map and every level exactly as before the commits
    assert _same(_arrays(store2), before)
    with qtbot.waitSignal(widget2.review.undone, timeout=TIMEOUT) as blocker:
        widget2.undo_btn.click()
    assert blocker.args[0] is None and "Nothing to undo" in widget2.status_label.text()


def _buttons(widget):
    from qtpy.QtWidgets import QPushButton

    return [b for b in widget.findChildren(QPushButton) if not b.isHidden()]


def test_two_docks_fit_1920x1080_legend_notice_and_shortcuts(make_napari_viewer, qtbot,
                                                            tmp_path):
    from qtpy.QtCore import QPoint, QRect, Qt
    from qtpy.QtWidgets import QApplication

    from napari_sgnet._qt.finetune_widget import FinetuneWidget

    viewer, widget = _open(make_napari_viewer, tmp_path)
    tune = FinetuneWidget(viewer, models_dir=tmp_path / "models")
    viewer.window.add_dock_widget(tune, name="Fine-tune", area="right")
    window = viewer.window._qt_window
    window.showNormal()
    window.resize(1920, 1080)
    for _ in range(5):
        QApplication.processEvents()
    assert window.width() <= 1920 and window.height() <= 1080, window.size()
    # the two docks' contents are taller than the screen: the scroll areas make them fit
    tall = sum(d.scroll.widget().sizeHint().height() for d in (widget, tune))
    assert tall > 1080, tall
    screen = QRect(0, 0, 1920, 1080)
    for dock in (widget, tune):
        viewport = dock.scroll.viewport()
        for button in _buttons(dock):
            dock.scroll.ensureWidgetVisible(button)
            QApplication.processEvents()
            top_left = button.mapTo(window, QPoint(0, 0))
            rect = QRect(top_left, button.size())
            assert screen.contains(rect), (button.text(), rect)
            in_view = QRect(button.mapTo(viewport, QPoint(0, 0)), button.size())
            assert viewport.rect().contains(in_view), (button.text(), in_view)
    assert tune.use_btn in _buttons(tune) or tune.use_btn.isHidden() is False

    # the shortcuts click the same buttons (and are named in their tooltips)
    for button, key in ((widget.run_view_btn, "run_view"), (widget.next_btn, "next"),
                        (widget.edit_btn, "edit"), (widget.commit_btn, "commit"),
                        (widget.discard_btn, "discard")):
        assert SHORTCUTS[key] in button.toolTip()
    c, review = widget.controller, widget.review
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()

    def press(letter):
        qtbot.keyClick(canvas, getattr(Qt, f"Key_{letter}"), Qt.ShiftModifier)

    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        press("R")
    assert c.last_event.stage == "completed"
    with qtbot.waitSignal(review.region_shown, timeout=TIMEOUT) as blocker:
        press("N")
    assert blocker.args[0] in c.session.reviewed
    press("E")
    assert c.session.edit is not None and c.layer("edit") is not None
    press("D")
    assert c.session.edit is None
    press("E")
    c.layer("edit").paint((5, 5), 4, refresh=True)
    with qtbot.waitSignal(review.committed, timeout=TIMEOUT):
        press("C")
    assert c.session.edit is None and len(c.session.store.commits) == 1

    # the confidence legend, and which model made the labels, with the research notice
    assert widget.legend.isHidden()
    widget.confidence_check.setChecked(True)
    assert not widget.legend.isHidden() and "least sure" in widget.legend.caption.text()
    name = c.session.store.model["name"]
    text = widget.provenance_label.text()
    assert name in text and "Research use only" in text and "1 correction" in text
    assert c.layer("prediction").metadata["napari_sgnet"]["provenance"] == text
    assert c.layer("prediction").name == f"SGNet labels ({name})"


def test_magicgui_forms_drive_export_and_finetune(make_napari_viewer, qtbot, tmp_path,
                                                 monkeypatch):
    import json

    from magicgui.widgets import Container

    from napari_sgnet._qt.finetune_widget import FinetuneWidget

    viewer, widget = _open(make_napari_viewer, tmp_path)
    _run(qtbot, widget, widget.run_view_btn.click)
    # the export options are a magicgui form; the GeoJSON button uses its values
    form = widget.exports.options.forms["geojson"]
    assert isinstance(form, Container)
    form.skip_background.value = True
    form.measurements.value = True
    out = tmp_path / "out.geojson"
    monkeypatch.setattr(dialogs, "ask_save_path", lambda *a: out)
    # long work also reports through napari.utils.progress (napari's activity panel)
    import threading

    from napari.utils import progress

    from napari_sgnet._qt.review_controls import ActivityProgress

    bars, update = [], ActivityProgress.update

    def spy(self, done, total):
        update(self, done, total)
        bars.append((self.bar, threading.current_thread() is threading.main_thread()))

    monkeypatch.setattr(ActivityProgress, "update", spy)
    with qtbot.waitSignal(widget.exports.exported, timeout=TIMEOUT):
        widget.export_buttons["geojson"].click()
    qtbot.waitUntil(lambda: not widget.exports._workers, timeout=TIMEOUT)
    assert bars and all(isinstance(b, progress) and main for b, main in bars)
    assert bars[-1][0].desc.startswith("SGNet: export") and widget.exports.activity.bar is None
    features = json.loads(out.read_text())["features"]
    names = {f["properties"]["classification"]["name"] for f in features}
    assert features and "Stroma/background" not in names
    assert all("Mean confidence" in f["properties"]["measurements"] for f in features)
    assert widget.exports.options.values("patches") == {"masks": "edited", "layout": "items"}
    # the fine-tune settings are a magicgui form too (the spin boxes are its natives)
    tune = FinetuneWidget(viewer, models_dir=tmp_path / "models")
    assert isinstance(tune.settings, Container)
    tune.steps_spin.setValue(7)
    tune.lr_spin.setValue(2e-4)
    assert tune.settings.steps.value == 7 and abs(tune.settings.lr.value - 2e-4) < 1e-12
