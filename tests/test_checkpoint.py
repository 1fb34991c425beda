"""Checkpoint round trip and refusal of corrupt, pickled and mismatched files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.model import (
    CheckpointError,
    build_model,
    bundled_model_dir,
    list_bundled,
    load_checkpoint,
    save_checkpoint,
)
from napari_sgnet.model import bundled as bundled_mod
from napari_sgnet.model.checkpoint import state_digest
from napari_sgnet.registry import ModelNotFoundError, weights_digest
from napari_sgnet.registry import layout as registry_layout

CFG = ModelConfig(
    general_branch="fcn_lite", patch_size=64, sci_width=32, sci_heads=4, sci_window=4, sci_blocks=1
)


@pytest.fixture(scope="module")
def trained():
    """A tiny SGNet whose BN running statistics differ from their defaults."""
    torch.manual_seed(0)
    model = build_model(CFG)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 128, 128))
    return model.eval()


@pytest.fixture
def ckpt(tmp_path, trained) -> Path:
    return save_checkpoint(trained, tmp_path / "ckpt")


def refused(path, *words) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert Path(info.value.path).name in message
    for word in words:
        assert word in message, message
    return info.value


def test_round_trip_is_bit_exact(ckpt, trained):
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(ckpt)
    assert not loaded.training and loaded.config == CFG
    a, b = trained.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x, c = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        oa, ob = trained(x, c), loaded(x, c)
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    # the weights file alone works too (config.json beside it)
    assert load_checkpoint(ckpt / "model.safetensors").config == CFG


def test_provenance_travels_and_overwrite(tmp_path, trained, ckpt):
    with pytest.raises(CheckpointError, match="not empty"):
        save_checkpoint(trained, ckpt)
    cfg = CFG.replace(name="tuned", metrics={"miou": 0.5}, training={"steps": 3})
    save_checkpoint(trained, ckpt, cfg, overwrite=True)
    loaded = load_checkpoint(ckpt)
    assert loaded.config.metrics == {"miou": 0.5} and loaded.config.name == "tuned"
    assert not list(ckpt.glob(".*tmp"))
    with pytest.raises(CheckpointError, match="different architecture"):
        save_checkpoint(trained, tmp_path / "other", CFG.replace(sci_width=64))
    (tmp_path / "empty").mkdir()
    save_checkpoint(trained, tmp_path / "empty")  # an empty directory is fine


def test_truncated_and_random_bytes(ckpt):
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1])
    refused(ckpt, "model.safetensors", "truncated")
    weights.write_bytes(data[: len(data) // 2])
    refused(ckpt, "model.safetensors", "truncated")
    weights.write_bytes(data[:5])
    refused(ckpt, "model.safetensors")
    weights.write_bytes(b"")
    refused(ckpt, "model.safetensors")
    weights.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    refused(ckpt, "model.safetensors", "not a safetensors file")
    weights.write_bytes(data[:8] + b"{" + b"\xff" * (len(data) - 9))
    refused(ckpt, "model.safetensors", "corrupt")


def test_pickles_are_refused(ckpt, trained):
    weights = ckpt / "model.safetensors"
    torch.save(trained.state_dict(), weights)  # zip-format pickle under the safetensors name
    refused(ckpt, "model.safetensors", "pickle")
    torch.save(trained.state_dict(), weights, _use_new_zipfile_serialization=False)
    refused(ckpt, "model.safetensors", "pickle")
    weights.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    refused(ckpt, "model.safetensors", "pickle")
    pt = ckpt / "model.pt"
    torch.save(trained.state_dict(), pt)
    refused(pt, "model.pt", "pickle")
    refused(ckpt / "weights.pth", "weights.pth", "pickle")


def test_config_problems(ckpt):
    config = ckpt / "config.json"
    good = json.loads(config.read_text())
    config.write_text(json.dumps({**good, "sci_width": 64}))
    refused(ckpt, "model.safetensors", "architecture")
    palette = dict(good["palette"], classes=good["palette"]["classes"][:3])
    config.write_text(json.dumps({**good, "palette": palette}))
    refused(ckpt, "model.safetensors", "architecture")
    config.write_text(json.dumps({**good, "general_branch": "nope"}))
    refused(ckpt)  # hash mismatch fires first; the branch name is covered below
    config.write_text("{not json")
    refused(ckpt, "config.json", "invalid model config")
    config.write_text(json.dumps({**good, "bogus": 1}))
    refused(ckpt, "config.json", "bogus")
    config.unlink()
    refused(ckpt, "config.json", "not found")
    refused(ckpt.parent / "missing", "model.safetensors", "not found")


def rewrite(ckpt: Path, edit, metadata=None) -> None:
    weights = ckpt / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, str(weights), metadata=meta if metadata is None else metadata)


def test_tensor_mismatches(ckpt):
    rewrite(ckpt, lambda t: t.update(extra=torch.zeros(3)))
    refused(ckpt, "model.safetensors", "unexpected tensors: 1: extra")
    rewrite(ckpt, lambda t: (t.pop("extra"), t.pop("head.1.weight")))
    refused(ckpt, "model.safetensors", "missing tensors: 1: head.1.weight")
    rewrite(ckpt, lambda t: t.update({"head.1.weight": torch.zeros(5, 31, 1, 1)}))
    refused(ckpt, "model.safetensors", "mismatched tensors", "head.1.weight F32[5, 31, 1, 1]")
    rewrite(
        ckpt, lambda t: t.update({"head.1.weight": torch.zeros(5, 32, 1, 1, dtype=torch.float16)})
    )
    refused(ckpt, "model.safetensors", "mismatched tensors", "F16")
    rewrite(ckpt, lambda t: t.update({"head.1.weight": torch.full((5, 32, 1, 1), float("nan"))}))
    refused(ckpt, "model.safetensors", "non-finite", "head.1.weight")


def test_foreign_or_newer_metadata(ckpt):
    rewrite(ckpt, lambda t: None, metadata={})
    refused(ckpt, "not a napari-sgnet checkpoint")
    meta = {"format": "napari-sgnet", "format_version": "99", "architecture_hash": "x"}
    rewrite(ckpt, lambda t: None, metadata=meta)
    refused(ckpt, "newer")


def test_error_pickles_for_workers():
    err = CheckpointError("/x/model.safetensors", "broken")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "/x/model.safetensors: broken"
    assert isinstance(err, ValueError)


def test_bundled(tmp_path, monkeypatch, trained):
    monkeypatch.setattr(registry_layout, "BUNDLED_DIR", tmp_path)
    assert list_bundled() == []
    with pytest.raises(ModelNotFoundError, match="sgnet: checkpoint folder not found") as info:
        bundled_model_dir()
    assert info.value.wanted == "sgnet" and info.value.known == []
    assert isinstance(info.value, UserInputError)
    save_checkpoint(trained, tmp_path / "sgnet")
    (tmp_path / "half").mkdir()
    assert list_bundled() == ["sgnet"]
    assert bundled_model_dir("sgnet") == tmp_path / "sgnet"
    assert bundled_mod.load_bundled("sgnet").config == CFG
    with pytest.raises(ModelNotFoundError, match=r"known models: sgnet"):
        bundled_model_dir("half")
    with pytest.raises(ValueError):
        bundled_model_dir("../sgnet")


def test_state_digest_equals_the_file_digest(tmp_path, trained):
    save_checkpoint(trained, tmp_path / "ckpt")
    digest = weights_digest(tmp_path / "ckpt" / "model.safetensors")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert state_digest(trained) == digest == weights_digest(tmp_path / "ckpt")
    assert state_digest(load_checkpoint(tmp_path / "ckpt")) == digest
    changed = build_model(CFG)
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    assert state_digest(changed) != digest
    # the digest is of the tensors: other file metadata or tensor order give the same digest
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")
    (tmp_path / "other").mkdir()
    save_file(dict(reversed(tensors.items())), tmp_path / "other" / "model.safetensors",
              metadata={"something": "else"})
    assert weights_digest(tmp_path / "other" / "model.safetensors") == digest
