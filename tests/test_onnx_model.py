"""Bring your own model: the bundled SGNet exported to ONNX (verified against torch), run by
the same engine, listed by the registry; malformed or mismatched ONNX models refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_sgnet.geometry import Box
from napari_sgnet.inference import describe_model, predict_slide
from napari_sgnet.inference.request import RequestError
from napari_sgnet.inference.testing import pattern_slide
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.registry import bundled_model_dir, list_models, read_card

pytest.importorskip("torch")
pytest.importorskip("onnxruntime", reason="ONNX models need the onnx extra (onnxruntime)")
pytest.importorskip("onnx", reason="ONNX models need the onnx extra (onnx)")
pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from napari_sgnet.inference.onnx_export import export_onnx

    models = tmp_path_factory.mktemp("models")
    result = export_onnx("sgnet", models / "sgnet-onnx")
    return result


def test_export_is_verified_and_listed(exported):
    assert exported.max_abs_diff < 1e-4 and exported.labels_identical
    folder = exported.path
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx"]
    assert json.loads((folder / "config.json").read_text()) == json.loads(
        (bundled_model_dir("sgnet") / "config.json").read_text()
    )
    card = read_card(folder)
    assert card.format == "onnx" and "[ONNX]" in card.label
    listed = list_models(folder.parent, include_bundled=False)
    assert [c.path for c in listed] == [folder]
    torch_id = read_card(bundled_model_dir("sgnet")).model_id
    assert card.model_id != torch_id and card.digest == read_card(folder).digest


def test_engine_runs_the_onnx_model_like_the_torch_one(tmp_path, exported):
    slide = pattern_slide(500, 380, seed=3, glass_border=40, mpp=4.0)
    options = dict(device="cpu", precision="fp32", batch_size=4)
    predict_slide(slide, tmp_path / "torch.zarr", bundled_model_dir("sgnet"), **options)
    final = predict_slide(
        slide, tmp_path / "onnx.zarr", exported.path, probabilities=True, **options
    )
    assert final.stage == "completed" and final.tiles_predicted > 0
    a, b = LabelStore.open(tmp_path / "torch.zarr"), LabelStore.open(tmp_path / "onnx.zarr")
    box = Box(0, 0, a.width, a.height)
    la, lb = a.read_labels(box), b.read_labels(box)
    assert (la > 0).mean() > 0.3
    assert (la == lb).mean() >= 0.999
    conf = np.abs(a.read_confidence(box).astype(int) - b.read_confidence(box))
    assert conf.max() <= 1
    assert (
        b.read_probabilities(box).max(0)[lb > 0].tolist() == b.read_confidence(box)[lb > 0].tolist()
    )


def _copy(exported, tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(exported.path, folder)
    return folder


def test_not_onnx_is_refused(tmp_path, exported):
    folder = _copy(exported, tmp_path, "broken")
    (folder / "model.onnx").write_bytes(b"\x80\x04 not an onnx file, maybe a pickle")
    with pytest.raises(RequestError, match=r"model\.onnx.*is not a valid ONNX model"):
        describe_model(folder)


def test_class_count_mismatch_is_refused(tmp_path, exported):
    folder = _copy(exported, tmp_path, "three-classes")
    config = json.loads((folder / "config.json").read_text())
    config["palette"]["classes"] = config["palette"]["classes"][:3]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RequestError, match=r"model\.onnx.*logits has shape .*5, 128, 128.*3"):
        describe_model(folder)


def test_inputs_and_shapes_must_match_the_config(tmp_path, exported):
    folder = _copy(exported, tmp_path, "no-context")
    config = json.loads((folder / "config.json").read_text())
    config["use_context"] = False  # a local-only config: the graph's context input is extra
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RequestError, match=r"unexpected \['context'\]"):
        describe_model(folder)
    config["use_context"], config["patch_size"] = True, 256  # fixed dims that disagree
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RequestError, match=r"local has shape \['batch', 3, 128, 128\]"):
        describe_model(folder)


def test_external_data_outside_the_folder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path / "external"
    folder.mkdir()
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["local", "w"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("local", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [weight],
    )
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    config = json.loads((bundled_model_dir("sgnet") / "config.json").read_text())
    config["use_context"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        RequestError, match=r"model\.onnx.*external data '\.\./secret\.bin' outside"
    ):
        describe_model(folder)


def test_export_model_cli_refuses_an_existing_folder(tmp_path, exported, capsys):
    from napari_sgnet.cli.main import main

    assert main(["export-model", "--out", str(exported.path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export-model", "--model", str(exported.path), "--out", str(tmp_path / "x")]) == 2
    assert "already an ONNX model" in capsys.readouterr().err
