"""No lost labels by construction, slide references, and store integrity (issues 12 and 14).

Each hostile case of issue 14 is reproduced through the CLI on tiny TIFF slides and a tiny
checkpoint, and the store (or slide) is compared byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sgnet.cli.main import build_parser
from napari_sgnet.errors import StoreError
from napari_sgnet.io.labelstore import LabelStore


def _cli(*argv: str) -> int:
    parser = build_parser()
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args))


def _tree_digest(path: Path) -> str:
    """SHA-256 over every file's relative name and bytes (a folder) or the bytes (a file)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _slide(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("models")
    for seed, name in ((0, "model_a"), (1, "model_b")):
        torch.manual_seed(seed)
        cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=None, sci_width=32,
                          sci_heads=2, sci_blocks=1)  # fmt: skip
        save_checkpoint(build_model(cfg), root / name)
    # A checkpoint that describes fine (config + weights digest) but is refused at load:
    # its config promises other layer widths than its weights have.
    shutil.copytree(root / "model_b", root / "broken")
    cfg = json.loads((root / "broken" / "config.json").read_text())
    cfg["sci_width"] = 16
    (root / "broken" / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))


def _predict(slide: Path, out: Path, model: Path, *extra: str) -> int:
    return _cli("predict", slide, "--model", model, "--out", out, "--device", "cpu",
                "--batch-size", "4", "--no-progress", *extra)  # fmt: skip


@pytest.fixture
def predicted(tmp_path, models):
    slide = _slide(tmp_path / "data" / "slide.tif", 0)
    out = tmp_path / "data"
    assert _predict(slide, out, models / "model_a") == 0
    return slide, out / "slide.sgnet.zarr"


def test_refused_checkpoint_with_resume_leaves_the_store_byte_identical(predicted, models, capsys):
    slide, store = predicted
    before = _tree_digest(store)
    code = _predict(slide, store.parent, models / "broken", "--resume")
    assert code == 2
    assert "broken" in capsys.readouterr().err
    assert _tree_digest(store) == before  # model id and done-map untouched


def test_refused_checkpoint_with_overwrite_puts_the_old_store_back(predicted, models):
    slide, store = predicted
    before = _tree_digest(store)
    assert _predict(slide, store.parent, models / "broken", "--overwrite") == 2
    assert _tree_digest(store) == before
    assert not list(store.parent.glob("slide.sgnet.zarr.*"))  # no .old-* or .tmp-* left


def test_overwrite_replaces_and_deletes_the_old_store_after_the_first_commit(predicted, models):
    slide, store = predicted
    old_id = LabelStore.open(store, mode="r").model["id"]
    assert _predict(slide, store.parent, models / "model_b", "--overwrite") == 0
    assert LabelStore.open(store, mode="r").model["id"] != old_id
    assert not list(store.parent.glob("slide.sgnet.zarr.*"))


def test_same_stem_slides_get_two_stores(tmp_path, models):
    a = _slide(tmp_path / "a" / "slide.tif", 0)
    b = _slide(tmp_path / "b" / "slide.tif", 1)
    out = tmp_path / "out"
    assert _predict(a, out, models / "model_a", "--overwrite") == 0
    assert _predict(b, out, models / "model_a", "--overwrite") == 0
    stores = sorted(p.name for p in out.glob("*.sgnet.zarr"))
    assert len(stores) == 2 and "slide.sgnet.zarr" in stores
    from napari_sgnet.app.store_paths import find_store_path
    from napari_sgnet.io import open_pyramid

    for slide in (a, b):  # each store is its slide's, and the app finds the same one
        pyramid = open_pyramid(slide)
        path = find_store_path(pyramid, out)
        LabelStore.open(path, slide=pyramid, mode="r")
    assert find_store_path(open_pyramid(a), out).name == "slide.sgnet.zarr"
    # and a re-run resumes into the same two stores instead of making a third
    assert _predict(b, out, models / "model_a", "--resume") == 0
    assert len(list(out.glob("*.sgnet.zarr"))) == 2


@pytest.mark.parametrize("fmt", ["tiff", "ome-zarr", "geojson"])
def test_export_into_the_store_or_over_the_slide_is_refused(predicted, fmt, capsys):
    slide, store = predicted
    before_store, before_slide = _tree_digest(store), _tree_digest(slide)
    for out in (store / "x.out", store, slide, store.parent):
        code = _cli("export", store, "--format", fmt, "--out", out, "--overwrite", "-q")
        assert code == 2, out
        assert "choose another output path" in capsys.readouterr().err
    assert _tree_digest(store) == before_store
    assert _tree_digest(slide) == before_slide


