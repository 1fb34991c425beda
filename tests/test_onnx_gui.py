"""The dock lists an ONNX model from the models folder and runs it (shown napari viewer)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime", reason="ONNX models need the onnx extra (onnxruntime)")
pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")

from napari_sgnet._napari.layers import image_layer_data  # noqa: E402
from napari_sgnet._qt.widget import SGNetWidget  # noqa: E402
from napari_sgnet.config import ModelConfig  # noqa: E402
from napari_sgnet.geometry import Box  # noqa: E402
from napari_sgnet.inference.testing import pattern_slide  # noqa: E402
from napari_sgnet.registry import MODELS_ENV  # noqa: E402

pytestmark = pytest.mark.gui


def test_dock_lists_and_runs_an_onnx_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_sgnet.inference.onnx_export import export_onnx
    from napari_sgnet.model import build_model, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(
        general_branch="fcn_lite",
        patch_size=64,
        mpp=1.0,
        sci_width=32,
        sci_heads=2,
        sci_blocks=1,
        name="tiny-byom",
    )
    torch_dir = save_checkpoint(build_model(cfg), tmp_path / "torch")
    models = tmp_path / "models"
    export = export_onnx(torch_dir, models / "tiny-byom-onnx")
    assert export.labels_identical
    monkeypatch.setenv(MODELS_ENV, str(models))

    viewer = make_napari_viewer(show=True)
    slide = pattern_slide(512, 384, mpp=0.5, levels=2, name="pattern")
    data, kwargs, _ = image_layer_data(slide, name="slide")
    viewer.add_image(data, **kwargs)
    widget = SGNetWidget(viewer, store_dir=tmp_path / "stores")
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    combo = widget.model_combo
    combo.populate()
    texts = [combo.itemText(i) for i in range(combo.count())]
    index = next(i for i, t in enumerate(texts) if "[ONNX]" in t)
    assert texts[index].startswith("tiny-byom")
    combo.setCurrentIndex(index)
    combo.activated.emit(index)  # what choosing the entry with the mouse does
    qtbot.waitUntil(lambda: "tiny-byom" in widget.model_label.text(), timeout=60_000)

    c = widget.controller
    with qtbot.waitSignal(c.busy, check_params_cb=lambda b: b is False, timeout=60_000):
        widget.run_slide_btn.click()
    event = c.last_event
    assert event.stage == "completed" and event.tiles_predicted > 0, event
    store = c.session.store
    assert store.model["id"].startswith("tiny-byom:")
    labels = store.read_labels(Box(0, 0, store.width, store.height))
    assert np.isin(labels, range(6)).all() and (labels > 0).any()
