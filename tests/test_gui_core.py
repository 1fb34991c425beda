"""The dock's structure in a real, shown napari window (Xvfb): several slides in one window,
errors reported once, every close path safe with an open edit, nothing heavy on import.

Timing belongs in ``bench/bench_main_thread.py``; these tests check the structure only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_sgnet._napari.layers import image_layer_data
from napari_sgnet._qt import dialogs
from napari_sgnet.app.viewport import camera_of
from napari_sgnet.inference.testing import PixelRulePredictor, pattern_slide

pytestmark = pytest.mark.gui

MPP = 0.5
TIMEOUT = 60_000


def _add_slide(viewer, name, seed_shift=0, size=(512, 384)):
    slide = pattern_slide(size[0] + 64 * seed_shift, size[1], mpp=MPP, levels=2, name=name)
    data, kwargs, _ = image_layer_data(slide, name=name)
    return viewer.add_image(data, **kwargs), slide


def _dock(viewer, tmp_path, model=None):
    from napari_sgnet._qt.widget import SGNetWidget

    widget = SGNetWidget(viewer, model=model or PixelRulePredictor(64, mpp=1.0),
                         store_dir=tmp_path / "stores")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    return widget


def _fit(viewer, slide):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    h, w = viewer.canvas.size
    camera = camera_of(viewer)
    camera.center = (slide.height * MPP / 2, slide.width * MPP / 2)
    camera.zoom = 0.95 * min(h / slide.height, w / slide.width) / MPP


def _run(qtbot, widget):
    c = widget.controller
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        widget.run_view_btn.click()
    assert c.last_event.stage == "completed", c.last_event
    qtbot.waitUntil(lambda: c.layer("prediction") is not None, timeout=TIMEOUT)


def _notifications(monkeypatch):
    """Every napari notification shown, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(
        lambda n: seen.append((str(n.severity), n.message)))
    return seen


def test_second_slide_has_its_own_layers_and_the_dock_follows(make_napari_viewer, qtbot,
                                                              tmp_path):
    viewer = make_napari_viewer(show=True)
    layer_a, slide_a = _add_slide(viewer, "slide-a")
    widget = _dock(viewer, tmp_path)
    c = widget.controller
    _fit(viewer, slide_a)
    _run(qtbot, widget)
    store_a = c.session.store.path
    pred_a = c.layer("prediction")
    assert widget.slide_label.text() == "Slide: slide-a"
    from napari_sgnet.app.viewport import view_of_viewer

    c.session.mark_reviewed(c.session.store_box(view_of_viewer(viewer)))
    reviewed_a = list(c.session.reviewed)

    # a second slide: selected as it opens, the dock follows it and shows which
    layer_b, slide_b = _add_slide(viewer, "slide-b", seed_shift=1)
    assert viewer.layers.selection.active is layer_b
    assert c.slide_layer is layer_b and widget.slide_label.text() == "Slide: slide-b"
    assert c.session is None and c.layer("prediction") is None  # nothing predicted yet
    _fit(viewer, slide_b)
    _run(qtbot, widget)
    store_b = c.session.store.path
    pred_b = c.layer("prediction")
    assert store_b != store_a and pred_b is not pred_a
    preds = [lay for lay in viewer.layers
             if lay.metadata.get("napari_sgnet", {}).get("role") == "prediction"]
    assert len(preds) == 2  # one labels layer per slide
    assert pred_b.data[0].shape != pred_a.data[0].shape  # each over its own slide
    assert c.session.reviewed == []

    # switching back restores the first slide's store, layers and review state
    viewer.layers.selection.active = layer_a
    assert c.slide_layer is layer_a and widget.slide_label.text() == "Slide: slide-a"
    assert c.session.store.path == store_a and c.layer("prediction") is pred_a
    assert list(c.session.reviewed) == reviewed_a
    # selecting a labels layer does not switch; the only visible slide is used when needed
    viewer.layers.selection.active = pred_b
    assert c.slide_layer is layer_a
    viewer.layers.selection.active = layer_b
    assert c.session.store.path == store_b and c.layer("prediction") is pred_b


