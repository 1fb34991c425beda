"""The torch-free model registry: cards, listing, lookup, lineage, the one weights digest."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.registry import (
    CheckpointError,
    ModelCard,
    ModelNotFoundError,
    find_model,
    lineage_record,
    list_models,
    model_id,
    parent_record,
    publish,
    read_card,
    staging_dir,
    weights_digest,
)
from napari_sgnet.registry import layout as registry_layout

torch = pytest.importorskip("torch")

from napari_sgnet.model import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from napari_sgnet.model.checkpoint import state_digest  # noqa: E402

CFG = ModelConfig(
    general_branch="fcn_lite",
    patch_size=64,
    mpp=None,
    sci_width=32,
    sci_heads=2,
    sci_blocks=1,
    name="toy",
)


def _model(seed: int = 0, name: str = "toy") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(CFG.replace(name=name))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A bundled folder with one model, and a models folder with a trained and a fine-tuned one."""
    root = tmp_path_factory.mktemp("registry")
    bundled, models = root / "weights", root / "models"
    save_checkpoint(_model(0, "bundled-toy"), bundled / "sgnet")
    parent_model = _model(1, "toy")
    save_checkpoint(parent_model, models / "toy")
    parent = parent_record(parent_model.config, models / "toy", state_digest(parent_model))
    name = "toy-ft-20250101-120000"
    child = _model(2, name)
    training = {"lineage": lineage_record(parent, name), "finished_at": "2025-01-01T12:00:00"}
    child_cfg = child.config.replace(training=training, metrics={"held_out_after": {"miou": 0.5}})
    staging = staging_dir(models)
    save_checkpoint(child, staging / "model", child_cfg)
    published = publish(staging / "model", models, name)
    (models / ".staging-leftover").mkdir()  # a crashed run's folder: ignored
    return {
        "root": root,
        "bundled": bundled,
        "models": models,
        "parent": parent,
        "parent_model": parent_model,
        "child": published,
    }


@pytest.fixture
def registry_env(world, monkeypatch):
    monkeypatch.setattr(registry_layout, "BUNDLED_DIR", world["bundled"])
    monkeypatch.setenv("NAPARI_SGNET_MODELS", str(world["models"]))
    return world


def test_listing_is_torch_free_and_finds_bundled_and_finetuned(world):
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from napari_sgnet.registry import layout\n"
        f"layout.BUNDLED_DIR = Path({str(world['bundled'])!r})\n"
        "from napari_sgnet.registry import find_model, list_models\n"
        "cards = list_models()\n"
        "card = find_model('toy-ft-20250101-120000')\n"
        "print(json.dumps({'cards': [[c.name, c.kind, c.parent, c.generation] for c in cards],\n"
        "                  'digest': card.digest, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "NAPARI_SGNET_MODELS": str(world["models"])}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["cards"] == [
        ["bundled-toy", "bundled", None, 0],
        ["toy", "user", None, 0],
        ["toy-ft-20250101-120000", "finetuned", "toy", 1],
    ]
    # the digest computed without torch equals the one computed from the loaded module
    assert result["digest"] == state_digest(load_checkpoint(world["child"]))


def test_card_describes_the_checkpoint(registry_env):
    card = find_model("toy")
    assert isinstance(card, ModelCard) and card.path == registry_env["models"] / "toy"
    assert card.architecture == "sgnet/fcn_lite"
    assert card.classes == tuple(CFG.palette.names) and card.palette == CFG.palette
    assert card.mpp is None and card.patch_size == 64 and card.context_factor == 2.0
    assert card.architecture_hash == CFG.architecture_hash()
    assert card.digest == state_digest(registry_env["parent_model"])
    assert card.model_id == model_id("toy", CFG.architecture_hash(), card.digest)
    assert card.parent is None and card.generation == 0 and card.lineage == {}


def test_lookup_by_name_folder_and_path(registry_env):
    models, child = registry_env["models"], registry_env["child"]
    assert find_model("toy-ft-20250101-120000").path == child
    assert find_model(child).path == child  # a path
    assert find_model(str(child)).path == child
    bundled = find_model("sgnet")  # the bundled folder name
    assert bundled.kind == "bundled" and bundled.name == "bundled-toy"
    assert find_model(None).path == registry_env["bundled"] / "sgnet"
    assert find_model("toy", models).path == models / "toy"


def test_lookup_of_an_existing_non_checkpoint_folder_names_the_missing_file(registry_env):
    with pytest.raises(CheckpointError, match="no model.safetensors") as info:
        find_model(registry_env["root"])
    assert info.value.path == registry_env["root"]


def test_unknown_name_is_a_clear_user_error(registry_env):
    with pytest.raises(ModelNotFoundError) as info:
        find_model("no-such-model")
    err = info.value
    assert isinstance(err, UserInputError)
    message = str(err)
    assert "no-such-model" in message and str(registry_env["models"]) in message
    for name in ("bundled-toy", "toy", "toy-ft-20250101-120000"):
        assert name in message
    assert err.known == ["bundled-toy", "toy", "toy-ft-20250101-120000"]


