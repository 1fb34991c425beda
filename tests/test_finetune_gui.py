"""The "Fine-tune" dock widget in a real napari window (Xvfb): it runs in a thread worker,
reports the held-out figures, offers the new model and uses it only when asked; the review
dock of the same viewer hears of it through the viewer's AppState (no process global)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from test_finetune import make_store, toy_slide, wrong_model

from napari_sgnet.app.review import ReviewSession
from napari_sgnet.app.state import state_for
from napari_sgnet.training.finetune.corrections import StoreCorrections

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    from napari_sgnet._qt.finetune_widget import FinetuneWidget

    slide, truth = toy_slide()
    store = make_store(tmp_path / "toy.sgnet.zarr", slide, truth)
    base = wrong_model(tmp_path / "base")
    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer, models_dir=tmp_path / "models")
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    assert widget.state is state_for(viewer)
    return SimpleNamespace(viewer=viewer, widget=widget, state=widget.state, slide=slide,
                           store=store, base=base, models=tmp_path / "models", tmp=tmp_path)


def _wait_done(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_widget_runs_reports_and_offers(setup, qtbot):
    from napari.components import ViewerModel

    from napari_sgnet._qt.widget import SGNetWidget

    w, state = setup.widget, setup.state
    assert "No review session" in w.status_label.text()  # no review session yet
    assert not w.start()  # nothing to fine-tune on yet
    review = SGNetWidget(setup.viewer, model=setup.base, store_dir=setup.tmp / "stores")
    setup.viewer.window.add_dock_widget(review, name="SGNet")
    assert review.state is state
    base = state.model
    w.add_source(StoreCorrections(setup.store.path, setup.slide), "toy store")
    w.refresh_models(select=setup.base)
    assert w.base_model() == setup.base
    w.steps_spin.setValue(3)
    w.lr_spin.setValue(1e-3)
    offered: list[Path] = []
    w.offered.connect(offered.append)
    reports: list[str] = []
    w._bridge.report.connect(lambda ev: reports.append(w.status_label.text()))
    w.run_btn.click()
    assert w.running and not w.run_btn.isEnabled() and w.cancel_btn.isEnabled()
    _wait_done(qtbot, w)
    r = w.result
    assert r is not None and not r.cancelled, w.status_label.text()
    assert offered == [r.checkpoint] and r.checkpoint.parent == setup.models
    assert any("loss" in t and "ETA" in t for t in reports)  # progress: loss, steps, ETA
    text = w.result_label.text()
    assert "Held-out mIoU" in text and "→" in text and r.name in text
    # offered, not swapped in: nothing changed until the user presses the button
    assert w.use_btn.isEnabled() and state.offered == r.checkpoint
    assert state.model is base and review.controller.model is base
    assert r.name not in review.model_label.text()
    assert w.model_combo.findData(str(r.checkpoint)) >= 0  # listed with earlier models
    assert w.model_combo.findData(str(setup.base)) >= 0
    used: list[Path] = []
    w.accepted.connect(used.append)
    w.use_btn.click()
    assert used == [r.checkpoint] and state.offered is None
    assert w.base_model() == r.checkpoint and not w.use_btn.isEnabled()
    # the review dock switched through the state's model event, nothing else
    assert state.model.path == r.checkpoint.resolve()
    assert review.controller.model is state.model
    assert r.name in review.model_label.text()
    assert review.model_combo.currentData() == str(r.checkpoint)
    assert state_for(ViewerModel()).model is None  # another viewer is not affected


def test_widget_uses_the_review_session_and_cancels(setup, qtbot):
    w, state = setup.widget, setup.state
    state.set_session(ReviewSession(setup.slide, setup.store))  # as the review dock does
    assert state.set_model(setup.base)
    chosen: list = []
    state.events.model.connect(chosen.append)
    assert w.add_review_store() and len(w.sources()) == 1
    assert w.add_review_store() and len(w.sources()) == 1  # no duplicates
    w.refresh_models()
    assert w.base_model() == setup.base  # defaults to the review's model
    w.steps_spin.setValue(500)
    w.run_btn.click()
    qtbot.waitUntil(lambda: "Fine-tuning" in w.status_label.text(), timeout=TIMEOUT)
    w.cancel_btn.click()
    _wait_done(qtbot, w)
    assert w.result is not None and w.result.cancelled
    assert "no model was written" in w.status_label.text()
    assert not w.use_btn.isEnabled() and chosen == [] and state.offered is None
    assert not setup.models.exists() or list(setup.models.iterdir()) == []


def test_widget_reports_bad_input(setup, qtbot, tmp_path):
    w = setup.widget
    assert not w.add_folder(tmp_path)  # neither a store nor a patch folder
    assert "neither a label store nor a patch folder" in w.status_label.text()
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.palette import GLEASON

    empty = LabelStore.create(tmp_path / "empty.zarr", slide=setup.slide, palette=GLEASON,
                              tile=32)
    w.add_source(StoreCorrections(empty.path, setup.slide), "empty")
    w.refresh_models(select=setup.base)
    w.run_btn.click()
    _wait_done(qtbot, w)
    assert w.result is None and "empty.zarr" in w.status_label.text()
    assert "no committed corrections" in w.status_label.text()
    assert w.run_btn.isEnabled() and not w.use_btn.isEnabled()