def test_interrupted_creation_leaves_no_store_and_a_rerun_works(tmp_path, models, monkeypatch):
    import napari_sgnet.io.labelstore.store as store_mod

    slide = _slide(tmp_path / "s" / "slide.tif", 0)
    real = store_mod.create_group

    def disk_full(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod, "create_group", disk_full)
    assert _predict(slide, tmp_path / "s", models / "model_a") == 2
    assert not list((tmp_path / "s").glob("slide.sgnet.zarr*"))  # neither store nor tmp
    monkeypatch.setattr(store_mod, "create_group", real)
    # A tmp sibling of a process that is gone (a SIGKILL during creation) is cleaned up, and
    # a folder left by an interrupted creation of an earlier version is replaced.
    stale = tmp_path / "s" / "slide.sgnet.zarr.tmp-999999999"
    stale.mkdir()
    import zarr

    zarr.open_group(tmp_path / "s" / "slide.sgnet.zarr", mode="w-").create_array(
        "done", shape=(2, 2), dtype="uint8"
    )
    assert _predict(slide, tmp_path / "s", models / "model_a", "--resume") == 0
    assert not stale.exists()
    LabelStore.open(tmp_path / "s" / "slide.sgnet.zarr", mode="r").validate(deep=True)


def test_overwrite_through_a_symlink_is_refused_cleanly(predicted, models, tmp_path, capsys):
    slide, store = predicted
    link = tmp_path / "linkdir"
    link.mkdir()
    (link / "slide.sgnet.zarr").symlink_to(store)
    assert _predict(slide, link, models / "model_a", "--overwrite") == 2
    assert "symbolic link" in capsys.readouterr().err
    assert LabelStore.is_store(store)


def test_moved_folder_finds_its_slide_relative_to_the_store(predicted, tmp_path, monkeypatch):
    from napari_sgnet._napari.session import store_layers
    from napari_sgnet.io.labelstore.slide_ref import find_slide

    _, store = predicted
    moved = tmp_path / "moved"
    os.rename(store.parent, moved)
    monkeypatch.chdir(tmp_path)  # opened from another folder
    opened = LabelStore.open(moved / "slide.sgnet.zarr", mode="r")
    assert Path(opened.slide_identity["source"]).is_absolute()
    found = find_slide(opened)
    assert Path(found.source).resolve() == (moved / "slide.tif").resolve()
    assert len(store_layers(moved / "slide.sgnet.zarr")) == 2  # slide + labels


def test_missing_slide_says_so_and_slide_relinks(predicted, tmp_path, capsys):
    from napari_sgnet.io.labelstore.slide_ref import find_slide

    slide, store = predicted
    elsewhere = tmp_path / "archive" / "renamed.tif"
    elsewhere.parent.mkdir()
    os.rename(slide, elsewhere)
    with pytest.raises(StoreError, match="--slide"):
        find_slide(LabelStore.open(store, mode="r"))
    assert _cli("check", store, "--slide", elsewhere) == 0
    assert "re-linked" in capsys.readouterr().out
    reopened = LabelStore.open(store, mode="r")
    assert reopened.slide_identity["source"] == str(elsewhere.absolute())
    assert Path(find_slide(reopened).source) == elsewhere.absolute()