def test_lineage_of_a_published_model(registry_env, tmp_path):
    card = read_card(registry_env["child"])
    parent = registry_env["parent"]
    assert card.kind == "finetuned" and card.version == "20250101-120000"
    assert card.parent == "toy" and card.generation == 1
    assert card.created == "2025-01-01T12:00:00" and card.miou == 0.5
    assert "fine-tuned from toy" in card.label
    lineage = card.lineage
    assert lineage["root"] == "toy" and lineage["kind"] == "finetune"
    assert lineage["parent"]["digest"] == find_model("toy").digest == parent["digest"]
    assert lineage["parent"]["path"] == str(registry_env["models"] / "toy")
    # a second model of the same name never replaces the first
    staging = staging_dir(tmp_path)
    save_checkpoint(_model(3, card.name), staging / "m")
    first = publish(staging / "m", tmp_path, card.name)
    staging = staging_dir(tmp_path)
    save_checkpoint(_model(4, card.name), staging / "m")
    second = publish(staging / "m", tmp_path, card.name)
    assert (first.name, second.name) == (card.name, f"{card.name}-2")
    assert [c.path for c in list_models(tmp_path, include_bundled=False)] == [first, second]
    # newest first when names repeat
    assert find_model(card.name, tmp_path).path == second


def test_corrupt_or_foreign_config_is_named(registry_env, tmp_path, caplog):
    bad = tmp_path / "bad"
    save_checkpoint(_model(5), bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid model config") as info:
        read_card(bad)
    assert info.value.path == bad / "config.json" and str(bad / "config.json") in str(info.value)
    foreign = tmp_path / "foreign"
    save_checkpoint(_model(6), foreign)
    (foreign / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="unknown model config keys") as info:
        find_model(foreign)
    assert info.value.path == foreign / "config.json"
    assert isinstance(info.value, UserInputError)
    with caplog.at_level(logging.WARNING, logger="napari_sgnet.registry.cards"):
        assert list_models(tmp_path, include_bundled=False) == []
    assert str(bad / "config.json") in caplog.text and str(foreign / "config.json") in caplog.text


def test_weights_digest_refuses_a_non_safetensors_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="pickle") as info:
        weights_digest(tmp_path)
    assert info.value.path == tmp_path / "model.safetensors"


def test_digest_is_the_same_in_the_cli_app_and_inference_paths(registry_env, tmp_path, monkeypatch):
    from napari_sgnet.app.models import choose_model
    from napari_sgnet.cli.main import EXIT_OK, main
    from napari_sgnet.inference import describe_model, predict_slide
    from napari_sgnet.inference.models import load_predictor
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.io.labelstore import LabelStore

    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))
    path = registry_env["models"] / "toy"
    card = find_model("toy")
    module = load_checkpoint(path)
    ids = {
        "card": card.model_id,
        "inference path": describe_model(path).info.model_id,
        "inference name": describe_model("toy").info.model_id,
        "inference module": describe_model(module).info.model_id,
        "app": choose_model(path).info.model_id,
        "predictor": TorchPredictor(module, device="cpu").info.model_id,
        "loaded": load_predictor(describe_model(path), "cpu").info.model_id,
    }
    assert set(ids.values()) == {card.model_id}, ids
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 16, 0), 16, 1)
    tifffile.imwrite(tmp_path / "slide.tif", img, tile=(64, 64), photometric="rgb")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "slide.tif"), "--model", "toy", "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == EXIT_OK
    (store_path,) = out.glob("*.zarr")
    assert LabelStore.open(store_path).model["id"] == card.model_id
    # a store made from the loaded module resumes the CLI's store: same resume key
    summary = predict_slide(
        str(tmp_path / "slide.tif"), store_path, module, device="cpu", resume=True
    )
    assert LabelStore.open(store_path).model["id"] == card.model_id
    assert summary.tiles_predicted == 0 and summary.tiles_cached > 0


def test_registry_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SGNET_MODELS", str(tmp_path / "m"))
    assert registry_layout.default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("NAPARI_SGNET_MODELS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert registry_layout.default_models_dir() == tmp_path / "xdg" / "napari-sgnet" / "models"
    assert registry_layout.BUNDLED_DIR == Path(registry_layout.__file__).parents[1] / "weights"
    assert list_models(tmp_path / "missing", include_bundled=False) == []


def test_cli_model_options_take_registry_names(registry_env):
    from napari_sgnet.cli import evaluate_cmd
    from napari_sgnet.registry import resolve_model_dir

    child = registry_env["child"]
    assert evaluate_cmd._model_dir("toy-ft-20250101-120000") == child  # evaluate --model
    assert resolve_model_dir("toy-ft-20250101-120000") == child  # finetune --model
    assert resolve_model_dir(None) is None  # finetune's default: the bundled model
    with pytest.raises(ModelNotFoundError, match="known models: bundled-toy, toy"):
        evaluate_cmd._model_dir("nothing-of-that-name")
