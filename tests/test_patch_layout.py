"""Training-patch export: nothing to export is an error, and the flat ``pairs`` layout
(``images/``, ``masks/``, ``patches.csv``) read back with readers we did not write."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_sgnet.errors import StoreError, UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.palette import GLEASON

H, W = 256, 384
MPP = 0.5


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    tifffile.imwrite(
        path, rgb, tile=(128, 128), photometric="rgb", resolution=(1e4 / MPP, 1e4 / MPP),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    return path


def _store(path: Path, slide_path: Path) -> LabelStore:
    from napari_sgnet.io import open_pyramid  # type: ignore[attr-defined]

    slide = open_pyramid(slide_path)
    s = LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=1, tile=64)
    lab = np.ones((H, W), dtype=np.uint8)
    s.write_tile(Box(0, 0, W, H), lab, np.full((H, W), 200, dtype=np.uint8))
    s.update_pyramid(Box(0, 0, W, H))
    s.set_model({"id": "tiny:abc", "name": "tiny", "patch_size": 64, "context_factor": 2.0})
    return s


def _cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    from napari_sgnet.cli import main as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("export",))
    return cli.main(argv)


def test_no_corrections_is_an_error_and_writes_nothing(
    tmp_path: Path, slide_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from napari_sgnet.training.export_patches import NoCorrectionsError, export_patches

    store = _store(tmp_path / "empty.sgnet.zarr", slide_path)
    for layout in ("items", "pairs"):
        out = tmp_path / "sub" / f"out-{layout}"
        argv = ["export", str(store.path), "-f", "patches", "--slide", str(slide_path), "-o",
                str(out), "--patch-layout", layout, "-q"]  # fmt: skip
        assert _cli(monkeypatch, argv) == 2
        err = capsys.readouterr().err
        assert "no corrections to export" in err and str(store.path) in err
        assert not out.exists() and not out.parent.exists()
    with pytest.raises(NoCorrectionsError, match="no corrections") as info:
        export_patches(store, slide_path, tmp_path / "api")
    assert isinstance(info.value, UserInputError)
    assert not (tmp_path / "api").exists()


def test_pairs_layout_read_back(
    tmp_path: Path, slide_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_sgnet.io import open_pyramid  # type: ignore[attr-defined]
    from napari_sgnet.training.export_patches import PAIRS_CSV, export_patches

    store = _store(tmp_path / "s.sgnet.zarr", slide_path)
    edit = np.full((20, 30), 3, dtype=np.uint8)
    edit[:, :10] = 5
    store.commit_edit(Box(200, 150, 30, 20), edit)
    store.commit_edit(Box(0, 0, 8, 6), np.full((6, 8), 4, dtype=np.uint8))

    out = tmp_path / "pairs"
    argv = ["export", str(store.path), "-f", "patches", "--slide", str(slide_path), "-o",
            str(out), "--patch-layout", "pairs", "-q"]  # fmt: skip
    assert _cli(monkeypatch, argv) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    with open(out / PAIRS_CSV, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = list(reader)
    counts = [f"count_{n}" for n in GLEASON.names]
    assert header == ["id", "image", "mask", "slide", "x", "y", "level", "mpp", *counts]
    assert len(rows) >= 2
    rgb = np.asarray(open_pyramid(slide_path).levels[0])
    seen = np.zeros(len(GLEASON.names) + 1, dtype=np.int64)
    for row in rows:
        image_path, mask_path = out / row["image"], out / row["mask"]
        assert image_path.is_file() and mask_path.is_file()
        assert Path(row["slide"]).is_absolute() and Path(row["slide"]) == slide_path.resolve()
        image = np.asarray(Image.open(image_path))
        with Image.open(mask_path) as im:
            assert im.mode == "L"
            mask = np.asarray(im)
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert set(np.unique(mask)) <= set(range(len(GLEASON.names) + 1))
        bins = np.bincount(mask.ravel(), minlength=len(GLEASON.names) + 1)
        assert [int(row[c]) for c in counts] == bins[1:].tolist()
        seen += bins
        x, y = int(row["x"]), int(row["y"])
        assert row["level"] == "0" and float(row["mpp"]) == pytest.approx(MPP)
        np.testing.assert_array_equal(image, rgb[y : y + 64, x : x + 64])
        box = Box(x, y, 64, 64)
        np.testing.assert_array_equal(
            mask, np.where(store.read_edited(box) > 0, store.read_labels(box), 0)
        )
    assert seen[5] == 200 and seen[3] == 400 and seen[4] == 48 and seen[1] == 0

    # Same rule as the default layout: an existing output needs overwrite.
    with pytest.raises(StoreError, match="already exists"):
        export_patches(store, slide_path, out, layout="pairs")
    assert export_patches(store, slide_path, out, layout="pairs", overwrite=True) == out
    items = export_patches(store, slide_path, tmp_path / "items")  # default layout unchanged
    assert (items / "manifest.json").is_file() and (items / "items").is_dir()
    with pytest.raises(StoreError, match="not a previous export"):
        export_patches(store, slide_path, items, layout="pairs", overwrite=True)