def test_a_different_slide_with_the_same_name_is_refused(predicted, tmp_path):
    from napari_sgnet._napari.session import store_layers
    from napari_sgnet.io.labelstore.slide_ref import find_slide

    slide, store = predicted
    _slide(slide, 7)  # another slide now has the recorded name and place
    with pytest.raises(StoreError, match="different slide"):
        find_slide(LabelStore.open(store, mode="r"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = store_layers(store)
    assert len(layers) == 1  # the labels alone, never over the wrong slide
    assert any("different slide" in str(w.message) for w in caught)
    with pytest.raises(StoreError, match="size differs|pixel content differs"):
        find_slide(LabelStore.open(store, mode="r"), slide)


def _corrupt_a_level0_chunk(store: Path) -> Path:
    chunk = sorted((store / "0" / "c").rglob("*"))
    victim = next(p for p in chunk if p.is_file())
    victim.write_bytes(b"\x28\xb5\x2f\xfd garbage, not zstd" * 4)
    return victim


def test_check_finds_a_corrupt_chunk_and_repair_fixes_it(predicted, models, tmp_path, capsys):
    slide, store = predicted
    clean = tmp_path / "clean"
    assert _predict(slide, clean, models / "model_a") == 0
    assert _cli("check", store) == 0
    _corrupt_a_level0_chunk(store)
    capsys.readouterr()
    assert _cli("check", store) == 2
    out = capsys.readouterr().out
    assert "array '0' chunk" in out and "cannot be decoded" in out
    # --resume refuses to trust the damaged tile, and names the repair
    assert _predict(slide, store.parent, models / "model_a", "--resume") == 2
    assert "check" in capsys.readouterr().err
    assert _cli("check", store, "--repair", "--model", models / "model_a", "--device", "cpu") == 0
    from napari_sgnet.inference.testing import differing_arrays

    assert differing_arrays(store, clean / "slide.sgnet.zarr") == []


def test_export_of_a_corrupt_store_names_the_tile(predicted, tmp_path, capsys):
    _, store = predicted
    _corrupt_a_level0_chunk(store)
    for fmt in ("tiff", "geojson", "ome-zarr"):
        code = _cli("export", store, "--format", fmt, "--out", tmp_path / f"x.{fmt}", "-q")
        err = capsys.readouterr().err
        assert code == 2, err
        assert "chunk" in err and "tile (" in err and "Traceback" not in err
    from napari_sgnet._napari.session import store_layers

    labels = store_layers(store, with_slide=False)[-1][0]  # the reader's dask levels
    with pytest.raises(StoreError, match=r"array '0' chunk .* tile \("):
        np.asarray(labels[0])


def test_a_store_whose_level0_shape_was_edited_is_refused(predicted, tmp_path, capsys):
    _, store = predicted
    meta_file = store / "0" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["shape"] = [10, 10]
    meta_file.write_text(json.dumps(meta))
    assert _cli("export", store, "--format", "tiff", "--out", tmp_path / "x.tif", "-q") == 2
    assert "level 0" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()
    assert _cli("check", store) == 2


def test_old_store_without_fingerprint_still_opens(predicted, caplog):
    from napari_sgnet.io import open_pyramid

    slide, store = predicted
    s = LabelStore.open(store)
    s.records.update(lambda m: m["slide"].pop("fingerprint"))
    with caplog.at_level("WARNING"):
        LabelStore.open(store, slide=open_pyramid(slide), mode="r")
    assert "no pixel fingerprint" in caplog.text


KILL_SCRIPT = """
import sys, time
import napari_sgnet.io.labelstore.store as store_mod
real = store_mod.create_group
def slow(path, *a, **k):
    group = real(path, *a, **k)
    print("built", flush=True)
    time.sleep(60)  # killed here: the store exists only as its temporary sibling
    return group
store_mod.create_group = slow
from napari_sgnet.cli.main import main
sys.exit(main(["predict", sys.argv[1], "--model", sys.argv[2], "--out", sys.argv[3],
               "--device", "cpu", "--no-progress"]))
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_creation_leaves_no_store_and_a_rerun_works(tmp_path, models):
    import signal
    import subprocess
    import sys

    slide = _slide(tmp_path / "k" / "slide.tif", 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(slide), str(models / "model_a"),
         str(tmp_path / "k")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"built" in line, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (tmp_path / "k" / "slide.sgnet.zarr").exists()
    assert list((tmp_path / "k").glob("slide.sgnet.zarr.tmp-*"))  # the half-built sibling
    assert _predict(slide, tmp_path / "k", models / "model_a", "--resume") == 0
    assert not list((tmp_path / "k").glob("slide.sgnet.zarr.tmp-*"))  # cleaned up
    LabelStore.open(tmp_path / "k" / "slide.sgnet.zarr", mode="r").validate(deep=True)


def test_finetune_finds_a_moved_stores_slide(predicted, tmp_path, monkeypatch):
    from napari_sgnet.training.finetune.correction_types import FinetuneError, StoreCorrections
    from napari_sgnet.training.finetune.store_corrections import _open_slide

    _, store = predicted
    moved = tmp_path / "elsewhere"
    os.rename(store.parent, moved)
    monkeypatch.chdir(tmp_path)
    opened = LabelStore.open(moved / "slide.sgnet.zarr", mode="r")
    pyramid = _open_slide(StoreCorrections(opened), opened)
    assert Path(pyramid.source).resolve() == (moved / "slide.tif").resolve()
    (moved / "slide.tif").unlink()
    with pytest.raises(FinetuneError, match="--slide"):
        _open_slide(StoreCorrections(opened), opened)


def test_store_path_inside_the_slide_or_a_link_to_the_store_is_refused(
    predicted, models, tmp_path, capsys
):
    slide, store = predicted
    assert _predict(slide, slide, models / "model_a") == 2  # --out is the slide file
    assert "inside the input slide" in capsys.readouterr().err
    link = tmp_path / "link.tif"
    link.symlink_to(store)
    before = _tree_digest(store)
    assert _cli("export", store, "--format", "tiff", "--out", link, "--overwrite", "-q") == 2
    assert _tree_digest(store) == before


def test_a_slide_with_a_damaged_tile_is_a_typed_refusal(tmp_path, models, capsys):
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tf:
        offset = tf.pages[0].dataoffsets[5]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 32)
    assert _predict(path, tmp_path, models / "model_a") == 2
    err = capsys.readouterr().err
    assert "bad.tif" in err and "Traceback" not in err


def test_check_refuses_bad_done_values_and_non_stores(predicted, tmp_path, capsys):
    _, store = predicted
    s = LabelStore.open(store)
    s.pixels.done[0, 0] = 7
    assert _cli("check", store) == 2
    assert "done values [7]" in capsys.readouterr().out
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a napari-sgnet label store|no zarr group"):
        _cli("check", tmp_path / "plain")


def test_more_hostile_stores_are_refused_with_messages(predicted, models, tmp_path, capsys):
    """Repair without the slide or the model, a corrupt done-map under --resume, a missing
    array, garbage root metadata: each a clean refusal naming the store (exit 2 through
    ``main``), or a structural problem repair refuses to patch."""
    slide, store = predicted
    copy = tmp_path / "copy" / "slide.sgnet.zarr"
    shutil.copytree(store, copy)
    # 1. the repair needs the model: the store's name is not an installed model
    _corrupt_a_level0_chunk(copy)
    with pytest.raises(StoreError, match="pass --model"):
        _cli("check", copy, "--repair")
    # 2. ... and the slide: moved away, the message says --slide
    os.rename(slide, tmp_path / "gone.tif")
    with pytest.raises(StoreError, match="--slide"):
        _cli("check", copy, "--repair", "--model", models / "model_a")
    os.rename(tmp_path / "gone.tif", slide)
    # 3. a corrupt done-map chunk: --resume refuses and names it
    (store / "done" / "c" / "0" / "0").write_bytes(b"not zstd at all")
    assert _predict(slide, store.parent, models / "model_a", "--resume") == 2
    assert "'done' chunk 0/0" in capsys.readouterr().err
    # 4. a missing array: check reports it, repair refuses (re-predict afresh)
    shutil.rmtree(copy / "confidence")
    with pytest.raises(StoreError, match="'confidence' is missing"):
        _cli("check", copy)
    # 5. a structural problem: check reports it, repair refuses (predict afresh)
    other = tmp_path / "other" / "slide.sgnet.zarr"
    shutil.copytree(store, other)
    meta = json.loads((other / "edited" / "zarr.json").read_text())
    meta["shape"] = [5, 5]
    (other / "edited" / "zarr.json").write_text(json.dumps(meta))
    assert _cli("check", other) == 2
    assert "edited is" in capsys.readouterr().out
    with pytest.raises(StoreError, match="--overwrite"):
        _cli("check", other, "--repair", "--model", models / "model_a")
    # 6. garbage root metadata
    (copy / "zarr.json").write_text("{ not json")
    with pytest.raises(StoreError):
        _cli("check", copy)


def test_free_space_is_checked_before_anything_is_written(tmp_path, monkeypatch):
    import collections

    from napari_sgnet.inference.testing import pattern_slide
    from napari_sgnet.io.labelstore import atomic
    from napari_sgnet.palette import GLEASON

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 2**20))
    with pytest.raises(StoreError, match="not enough free space"):
        LabelStore.create(tmp_path / "s.sgnet.zarr", slide=pattern_slide(), palette=GLEASON)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_api_moves_aside_and_restores(tmp_path):
    from napari_sgnet.inference.testing import pattern_slide
    from napari_sgnet.palette import GLEASON

    path = tmp_path / "s.sgnet.zarr"
    slide = pattern_slide(300, 200)
    old = LabelStore.create(path, slide=slide, palette=GLEASON, tile=64)
    old.mark_done((0, 0))
    before = _tree_digest(path)
    new = LabelStore.create(path, slide=slide, palette=GLEASON, tile=64, overwrite=True)
    assert new.replaced is not None and new.replaced.exists()
    assert new.done_map().sum() == 0
    assert new.restore_replaced()
    assert _tree_digest(path) == before and not list(tmp_path.glob("*.old-*"))
    newer = LabelStore.create(path, slide=slide, palette=GLEASON, tile=64, overwrite=True)
    aside = newer.replaced
    newer.mark_done((1, 1))  # the first commit deletes the old store
    assert aside is not None and not aside.exists() and newer.replaced is None


@pytest.mark.parametrize(
    ("out", "ok"),
    [("data/x.tif", True), ("data/slide.tif", False), ("data/s.zarr/0", False),
     ("data/s.zarr", False), ("data", False), ("link", False)],
)  # fmt: skip
def test_check_output_path(tmp_path, out, ok):
    from napari_sgnet.io.labelstore.outputs import check_output_path

    (tmp_path / "data" / "s.zarr").mkdir(parents=True)
    (tmp_path / "data" / "slide.tif").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "data" / "slide.tif")
    args = dict(slide=tmp_path / "data" / "slide.tif", store=tmp_path / "data" / "s.zarr")
    if ok:
        check_output_path(tmp_path / out, **args)
    else:
        with pytest.raises(StoreError, match="choose another output path"):
            check_output_path(tmp_path / out, **args)