def test_a_worker_error_is_reported_once(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_sgnet.app import runs

    viewer = make_napari_viewer(show=True)
    _layer, slide = _add_slide(viewer, "slide")
    widget = _dock(viewer, tmp_path)
    _fit(viewer, slide)
    seen = _notifications(monkeypatch)

    def broken(self, ticket):
        raise RuntimeError("the disk is on fire")
        yield  # pragma: no cover

    monkeypatch.setattr(runs.ViewportRuns, "events", broken)
    c = widget.controller
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        widget.run_view_btn.click()
    qtbot.wait(200)  # anything re-raised on the main thread would be notified by now
    fire = [m for _s, m in seen if "the disk is on fire" in m]
    assert len(fire) == 1, seen
    assert "the disk is on fire" in widget.status_label.text()


def _open_edit(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _layer, slide = _add_slide(viewer, "slide")
    widget = _dock(viewer, tmp_path)
    _fit(viewer, slide)
    _run(qtbot, widget)
    c = widget.controller
    camera = camera_of(viewer)
    camera.center, camera.zoom = (200 * MPP, 300 * MPP), 2.0 / MPP
    assert widget.review.edit_region()
    c.layer("edit").paint((20, 20), 5)
    return viewer, widget, c.session


def _count_asks(monkeypatch, answer):
    asked = []

    def ask_close(parent, pixels):
        asked.append(pixels)
        return answer

    monkeypatch.setattr(dialogs, "ask_close", ask_close)
    return asked


@pytest.mark.parametrize("how", ["window", "exit", "viewer.close"])
@pytest.mark.parametrize("answer", ["keep", "commit"])
def test_every_close_path_asks_once(make_napari_viewer, qtbot, tmp_path, monkeypatch, how,
                                    answer):
    viewer, widget, session = _open_edit(make_napari_viewer, qtbot, tmp_path)
    expected = np.array(widget.controller.layer("edit").data)
    box = session.edit.box
    asked = _count_asks(monkeypatch, answer)
    seen = _notifications(monkeypatch)
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    if how == "window":  # the window's close button: a close event to the main window
        from qtpy.QtGui import QCloseEvent
        from qtpy.QtWidgets import QApplication

        event = QCloseEvent()
        QApplication.sendEvent(viewer.window._qt_window, event)
        assert event.isAccepted()
    elif how == "exit":  # File > Exit: napari closes the window, then every viewer
        from napari._qt import qt_main_window
        from napari.settings import get_settings

        # napari's own "quit?" question is answered yes; the app itself must not quit
        monkeypatch.setattr(get_settings().application, "confirm_close_window", False)
        monkeypatch.setattr(qt_main_window, "quit_app_", _quit_viewers_only)
        viewer.window._qt_window.close(quit_app=True, confirm_need=True)
    else:
        viewer.close()
    qtbot.wait(100)
    assert len(asked) == 1 and asked[0] > 0
    assert not errors
    assert not [m for _s, m in seen if "edit layer was removed" in m], seen
    if answer == "keep":  # autosaved; it reopens with the slide
        pending = session.pending()
        assert pending is not None and np.array_equal(pending.labels, expected)
    else:
        assert session.pending() is None
        assert session.store.read_edited(box).any()


def _quit_viewers_only():
    """napari's quit_app without quitting the test's QApplication."""
    from napari import Viewer

    for v in list(Viewer._instances):
        v.close()


def test_building_the_dock_does_not_import_torch(tmp_path):
    """The dock and the sample import no torch on the main thread (it loads on a worker)."""
    code = textwrap.dedent("""
        import sys, threading
        import napari
        from napari_sgnet._napari.samples import synthetic_sample
        viewer = napari.Viewer(show=False)
        for data, kwargs, kind in synthetic_sample():
            assert kind in ("image", "labels")
        from napari_sgnet._qt.widget import SGNetWidget
        from napari_sgnet.inference.testing import PixelRulePredictor
        assert "torch" not in sys.modules, "torch imported by importing the dock"
        widget = SGNetWidget(viewer, store_dir=sys.argv[1])
        assert "torch" not in sys.modules, "torch imported while building the dock"
        print("ok", flush=True)
        from napari_sgnet._qt.workers import app_pool
        app_pool().waitForDone(240_000)  # the model warm-up (torch) on its worker
        widget.shutdown()
        viewer.close()
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_the_synthetic_sample_is_lazy():
    import dask.array as da

    from napari_sgnet._napari import samples

    rendered = []
    from napari_sgnet.synthetic import slide as synth

    orig = synth.SyntheticLevel.__getitem__
    synth.SyntheticLevel.__getitem__ = lambda self, key: rendered.append(key) or orig(self, key)
    try:
        layers = samples.synthetic_sample()
    finally:
        synth.SyntheticLevel.__getitem__ = orig
    assert [kind for _d, _k, kind in layers] == ["image", "labels"]
    for data, _kwargs, _kind in layers:
        assert all(isinstance(level, da.Array) for level in data)
    assert layers[0][0][0].shape[:2] == (16384, 16384)
    assert not rendered  # no pixel was generated


def test_the_prediction_layer_is_made_ahead_and_filled_by_the_first_run(
        make_napari_viewer, qtbot, tmp_path):
    """A slide without a store gets its (empty) prediction layer once the model is ready,
    so the first run only swaps in the store's data; the user's selection is kept."""
    from napari_sgnet._napari.session import META_KEY, PLACEHOLDER_KEY

    viewer = make_napari_viewer(show=True)
    layer, slide = _add_slide(viewer, "slide-a")
    widget = _dock(viewer, tmp_path)
    c = widget.controller
    # made once the model is ready (not while it loads)
    qtbot.waitUntil(lambda: c.layer("prediction", c.state.store_path, placeholder=True)
                    is not None, timeout=TIMEOUT)
    placeholder = c.layer("prediction", c.state.store_path, placeholder=True)
    assert placeholder in viewer.layers and c.model is not None
    assert c.layer("prediction") is None  # no store yet: nothing is "the" prediction layer
    assert placeholder.metadata[META_KEY][PLACEHOLDER_KEY] is True
    assert viewer.layers.selection.active is layer
    c.attach()  # attaching again makes no second one
    assert sum(lay.metadata.get(META_KEY, {}).get("role") == "prediction"
               for lay in viewer.layers) == 1
    _fit(viewer, slide)
    _run(qtbot, widget)
    shown = c.layer("prediction")
    assert shown is placeholder  # the same napari layer, now showing the store
    meta = shown.metadata[META_KEY]
    assert not meta.get(PLACEHOLDER_KEY) and meta["store"] == str(c.session.store.path)
    assert shown.multiscale and len(shown.data) == c.session.store.n_levels
    # it shows what the store holds, at the store's place over the slide
    store_level0 = np.asarray(c.session.store.levels_as_dask()[0])
    assert np.array_equal(np.asarray(shown.data[0][:, :]), store_level0)
    assert (store_level0 > 0).any()
    from napari_sgnet._napari.session import slide_transform
    from napari_sgnet.app.review import store_transform

    scale, translate = store_transform(c.session.store.base_downsample,
                                       *slide_transform(layer))
    assert tuple(shown.scale) == pytest.approx(scale)
    assert tuple(shown.translate) == pytest.approx(translate)


def test_opening_a_sample_preloads_the_dock_modules_off_the_main_thread():
    """The store and review modules the dock needs are imported on a daemon thread once a
    slide is opened (not torch, not Qt); a second open starts nothing."""
    code = textwrap.dedent("""
        import sys, threading
        from napari_sgnet._napari import preload
        from napari_sgnet._napari.samples import synthetic_sample
        assert "zarr" not in sys.modules and "napari_sgnet._napari.session" not in sys.modules
        imported_by = {}
        import builtins
        real_import = builtins.__import__
        def spy(name, *a, **k):
            if name.startswith(("zarr", "PyQt5", "qtpy")):
                imported_by.setdefault(name, threading.current_thread().name)
            return real_import(name, *a, **k)
        builtins.__import__ = spy
        synthetic_sample()
        thread = [t for t in threading.enumerate() if t.name == "napari-sgnet-preload"]
        assert thread and thread[0].daemon
        thread[0].join(120)
        builtins.__import__ = real_import
        assert preload.preload_dock_modules() is None  # once per process
        for name in preload.DOCK_MODULES:
            assert name in sys.modules, name
        assert imported_by.get("zarr") == "napari-sgnet-preload", imported_by
        assert not any(n.startswith(("PyQt5", "qtpy")) for n in imported_by), imported_by
        assert "torch" not in sys.modules
        print("ok", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_whole_slide_runs_use_the_activity_panel_and_view_runs_the_dock_bar(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A view run reports in the dock's bar only (napari's animated activity indicator
    costs a core under software GL); a whole-slide run also opens napari's activity bar.
    Both bars end on the run's final count, and the activity bar closes."""
    from napari_sgnet._qt.review_controls import ActivityProgress

    opened = []
    update = ActivityProgress.update

    def spy(self, done, total):
        update(self, done, total)
        opened.append((self.description, done, total))

    monkeypatch.setattr(ActivityProgress, "update", spy)
    viewer = make_napari_viewer(show=True)
    _layer, slide = _add_slide(viewer, "slide-a")
    widget = _dock(viewer, tmp_path)
    c = widget.controller
    qtbot.waitUntil(lambda: c.model is not None, timeout=TIMEOUT)
    _fit(viewer, slide)
    _run(qtbot, widget)
    ev = c.last_event
    assert opened == [] and ev.tiles_predicted > 0
    assert widget.progress_bar.value() == ev.tiles_done == widget.progress_bar.maximum()

    _layer_b, _slide_b = _add_slide(viewer, "slide-b", seed_shift=1)  # a fresh store
    assert c.slide_layer is _layer_b
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=TIMEOUT):
        widget.run_slide_btn.click()
    ev = c.last_event
    assert ev.stage == "completed" and ev.tiles_predicted > 0
    assert opened and {d for d, _, _ in opened} == {"SGNet: predicting"}
    qtbot.wait(400)  # past the throttle's interval: nothing reopens the bar
    assert widget.activity.bar is None  # closed when the run ended
    assert widget.progress_bar.value() == ev.tiles_done == widget.progress_bar.maximum()


def test_a_window_closed_before_its_dock_was_shown_closes_cleanly(make_napari_viewer, qtbot,
                                                                  tmp_path):
    """A dock docked and closed with its window in the same event-loop turn never gets a
    show or close event; its slots must not outlive it (they used to hit deleted labels
    when the slide's removal was handled)."""
    import gc

    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    _layer, slide = _add_slide(viewer, "slide-a")
    from napari_sgnet._qt.widget import SGNetWidget

    widget = SGNetWidget(viewer, model=PixelRulePredictor(64, mpp=1.0),
                         store_dir=tmp_path / "stores")
    c = widget.controller
    qtbot.waitUntil(lambda: c.model is not None, timeout=TIMEOUT)
    _fit(viewer, slide)
    _run(qtbot, widget)
    viewer.window.add_dock_widget(widget)
    viewer.close()
    for _ in range(10):
        QApplication.processEvents()
        QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    gc.collect()
    qtbot.wait(100)
    assert c._closed  # the controller stopped (timers, runs) with the dock
    c.state.set_slide(None)  # state events reach no deleted widget
