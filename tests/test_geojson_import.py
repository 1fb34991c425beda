"""GeoJSON import of QuPath annotations: parsing, rasterising, round trips, store commits, CLI."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")

from napari_sgnet.app.imports import import_geojson  # noqa: E402
from napari_sgnet.cli.main import main  # noqa: E402
from napari_sgnet.geometry import Box  # noqa: E402
from napari_sgnet.inference.testing import pattern_slide  # noqa: E402
from napari_sgnet.io.exporters import export_geojson  # noqa: E402
from napari_sgnet.io.importers import (  # noqa: E402
    GeoJSONError,
    Grid,
    label_level,
    label_pyramid,
    looks_like_geojson,
    read_geojson,
)
from napari_sgnet.io.labelstore import LabelStore  # noqa: E402
from napari_sgnet.palette import GLEASON  # noqa: E402


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _feature(geometry: dict, cls: object = "Gleason 3") -> dict:
    props: dict = {"objectType": "annotation"}
    if isinstance(cls, str):
        props["classification"] = {"name": cls, "color": [255, 0, 0]}
    elif cls is not None:
        props["classification"] = cls
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _stress_masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    checker = (np.indices((12, 12)).sum(0) % 2 == 1).astype(np.uint8) * 3
    rings = np.zeros((21, 21), dtype=np.uint8)
    for k, v in ((0, 2), (4, 4), (8, 5)):
        rings[k : 21 - k, k : 21 - k] = v
        rings[k + 2 : 19 - k, k + 2 : 19 - k] = 0
    rings[10, 10] = 1
    pinched = np.zeros((7, 7), dtype=np.uint8)
    pinched[1:6, 1:6] = 4
    pinched[2:4, 2:4] = 0
    pinched[1, 4] = 0
    diag = np.zeros((12, 12), dtype=np.uint8)
    idx = np.arange(12)
    diag[idx, idx] = 2
    diag[idx, 11 - idx] = 3
    return {
        "checkerboard": checker,
        "rings_in_rings": rings,
        "pinched_hole": pinched,
        "diagonals": diag,
        "random": rng.integers(0, 6, (37, 29)).astype(np.uint8),
        "blobs": rng.integers(0, 6, (6, 9)).astype(np.uint8).repeat(5, 0).repeat(5, 1)[:27, :43],
    }


# ---------------------------------------------------------------- rasterising = inverse of export
@pytest.mark.parametrize("name", sorted(_stress_masks()))
@pytest.mark.parametrize("scale", [1, 4])
def test_rasterise_of_export_is_the_mask(tmp_path: Path, name: str, scale: int):
    mask = _stress_masks()[name]
    h, w = mask.shape
    # A slide whose size is not a multiple of the store pixel: the last store pixel is partial.
    slide = (w * scale - (scale > 1), h * scale - 2 * (scale > 1))
    for split in (False, True):
        out = export_geojson(
            mask,
            tmp_path / f"{name}.geojson",
            base_downsample=scale,
            slide_size=slide,
            split=split,
            overwrite=True,
        )
        ann = read_geojson(out, GLEASON, slide_size=slide)
        labels, covered = ann.rasterise(Box(0, 0, w, h), Grid(scale, slide_size=slide))
        np.testing.assert_array_equal(labels, mask)
        np.testing.assert_array_equal(covered, mask > 0)


def test_rasterise_matches_shapely_on_free_polygons(tmp_path: Path):
    """Non-grid (QuPath brush) vertices: a pixel is in when shapely says its centre is."""
    rng = np.random.default_rng(3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(8, 20, 40)
    ext = np.stack([30.3 + radii * np.cos(angles), 25.7 + radii * np.sin(angles)], 1)
    hole = np.array([[27.1, 22.2], [33.9, 23.05], [31.4, 29.6]])
    poly = shapely.Polygon(ext, [hole])
    assert poly.is_valid
    geom = shapely.geometry.mapping(poly)
    path = _write(tmp_path / "free.geojson", [_feature(json.loads(json.dumps(geom)))])
    ann = read_geojson(path, GLEASON)
    for scale in (1.0, 2.5):
        n = int(60 / scale)
        labels, covered = ann.rasterise(Box(0, 0, n, n), Grid(scale))
        yy, xx = np.mgrid[0:n, 0:n]
        want = shapely.contains_xy(poly, (xx + 0.5) * scale, (yy + 0.5) * scale)
        np.testing.assert_array_equal(covered, want)
        assert set(np.unique(labels[covered])) == {3}  # Gleason 3 is class 2, label 3


def test_lazy_level_equals_direct_rasterise(tmp_path: Path):
    mask = _stress_masks()["blobs"]
    out = export_geojson(mask, tmp_path / "b.geojson", base_downsample=2)
    ann = read_geojson(out, GLEASON)
    lazy = label_level(ann, mask.shape, Grid(2.0), chunk=8)
    np.testing.assert_array_equal(np.asarray(lazy), mask)


# ---------------------------------------------------------------- what is accepted
def test_featurecollection_bare_list_and_single_feature_agree(tmp_path: Path):
    feats = [
        _feature({"type": "Polygon", "coordinates": [_square(2, 2, 10, 8)]}, "Benign"),
        _feature({"type": "Polygon", "coordinates": [_square(6, 4, 14, 12)]}, "gleason 4 "),
    ]
    fc = _write(tmp_path / "fc.geojson", {"type": "FeatureCollection", "features": feats})
    bare = _write(tmp_path / "bare.geojson", feats)
    single = _write(tmp_path / "one.geojson", feats[1])
    box, grid = Box(0, 0, 16, 16), Grid(1.0)
    a, _ = read_geojson(fc, GLEASON).rasterise(box, grid)
    b, _ = read_geojson(bare, GLEASON).rasterise(box, grid)
    np.testing.assert_array_equal(a, b)
    assert (a == 2).sum() == 8 * 6 - 4 * 4  # Benign, partly painted over by the later feature
    assert (a == 4).sum() == 64  # "gleason 4 ": case and spaces ignored
    c, _ = read_geojson(single, GLEASON).rasterise(box, grid)
    np.testing.assert_array_equal(c == 4, a == 4)


def test_multipolygon_with_holes_and_old_string_classification(tmp_path: Path):
    geom = {
        "type": "MultiPolygon",
        "coordinates": [
            [_square(0, 0, 10, 10), _square(2, 2, 5, 5)[::-1], _square(6, 6, 8, 9)[::-1]],
            [_square(12, 0, 15, 3)],
        ],
    }
    path = _write(tmp_path / "mp.geojson", [_feature(geom, cls="Gleason 5")])
    ann = read_geojson(path, GLEASON)
    labels, covered = ann.rasterise(Box(0, 0, 16, 12), Grid(1.0))
    want = np.zeros((12, 16), dtype=bool)
    want[0:10, 0:10] = True
    want[2:5, 2:5] = False
    want[6:9, 6:8] = False
    want[0:3, 12:15] = True
    np.testing.assert_array_equal(covered, want)
    assert set(np.unique(labels[covered])) == {5}
    assert ann.features[0].class_name == "Gleason 5"


def test_unknown_class_lists_the_palette(tmp_path: Path):
    path = _write(
        tmp_path / "bad.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 4, 4)]}, "Tumor")],
    )
    with pytest.raises(GeoJSONError) as info:
        read_geojson(path, GLEASON)
    text = str(info.value)
    assert str(path) in text and "'Tumor'" in text and "feature 0" in text
    for name in GLEASON.names:
        assert repr(name) in text


def test_missing_classification_is_an_error_but_fine_for_regions(tmp_path: Path):
    path = _write(
        tmp_path / "nocls.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 4, 4)]}, None)],
    )
    with pytest.raises(GeoJSONError, match="feature 0 has no classification"):
        read_geojson(path, GLEASON)
    regions = read_geojson(path)  # no palette: regions, classes ignored
    assert regions.features[0].label == 1


def test_invalid_polygon_refused_with_its_index(tmp_path: Path):
    bowtie = [[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]
    feats = [
        _feature({"type": "Polygon", "coordinates": [_square(0, 0, 2, 2)]}),
        _feature({"type": "Polygon", "coordinates": [bowtie]}),
    ]
    path = _write(tmp_path / "bow.geojson", feats)
    with pytest.raises(GeoJSONError, match=r"feature 1 \(polygon 0\) is not a valid polygon"):
        read_geojson(path, GLEASON)


def test_points_and_lines_skipped_only_points_refused(tmp_path: Path, caplog):
    point = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [1, 1]},
        "properties": {},
    }
    line = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[0, 0], [3, 3]]},
        "properties": {},
    }
    poly = _feature({"type": "Polygon", "coordinates": [_square(0, 0, 2, 2)]})
    with caplog.at_level(logging.WARNING):
        ann = read_geojson(_write(tmp_path / "mix.geojson", [point, poly, line]), GLEASON)
    assert len(ann.features) == 1 and ann.skipped == 2 and ann.features[0].index == 1
    assert "2 feature(s) without an area" in caplog.text
    with pytest.raises(GeoJSONError, match="no Polygon or MultiPolygon"):
        read_geojson(_write(tmp_path / "pts.geojson", [point]), GLEASON)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not JSON"),
        ('{"type": "Topology"}', "not GeoJSON annotations"),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", '
            '"coordinates": [[[0,0],[1,1]]]}}]',
            "fewer than 3 distinct",
        ),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[["a",0]]]}}]',
            "not \\[x, y\\] numbers",
        ),
        ("[1]", "item 0 is not a GeoJSON Feature"),
    ],
)
def test_malformed_files_name_file_and_problem(tmp_path: Path, content: str, message: str):
    path = tmp_path / "m.geojson"
    path.write_text(content)
    with pytest.raises(GeoJSONError, match=message) as info:
        read_geojson(path, GLEASON)
    assert str(path) in str(info.value)
    # The reader claims files with polygon geometries (then shows the read's error), only.
    assert looks_like_geojson(path) == ('"Polygon"' in content)


def test_outside_the_slide_clipped_or_refused(tmp_path: Path, caplog):
    partly = _feature({"type": "Polygon", "coordinates": [_square(-5, 90, 20, 130)]})
    away = _feature({"type": "Polygon", "coordinates": [_square(500, 500, 600, 600)]})
    with caplog.at_level(logging.WARNING):
        ann = read_geojson(_write(tmp_path / "p.geojson", [partly]), GLEASON, slide_size=(50, 100))
    assert "clipped" in caplog.text
    _, covered = ann.rasterise(Box(0, 0, 50, 100), Grid(1.0, slide_size=(50, 100)))
    assert covered.sum() == 20 * 10 and covered[90:, :20].all()
    with pytest.raises(GeoJSONError, match=r"entirely outside the slide \(50 x 100.*feature 1"):
        read_geojson(_write(tmp_path / "a.geojson", [partly, away]), GLEASON, slide_size=(50, 100))


# ---------------------------------------------------------------- into a store
@pytest.fixture
def slide():
    return pattern_slide(300, 200, mpp=0.5)


def _store(tmp_path: Path, slide, name: str) -> LabelStore:
    return LabelStore.create(
        tmp_path / f"{name}.sgnet.zarr",
        slide=slide,
        palette=GLEASON,
        base_downsample=2.0,
        tile=64,
        chunk=32,
    )


def _truth(h: int = 100, w: int = 150) -> np.ndarray:
    rng = np.random.default_rng(11)
    m = rng.integers(0, 6, (h // 10 + 1, w // 10 + 1)).astype(np.uint8)
    m = m.repeat(10, 0).repeat(10, 1)[:h, :w]
    m[40:47, 60:90] = 0  # a hole of no label
    m[5, 5] = 4
    return m


def _geometries(path: Path) -> dict[str, list]:
    doc = json.loads(path.read_text())
    return {f["properties"]["classification"]["name"]: f["geometry"] for f in doc["features"]}


def test_export_import_export_gives_the_same_polygons(tmp_path: Path, slide):
    a = _store(tmp_path, slide, "a")
    truth = _truth()
    a.commit_edit(Box(0, 0, 150, 100), truth, mask=truth > 0)
    first = export_geojson(a, tmp_path / "first.geojson")
    b = _store(tmp_path, slide, "b")
    result = import_geojson(first, b, author="tester")
    np.testing.assert_array_equal(b.read_labels(Box(0, 0, 150, 100)), truth)
    np.testing.assert_array_equal(b.read_edited(Box(0, 0, 150, 100)), (truth > 0).astype(np.uint8))
    second = export_geojson(b, tmp_path / "second.geojson")
    g1, g2 = _geometries(first), _geometries(second)
    assert g1.keys() == g2.keys() and len(g1) == 5
    for name in g1:
        assert g1[name] == g2[name], name  # identical coordinates, ring by ring
        assert shapely.geometry.shape(g1[name]).equals(shapely.geometry.shape(g2[name]))
    assert result.pixels == int((truth > 0).sum())
    for k, name in enumerate(GLEASON.names):
        assert result.pixels_per_class.get(name, 0) == int((truth == k + 1).sum())
    # The coarser levels were updated like any commit: identical to store a's.
    for level in range(1, b.n_levels):
        h, w = b.level_shapes[level]
        np.testing.assert_array_equal(
            b.read_labels(Box(0, 0, w, h), level), a.read_labels(Box(0, 0, w, h), level)
        )


def test_import_commits_one_correction_with_provenance(tmp_path: Path, slide):
    store = _store(tmp_path, slide, "s")
    store.write_tile(
        Box(0, 0, 150, 100),
        np.full((100, 150), 2, np.uint8),
        np.full((100, 150), 100, np.uint8),
        respect_edited=False,
    )
    feats = [
        _feature({"type": "Polygon", "coordinates": [_square(20, 20, 100, 60)]}, "Gleason 4"),
        _feature(
            {"type": "MultiPolygon", "coordinates": [[_square(200, 100, 260, 180)]]}, "Gleason 5"
        ),
    ]
    path = _write(tmp_path / "qupath.geojson", {"type": "FeatureCollection", "features": feats})
    result = import_geojson(path, store, message="from QuPath", block=64)
    labels = store.read_labels(Box(0, 0, 150, 100))
    edited = store.read_edited(Box(0, 0, 150, 100)).astype(bool)
    conf = store.read_confidence(Box(0, 0, 150, 100))
    want4 = np.zeros_like(edited)
    want4[10:30, 10:50] = True  # slide pixels / 2
    want5 = np.zeros_like(edited)
    want5[50:90, 100:130] = True
    np.testing.assert_array_equal(edited, want4 | want5)
    assert (labels[want4] == 4).all() and (labels[want5] == 5).all()
    assert (
        (labels[~edited] == 2).all()
        and (conf[~edited] == 100).all()
        and (conf[edited] == 255).all()
    )
    assert len(store.commits) == 1
    record = store.commits[0]
    assert record == result.record
    assert record["pixels"] == int(edited.sum()) == 800 + 1200
    assert record["message"] == "from QuPath"
    assert record["source"]["file"] == str(path)
    assert record["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["source"]["features"] == 2
    assert record["pixels_per_class"] == {"Gleason 4": 800, "Gleason 5": 1200}
    assert record["box"] == [10, 10, 120, 80]


def test_bad_import_writes_nothing(tmp_path: Path, slide):
    store = _store(tmp_path, slide, "s")
    feats = [
        _feature({"type": "Polygon", "coordinates": [_square(0, 0, 50, 50)]}, "Benign"),
        _feature({"type": "Polygon", "coordinates": [_square(0, 0, 50, 50)]}, "Tumour"),
    ]
    path = _write(tmp_path / "bad.geojson", feats)
    with pytest.raises(GeoJSONError, match="feature 1: class 'Tumour'"):
        import_geojson(path, store)
    tiny = _write(
        tmp_path / "tiny.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(10.2, 10.2, 10.8, 10.8)]})],
    )
    with pytest.raises(GeoJSONError, match="cover no pixel"):
        import_geojson(tiny, store)
    assert store.commits == []
    assert not store.read_edited(Box(0, 0, store.width, store.height)).any()


def test_cli_import(tmp_path: Path, slide, capsys):
    store = _store(tmp_path, slide, "s")
    good = _write(
        tmp_path / "g.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 40, 20)]}, "Benign")],
    )
    assert main(["import", str(good), "--store", str(store.path), "--author", "me"]) == 0
    out = capsys.readouterr().out
    assert "committed 1 feature(s)" in out and "Benign: 200 pixels" in out
    assert LabelStore.open(store.path).commits[0]["author"] == "me"
    bad = _write(
        tmp_path / "b.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 40, 20)]}, "Tumour")],
    )
    assert main(["import", str(bad), "--store", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "'Tumour'" in err and "'Gleason 3'" in err
    assert main(["import", str(good), "--store", str(tmp_path / "missing.zarr")]) == 2
    assert len(LabelStore.open(store.path).commits) == 1


def test_label_pyramid_follows_the_image_levels(tmp_path: Path, slide):
    feats = [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 100, 60)]}, "Benign")]
    ann = read_geojson(_write(tmp_path / "r.geojson", feats), GLEASON)
    pyr = label_pyramid(ann, slide, chunk=64)
    assert pyr.n_levels == slide.n_levels and pyr.mpp == slide.mpp
    for k in range(slide.n_levels):
        assert pyr.level_size(k) == slide.level_size(k)
        level = np.asarray(pyr.levels[k])
        f = int(slide.downsamples[k])
        assert level.sum() == 2 * (100 // f) * (60 // f)


# ---------------------------------------------------------------- ground truth for evaluate / train
@pytest.fixture(scope="module")
def synth_files(tmp_path_factory):
    """A tiny v1 synthetic slide on disk, its label zarr, and the labels as GeoJSON."""
    out = tmp_path_factory.mktemp("synth")
    argv = ["synth", str(out), "--size", "512", "--seed", "5", "--version", "1", "--name", "s"]
    assert main(argv) == 0
    from napari_sgnet.training.scoring import slide_truth
    from napari_sgnet.training.sources import file_source

    labels = out / "s.labels.ome.zarr" / "labels" / "gleason"
    # The truth the readers make at the tiny model's 4 µm/px (x8 on this 0.5 µm/px slide),
    # exported as polygons on that grid.
    _, truth, _ = slide_truth(file_source(out / "s.ome.tif", labels), 4.0)
    geojson = export_geojson(truth, out / "s.geojson", base_downsample=8, slide_size=(512, 512))
    return out / "s.ome.tif", labels, geojson


def test_geojson_ground_truth_reads_like_the_label_image(synth_files):
    from napari_sgnet.training.scoring import slide_truth
    from napari_sgnet.training.sources import file_source

    tif, zarr_labels, geojson = synth_files
    _, from_image, _ = slide_truth(file_source(tif, zarr_labels), 4.0)
    _, from_geojson, tissue = slide_truth(file_source(tif, geojson), 4.0)
    assert from_geojson.shape == (64, 64)
    np.testing.assert_array_equal(from_geojson, from_image)
    np.testing.assert_array_equal(tissue, from_geojson > 0)  # no tissue pyramid: truth > 0


def test_evaluate_and_train_accept_geojson_labels(synth_files, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from napari_sgnet.inference.testing_torch import tiny_sgnet_config
    from napari_sgnet.model import build_model, save_checkpoint

    torch.set_num_threads(1)
    tif, zarr_labels, geojson = synth_files
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_sgnet_config()).eval(), tmp_path / "m")
    scores = {}
    for name, labels in (("image", zarr_labels), ("geojson", geojson)):
        out = tmp_path / f"{name}.json"
        argv = ["evaluate", str(tif), "--labels", str(labels), "--model", str(tmp_path / "m")]
        argv += ["--simple", "--no-progress", "--threads", "1", "--json", str(out)]
        assert main(argv) == 0
        scores[name] = json.loads(out.read_text())
    assert scores["geojson"] == scores["image"]  # the same truth, the same figures
    argv = ["train", "--out", str(tmp_path / "t"), "--slide", str(tif), "--labels", str(geojson)]
    argv += ["--val-slide", str(tif), "--val-labels", str(geojson), "--arch", "fcn_lite"]
    argv += ["--baseline", "--patch-size", "64", "--steps", "2", "--batch-size", "2"]
    argv += ["--val-every", "2", "--checkpoint-every", "2", "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    assert "held-out mIoU" in capsys.readouterr().out
    bad = geojson.with_name("bad.geojson")
    doc = json.loads(geojson.read_text())
    doc["features"][0]["properties"]["classification"]["name"] = "Tumour"
    bad.write_text(json.dumps(doc))
    argv = ["evaluate", str(tif), "--labels", str(bad), "--model", str(tmp_path / "m"), "--simple"]
    assert main(argv) == 2
    assert "'Tumour' is not in the palette" in capsys.readouterr().err


# ---------------------------------------------------------------- predict --regions
@pytest.fixture(scope="module")
def predict_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    import tifffile

    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    tifffile.imwrite(root / "slide.tif", img, tile=(64, 64), photometric="rgb")  # 256 x 192
    torch.manual_seed(0)
    cfg = ModelConfig(
        general_branch="fcn_lite",
        patch_size=64,
        mpp=None,
        sci_width=32,
        sci_heads=2,
        sci_blocks=1,
    )
    save_checkpoint(build_model(cfg), root / "model")
    return root


def test_predict_regions_predicts_only_covered_tiles(predict_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_SGNET_CACHE", str(tmp_path / "cache"))
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    feats = [  # tile (0, 0) whole, and a sliver of tile (2, 3); unclassified: fine for regions
        _feature({"type": "Polygon", "coordinates": [_square(10, 10, 50, 60)]}, None),
        _feature(
            {"type": "MultiPolygon", "coordinates": [[_square(250, 150, 256, 160)]]}, "Tumour"
        ),
    ]
    regions = _write(tmp_path / "regions.geojson", feats)
    out = tmp_path / "out"
    base = [str(predict_files / "slide.tif"), "--model", str(predict_files / "model")]
    base += ["--out", str(out), "--device", "cpu", "--no-skip-glass", "--no-progress"]
    assert main(["predict", *base, "--regions", str(regions)]) == 0
    store = LabelStore.open(out / "slide.sgnet.zarr", mode="r")
    done = store.done_map()
    assert done.shape == (3, 4)
    want = np.zeros((3, 4), dtype=bool)
    want[0, 0] = want[2, 3] = True
    np.testing.assert_array_equal(done > 0, want)
    labels = store.read_labels(Box(0, 0, 256, 192))
    assert (labels[:64, :64] > 0).all() and (labels[128:, 192:] > 0).all()  # whole tiles
    others = np.ones((192, 256), dtype=bool)
    others[:64, :64] = others[128:, 192:] = False
    assert not labels[others].any()
    record = store.requests[-1]
    assert record["regions"]["sha256"] == hashlib.sha256(regions.read_bytes()).hexdigest()
    assert record["tiles"] == 2
    capsys.readouterr()
    # Refusals: two slides, --region as well, a polygon off the slide.
    two = [base[0], *base, "--regions", str(regions)]
    assert main(["predict", *two]) == 2
    assert "one SLIDE" in capsys.readouterr().err
    away = _write(
        tmp_path / "away.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(900, 900, 990, 990)]})],
    )
    assert main(["predict", *base, "--out", str(tmp_path / "o2"), "--regions", str(away)]) == 2
    assert "entirely outside the slide (256 x 192" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "slide.sgnet.zarr").exists()  # checked before any write
