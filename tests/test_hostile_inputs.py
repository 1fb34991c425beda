"""Hostile inputs: tiny files that declare absurd sizes, lie in their tags, or carry absurd
numbers; options out of range; a run killed at random moments; a disk that fills up.

Every case must end in a typed refusal naming the file (or the option) and the numbers,
within seconds, with memory bounded: no MemoryError, no hang, no traceback, no wrong pixels.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import hostile_craft as craft
import numpy as np
import pytest
import tifffile
import zarr

from napari_sgnet.cli import main as cli_main
from napari_sgnet.config import ConfigError, ModelConfig
from napari_sgnet.errors import CorruptSlideError, OptionError, ResourceLimitError, SlideError
from napari_sgnet.io import open_pyramid
from napari_sgnet.io.readers import probe
from napari_sgnet.validate import (
    MAX_PIXELS_ENV,
    MAX_READ_BYTES_ENV,
    check_int,
    check_mpp,
    json_depth_problem,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))


def cli(*args: str) -> int:
    return cli_main.main([str(a) for a in args])


# ----------------------------------------------------------------------------- memory bombs


def test_tiff_declaring_a_trillion_pixels_is_refused_from_metadata(tmp_path, capsys):
    path = craft.declared_huge_tiff(tmp_path / "huge.tif", 10**6, 10**6)
    assert path.stat().st_size < 250_000
    with pytest.raises(ResourceLimitError, match="huge.tif") as info:
        open_pyramid(path)
    text = str(info.value)
    assert "1000000 x 1000000" in text and MAX_PIXELS_ENV in text
    assert not probe(path).ok
    assert cli("info", path) == cli_main.EXIT_BAD_INPUT
    assert "huge.tif" in capsys.readouterr().err


def test_napari_reader_refuses_a_declared_huge_tiff(tmp_path):
    from napari_sgnet._napari.reader import get_reader

    path = craft.declared_huge_tiff(tmp_path / "huge.tif", 10**6, 10**6)
    assert get_reader(str(path)) is None  # the reader does not claim it
    from napari_sgnet._napari.reader import read_slide

    with pytest.raises(SlideError, match="huge.tif"):
        read_slide(str(path))


def test_sparse_tiff_with_4096_px_tiles_info_reads_metadata_only(tmp_path, capsys):
    """A valid 200,000 x 200,000 px sparse TIFF: ``info`` answers at once, builds nothing."""
    path = craft.sparse_tiff(tmp_path / "sparse.tif", 200_000, tile=4096)
    start = time.monotonic()
    assert cli("info", path, "--json") == cli_main.EXIT_OK
    assert time.monotonic() - start < 20
    described = json.loads(capsys.readouterr().out)
    assert described["width"] == 200_000 and len(described["levels"]) > 5
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_limits_are_configurable_and_named(tmp_path, monkeypatch):
    path = craft.tiled_tiff(tmp_path / "small.tif")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ResourceLimitError, match=r"256 x 256 px .*1e\+03"):
        open_pyramid(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "not-a-number")
    with pytest.raises(OptionError, match=MAX_PIXELS_ENV):
        open_pyramid(path)


def test_decode_budget_refuses_one_oversized_read(tmp_path, monkeypatch):
    path = craft.tiled_tiff(tmp_path / "small.tif")
    pyramid = open_pyramid(path)
    monkeypatch.setenv(MAX_READ_BYTES_ENV, "10000")
    with pytest.raises(ResourceLimitError, match="small.tif.*decode budget"):
        pyramid.levels[0].compute()


def test_omezarr_declaring_1e9_px_per_side_is_refused(tmp_path):
    path = craft.huge_omezarr(tmp_path / "big.ome.zarr", 10**9)
    with pytest.raises(ResourceLimitError, match="big.ome.zarr"):
        open_pyramid(path)
    assert not probe(path).ok


def test_omezarr_within_the_limit_opens_lazily(tmp_path):
    path = craft.huge_omezarr(tmp_path / "ok.ome.zarr", 100_000, chunk=1024)
    pyramid = open_pyramid(path)  # 1e10 px, no chunk stored: nothing is read
    assert pyramid.width == 100_000


def test_png_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    import imagecodecs

    path = tmp_path / "huge.png"
    data = bytearray(imagecodecs.png_encode(np.zeros((8, 8, 3), np.uint8)))
    struct.pack_into(">II", data, 16, 200_000, 200_000)  # IHDR width, height
    path.write_bytes(bytes(data))
    with pytest.raises(ResourceLimitError, match="huge.png"):
        open_pyramid(path)


def test_predict_refuses_a_declared_huge_slide_without_growing(tmp_path, capsys):
    path = craft.declared_huge_tiff(tmp_path / "huge.tif", 10**7, 10**7)
    assert cli("predict", path, "--out", tmp_path / "out", "--no-progress", "--mpp", "0.5") == (
        cli_main.EXIT_BAD_INPUT
    )
    assert "huge.tif" in capsys.readouterr().err
    assert not (tmp_path / "out" / "huge.sgnet.zarr").exists()


# ------------------------------------------------------------------------ wrong without a word


def test_truncated_pyramid_is_refused_not_read_wrong(tmp_path):
    source = craft.pyramid_tiff(tmp_path / "pyr.tif", 1024)
    assert open_pyramid(source).n_levels == 3
    for fraction in (0.77, 0.5, 0.95):
        cut = craft.truncated(tmp_path / f"cut{int(fraction * 100)}.tif", source, fraction)
        with pytest.raises(CorruptSlideError, match=cut.name):
            open_pyramid(cut)
        assert not probe(cut).ok


@pytest.mark.parametrize("keep", [500_000, 200])
def test_truncated_real_svs_is_refused_naming_the_file(tmp_path, keep):
    """The bundled Aperio slide cut short (its IFDs live at the end of the file)."""
    cut = tmp_path / "cut.svs"
    cut.write_bytes((ROOT / "sample_data" / "CMU-1-Small-Region.svs").read_bytes()[:keep])
    with pytest.raises(SlideError, match=r"cut\.svs.*(truncated|damaged|not a)"):
        open_pyramid(cut)
    assert not probe(cut).ok


def test_tile_table_claiming_2_30_values_is_refused(tmp_path):
    path = craft.tiled_tiff(tmp_path / "lying.tif")
    craft.set_tag(path, "TileOffsets", count=2**30)
    with pytest.raises(CorruptSlideError, match="lying.tif.*damaged TIFF"):
        open_pyramid(path)


def test_tile_table_shorter_than_the_grid_is_refused(tmp_path):
    path = craft.tiled_tiff(tmp_path / "short.tif", side=512, tile=256)
    craft.set_tag_array(path, "TileOffsets", np.array([8], dtype=np.uint32))
    craft.set_tag_array(path, "TileByteCounts", np.array([8], dtype=np.uint32))
    with pytest.raises(CorruptSlideError, match="short.tif"):
        open_pyramid(path)


@pytest.mark.parametrize("mpp", [1e308, 1e300, 1e-30])
def test_absurd_file_mpp_is_ignored_with_a_warning(tmp_path, mpp, caplog):
    path = tmp_path / "absurd.ome.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
    pyramid = open_pyramid(path)
    assert pyramid.mpp is None
    assert pyramid.metadata["file_mpp"] == pytest.approx(mpp)
    assert "--mpp" in caplog.text and "absurd.ome.tif" in caplog.text
    assert open_pyramid(path, mpp=0.5).mpp == 0.5


def test_model_config_numbers_are_checked():
    for change, word in [
        ({"mpp": float("nan")}, "mpp"),
        ({"mpp": 1e300}, "mpp"),
        ({"sci_heads": 0}, "sci_heads"),
        ({"sci_width": 65536}, "sci_width"),
        ({"patch_size": 2**20}, "patch_size"),
        ({"context_factor": float("inf")}, "context_factor"),
        ({"std": [0.2, float("nan"), 0.2]}, "std"),
        ({"patch_size": "64"}, "patch_size"),
    ]:
        data = {**ModelConfig().to_dict(), **change}
        with pytest.raises(ConfigError, match=word):
            ModelConfig.from_dict(data)


def test_deep_json_config_and_header_are_refused(tmp_path):
    from napari_sgnet.registry.digest import parse_safetensors_header
    from napari_sgnet.registry.layout import CheckpointError

    deep = "[" * 200_000 + "]" * 200_000
    config = tmp_path / "config.json"
    config.write_text(deep)
    with pytest.raises(ConfigError, match="config.json.*nested"):
        ModelConfig.load(config)
    header = ('{"a":' + deep + "}").encode()
    data = len(header).to_bytes(8, "little") + header
    with pytest.raises(CheckpointError, match="nested"):
        parse_safetensors_header(tmp_path / "model.safetensors", data, len(data))
    assert json_depth_problem('{"s": "[[[[[[[["}', max_depth=2) is None


def test_the_shared_validator():
    assert check_mpp("0.5") == 0.5
    assert check_int(8, "--batch-size", lo=1) == 8
    for bad in ("nan", "inf", 0, -1, 1e300, "x", True):
        with pytest.raises(OptionError, match="--mpp"):
            check_mpp(bad, "--mpp")
    for bad in (1.5, "x", -1, True, float("nan")):
        with pytest.raises(OptionError, match="--workers"):
            check_int(bad, "--workers", lo=1)


# --------------------------------------------------------------------- messages, not tracebacks


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e300"])
@pytest.mark.parametrize("command", ["predict", "info"])
def test_bad_mpp_option_is_a_message(tmp_path, capsys, command, value):
    slide = craft.tiled_tiff(tmp_path / "s.tif")
    extra = ["--out", str(tmp_path / "o")] if command == "predict" else []
    assert cli(command, slide, *extra, f"--mpp={value}") == cli_main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: --mpp") and "Traceback" not in err


@pytest.mark.parametrize(
    "args, word",
    [
        (["predict", "s.tif", "--out", "o", "--workers", "-1"], "--workers"),
        (["predict", "s.tif", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["predict", "s.tif", "--out", "o", "--json", "s.tif"], "--json"),
        (["train", "--out", "o", "--sci-heads", "0"], "--sci-heads"),
        (["train", "--out", "o", "--sci-width", "65536"], "--sci-width"),
        (["train", "--out", "o", "--patch-size", "1048576"], "--patch-size"),
        (["synth", "o", "--size", "0"], "--size"),
        (["synth", "o", "--mpp", "nan"], "--mpp"),
        (["export", "st", "-f", "geojson", "-o", "x", "--min-area", "inf"], "--min-area"),
    ],
)
def test_bad_numbers_on_the_command_line_are_messages(tmp_path, capsys, args, word):
    craft.tiled_tiff(tmp_path / "s.tif")
    os.chdir(tmp_path)
    assert cli(*args) == cli_main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert word in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [["synth", "{f}/x", "--size", "64"], ["train", "--out", "{f}/o"], ["finetune", "--out", "{f}"]],
)
def test_output_folder_that_cannot_be_created_is_a_message(tmp_path, capsys, args):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli(*[a.format(f=blocker) for a in args]) == cli_main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "a-file" in err and "Traceback" not in err


def test_int32_slide_is_refused_naming_the_file(tmp_path, capsys):
    slide = tmp_path / "ints.tif"
    tifffile.imwrite(slide, np.zeros((128, 128, 3), np.int32), tile=(64, 64), photometric="rgb")
    model = _tiny_model(tmp_path / "model")
    assert cli("predict", slide, "--model", model, "--out", tmp_path / "o", "--no-progress") == (
        cli_main.EXIT_BAD_INPUT
    )
    err = capsys.readouterr().err
    assert "ints.tif" in err and "int32" in err


def test_quiet_and_no_progress_are_one_option_everywhere():
    parser = cli_main.build_parser()
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                options = sub._option_string_actions
                assert "--quiet" in options and "--no-progress" in options, name
                assert options["--quiet"] is options["--no-progress"], name


# --------------------------------------------------------------------- crash-safety of predict


def _tiny_model(folder: Path) -> Path:
    import torch

    from napari_sgnet.model import build_model, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(general_branch="fcn_lite", patch_size=64, mpp=None, sci_width=32,
                      sci_heads=2, sci_blocks=1)
    save_checkpoint(build_model(cfg), folder)
    return folder


def _predict_cmd(slide: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "napari_sgnet.cli.main", "predict", str(slide), "--model",
            str(model), "--out", str(out), "--batch-size", "4", "--device", "cpu",
            "--no-progress", "--no-skip-glass"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "NAPARI_SGNET_CACHE": str(tmp_path / "cache")}


def _arrays(store: Path) -> dict[str, bytes]:
    group = zarr.open_group(store, mode="r")
    return {name: np.asarray(group[name][...]).tobytes()
            for name in ("0", "1", "confidence", "done") if name in group}


def _finished(done: Path) -> int:
    try:
        return int((np.asarray(zarr.open_array(done, mode="r")[...]) > 0).sum())
    except Exception:  # not created yet, or caught mid-write: not finished
        return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_a_clean_run(tmp_path):
    """Kill ``predict`` (SIGKILL) at random moments, rerun the same command each time, and
    compare the final store's labels, confidence and done-map byte for byte with one clean
    run. Batches of 4: every forward pass has exactly 4 tiles whatever is left to do
    (docs/inference.md, "Determinism"), so a resumed run's batches may differ freely."""
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), 16, 0), 16, 1)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, image, tile=(128, 128), photometric="rgb")
    model = _tiny_model(tmp_path / "model")
    env = _env(tmp_path)

    clean = subprocess.run(_predict_cmd(slide, model, tmp_path / "clean"), env=env,
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    reference = _arrays(tmp_path / "clean" / "slide.sgnet.zarr")

    total = len(np.frombuffer(reference["done"], dtype=np.uint8))
    chooser = random.Random(1234)
    targets = sorted(chooser.sample(range(1, total), 3))  # kill once this many tiles are done
    done_path = tmp_path / "killed" / "slide.sgnet.zarr" / "done"
    mid_run = 0
    for target in targets:
        proc = subprocess.Popen(_predict_cmd(slide, model, tmp_path / "killed"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _finished(done_path) < target:
            assert time.monotonic() < deadline, "predict made no progress"
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 0.05))  # a random moment, mid-write as likely as not
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished = _finished(done_path)
        mid_run += 0 < finished < total
        print(f"killed after {target} tiles: {finished} of {total} finished")
    assert mid_run >= 1
    final = subprocess.run(_predict_cmd(slide, model, tmp_path / "killed"), env=env,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    from napari_sgnet.io.labelstore import LabelStore

    store = tmp_path / "killed" / "slide.sgnet.zarr"
    LabelStore.open(store, mode="r").validate(deep=True)
    assert _arrays(store) == reference


@pytest.mark.slow
def test_disk_full_leaves_a_message_and_a_consistent_store(tmp_path):
    """``predict`` onto a 400 KiB tmpfs (in a user+mount namespace): it fails with a message
    naming the problem, not a hang, and what it left is consistent or absent. The store's
    free-space check refuses it before the first byte (exit 2); were that check to let it
    through, the system's "No space left" must still end in a consistent store."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here to mount a small tmpfs")
    probe_run = subprocess.run([unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs "
                                f"{tmp_path}"], capture_output=True, text=True)
    if probe_run.returncode != 0:
        pytest.skip(f"this user may not mount a tmpfs: {probe_run.stderr.strip()}")
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 16, 0), 16, 1)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, image, tile=(256, 256), photometric="rgb")
    model = _tiny_model(tmp_path / "model")
    mount = tmp_path / "small"
    mount.mkdir()
    cmd = " ".join(_predict_cmd(slide, model, mount / "out"))
    check = (f"{sys.executable} -c \"import sys; from napari_sgnet.io.labelstore import "
             f"LabelStore; from pathlib import Path; p = Path('{mount}/out/slide.sgnet.zarr'); "
             f"LabelStore.open(p, mode='r').validate(deep=True) if p.exists() else None\"")
    script = (f"mount -t tmpfs -o size=400k tmpfs {mount} && {{ {cmd}; echo rc=$?; }} "
              f"&& {check} && echo consistent")
    result = subprocess.run([unshare, "-rm", "sh", "-c", script], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=180)
    assert "rc=1" in result.stdout or "rc=2" in result.stdout, result.stdout + result.stderr
    said = result.stderr.lower()
    assert "not enough free space" in said or "no space left" in said, result.stderr
    assert "consistent" in result.stdout, result.stderr
