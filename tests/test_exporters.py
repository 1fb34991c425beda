"""Exports of a LabelStore: OME-Zarr labels, GeoJSON (QuPath), TIFF masks, training patches,
the npe2 writers and the ``export`` CLI, on a small store with holes and touching classes."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_sgnet.errors import StoreError
from napari_sgnet.geometry import Box
from napari_sgnet.io.exporters import (
    export_geojson,
    export_omezarr,
    export_tiff,
    mask_polygons,
    read_omezarr_labels,
    read_tiff_record,
)
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.palette import GLEASON

BASE = 4  # the store's level 0 is the slide's level 1 (downsample 4)
H, W = 400, 600  # store level 0
MPP = 0.25


def make_labels() -> np.ndarray:
    """Five classes: nested holes and islands, touching classes, diagonal contacts."""
    lab = np.zeros((H, W), dtype=np.uint8)
    lab[20:380, 20:580] = 1
    lab[50:200, 50:250] = 2
    lab[100:150, 100:150] = 0  # unlabelled hole in class 2 ...
    lab[110:140, 110:140] = 3  # ... holding an island of class 3
    lab[250:350, 300:450] = 4
    lab[280:320, 330:420] = 1  # class 1 filling a hole of class 4 (touching classes)
    lab[200:260, 250:300] = 5  # touches class 2 along an edge
    lab[360:370, 500:510] = (np.indices((10, 10)).sum(0) % 2 * 5).astype(np.uint8)  # checkers
    lab[5, 5] = lab[6, 6] = lab[7, 7] = 3  # diagonal chain of single pixels
    lab[399, 590:600] = 2  # touching the bottom-right corner
    return lab


@pytest.fixture(scope="module")
def slide() -> Pyramid:
    rng = np.random.default_rng(1)
    level1 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    level0 = np.repeat(np.repeat(level1, BASE, axis=0), BASE, axis=1)
    return Pyramid(
        (da.from_array(level0, chunks=(512, 512, 3)), da.from_array(level1, chunks=(256, 256, 3))),
        (1.0, float(BASE)),
        mpp=MPP,
        name="slide",
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, slide: Pyramid) -> LabelStore:
    path = tmp_path_factory.mktemp("store") / "slide.sgnet.zarr"
    s = LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=BASE, tile=64)
    lab = make_labels()
    conf = np.where(lab > 0, 200, 0).astype(np.uint8)
    s.write_tile(Box(0, 0, W, H), lab, conf)
    s.update_pyramid(Box(0, 0, W, H))
    s.set_model({"id": "tiny:abc", "name": "tiny", "patch_size": 64, "context_factor": 2.0})
    edit = s.read_labels(Box(300, 40, 40, 30))
    edit[5:25, 5:35] = 5
    s.commit_edit(Box(300, 40, 40, 30), edit)
    s.commit_edit(Box(0, 0, 8, 6), np.full((6, 8), 4, dtype=np.uint8))  # at the slide's corner
    return s


def store_levels(store: LabelStore) -> list[np.ndarray]:
    return [np.asarray(a) for a in store.levels_as_dask()]


def rasterise(rings_per_polygon: list[list[np.ndarray]], h: int, w: int) -> np.ndarray:
    """Even-odd fill of rectilinear rings at pixel centres (exact)."""
    toggles = np.zeros((h, w + 1), dtype=np.int64)
    for polygon in rings_per_polygon:
        for ring in polygon:
            x, y = ring[:, 0], ring[:, 1]
            for x0, y0, x1, y1 in zip(x, y, np.roll(x, -1), np.roll(y, -1), strict=True):
                if x0 == x1:
                    toggles[min(y0, y1) : max(y0, y1), x0] ^= 1
    return (np.cumsum(toggles, axis=1) % 2)[:, :w].astype(bool)


def geojson_polygons(feature: dict, scale: float) -> list[list[np.ndarray]]:
    geom = feature["geometry"]
    polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    out = []
    for poly in polys:
        rings = []
        for ring in poly:
            arr = np.asarray(ring, dtype=np.float64)
            assert (arr[0] == arr[-1]).all(), "GeoJSON rings must be closed"
            scaled = arr[:-1] / scale
            assert np.allclose(scaled, np.round(scaled))
            rings.append(np.round(scaled).astype(np.int64))
        out.append(rings)
    return out


# ------------------------------------------------------------------ OME-Zarr
@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_omezarr_round_trip_and_ome_zarr_reader(store: LabelStore, tmp_path: Path, ngff: str):
    out = tmp_path / "labels.ome.zarr"
    calls = []
    export_omezarr(store, out, ngff=ngff, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 0
    back = read_omezarr_labels(out)
    assert back.palette == GLEASON and back.base_downsample == BASE and back.mpp == MPP
    for k, level in enumerate(store_levels(store)):
        np.testing.assert_array_equal(np.asarray(back.levels[k]), level)
    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == (2 if ngff == "0.4" else 3)
    attrs = group.attrs.asdict()
    ome = attrs["ome"] if ngff == "0.5" else attrs
    for k, ds in enumerate(ome["multiscales"][0]["datasets"]):
        assert ds["coordinateTransformations"][0]["scale"] == [MPP * BASE * 2**k] * 2

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(out)))())
    node = nodes[0]
    np.testing.assert_array_equal(np.asarray(node.data[0]), store_levels(store)[0])
    assert len(node.data) == store.n_levels
    colors = node.metadata["color"]
    for i, cls in enumerate(GLEASON.classes):
        assert colors[i + 1] == pytest.approx([*(v / 255 for v in cls.color), 1.0])
        assert node.metadata["properties"][i + 1]["class"] == cls.name

    models = pytest.importorskip(f"ome_zarr_models.v0{ngff[-1]}.image_label")
    models.ImageLabel.from_zarr(group)  # validates the NGFF metadata


def test_omezarr_from_plain_array_builds_the_store_pyramid(store: LabelStore, tmp_path: Path):
    levels = store_levels(store)
    out = export_omezarr(levels[0], tmp_path / "a.ome.zarr", chunk=64, mpp=MPP)
    back = read_omezarr_labels(out)
    assert back.n_levels == store.n_levels and back.base_downsample == 1.0
    for k, level in enumerate(levels):  # mode pyramid == the store's own pyramid
        np.testing.assert_array_equal(np.asarray(back.levels[k]), level)


def test_omezarr_opens_with_project_reader(store: LabelStore, tmp_path: Path):
    out = export_omezarr(store, tmp_path / "r.ome.zarr")
    from napari_sgnet._napari.reader import get_reader

    reader = get_reader(str(out))
    assert reader is not None
    data, kwargs, layer_type = reader(str(out))[0]
    assert layer_type == "labels"
    assert kwargs["colormap"][1][:3] == pytest.approx(
        tuple(c / 255 for c in store.palette.classes[0].color)
    )
    level0 = data[0] if isinstance(data, list) else data
    np.testing.assert_array_equal(np.asarray(level0).squeeze(), store_levels(store)[0])


# ------------------------------------------------------------------ overwrite safety
@pytest.mark.parametrize(
    ("fn", "name"),
    [(export_omezarr, "x.ome.zarr"), (export_geojson, "x.geojson"), (export_tiff, "x.tif")],
)
def test_refuses_to_overwrite(store: LabelStore, tmp_path: Path, fn, name):
    out = tmp_path / name
    fn(store, out)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(StoreError, match=name):
        fn(store, out)
    assert out.stat().st_mtime_ns == stamp
    fn(store, out, overwrite=True)
    assert out.exists() and not list(tmp_path.glob(".*partial*"))


def test_never_replaces_a_label_store_or_foreign_folder(store: LabelStore, tmp_path: Path):
    with pytest.raises(StoreError, match="own input"):
        export_omezarr(store, store.path, overwrite=True)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="refusing"):
        export_omezarr(store, folder, overwrite=True)
    assert (folder / "keep.txt").exists()


# ------------------------------------------------------------------ GeoJSON
def test_geojson_qupath_features_round_trip(store: LabelStore, tmp_path: Path):
    out = export_geojson(store, tmp_path / "l.geojson")
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection"
    labels = store_levels(store)[0]
    seen = set()
    for f in doc["features"]:
        assert f["type"] == "Feature" and len(f["id"]) == 36
        props = f["properties"]
        assert props["objectType"] == "annotation" and props["isLocked"] is False
        cls = props["classification"]
        label = GLEASON.label_of(cls["name"])
        assert cls["color"] == list(GLEASON.classes[label - 1].color)
        seen.add(label)
        coords = np.concatenate([np.asarray(r) for p in geojson_polygons(f, 1) for r in p])
        assert coords.min() >= 0 and coords[:, 0].max() <= W * BASE
        assert coords[:, 1].max() <= H * BASE
        polys = geojson_polygons(f, BASE)  # slide level-0 pixels -> store pixels
        np.testing.assert_array_equal(rasterise(polys, H, W), labels == label)
    assert seen == set(np.unique(labels)) - {0}
    holes = [f for f in doc["features"] if any(len(p) > 1 for p in geojson_polygons(f, 1))]
    assert holes, "the class-2 and class-4 regions have holes"


def test_geojson_blocks_level_skip_and_min_area(store: LabelStore, tmp_path: Path):
    a = json.loads(export_geojson(store, tmp_path / "a.geojson", block=4096).read_text())
    b = json.loads(export_geojson(store, tmp_path / "b.geojson", block=48).read_text())
    assert [f["geometry"] for f in a["features"]] == [f["geometry"] for f in b["features"]]

    c = json.loads(
        export_geojson(store, tmp_path / "c.geojson", level=1, skip_background=True).read_text()
    )
    assert c["napari_sgnet"]["downsample"] == 2 * BASE
    level1 = store_levels(store)[1]
    names = {f["properties"]["classification"]["name"] for f in c["features"]}
    assert "Stroma/background" not in names
    for f in c["features"]:
        label = GLEASON.label_of(f["properties"]["classification"]["name"])
        polys = geojson_polygons(f, 2 * BASE)
        np.testing.assert_array_equal(rasterise(polys, *level1.shape), level1 == label)

    d = json.loads(
        export_geojson(store, tmp_path / "d.geojson", min_area=4 * BASE**2, split=True).read_text()
    )
    smallest = min(
        abs(_area(geojson_polygons(f, BASE)[0])) for f in d["features"]
    )  # single pixels and checkers (1 px each) are gone
    assert smallest >= 4


def _area(polygon: list[np.ndarray]) -> float:
    total = 0.0
    for ring in polygon:
        x, y = ring[:, 0], ring[:, 1]
        total += 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    return total


def test_polygons_match_skimage_rasteriser():
    from skimage.draw import polygon2mask

    rng = np.random.default_rng(3)
    mask = rng.random((30, 40)) < 0.55
    got = np.zeros_like(mask)
    for poly in mask_polygons(mask):
        for i, ring in enumerate(poly):
            # Vertices are pixel corners; polygon2mask samples pixel centres at integers.
            filled = polygon2mask(mask.shape, ring[:, ::-1] - 0.5)
            got = got ^ filled if i else got | filled
    np.testing.assert_array_equal(got, mask)


# ------------------------------------------------------------------ TIFF
def test_tiff_round_trip_with_palette(store: LabelStore, tmp_path: Path):
    calls = []
    out = export_tiff(
        store,
        tmp_path / "l.ome.tif",
        tile=64,
        tiff_level="working",
        progress=lambda *a: calls.append(a),
    )
    rows = [-(-h // 64) for h, _ in store.level_shapes]
    assert calls[-1][0] == calls[-1][1] == sum(rows) + sum(rows[1:])
    with tifffile.TiffFile(out) as tf:
        series = tf.series[0]
        assert len(series.levels) == store.n_levels
        for k, level in enumerate(store_levels(store)):
            np.testing.assert_array_equal(series.levels[k].asarray(), level)
        page = tf.pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.dtype == np.uint8
        assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.colormap is None
        assert f'PhysicalSizeX="{MPP * BASE}"' in tf.ome_metadata
    record = read_tiff_record(out)
    assert record["palette"] == GLEASON.to_dict() and record["base_downsample"] == BASE
    assert record["tiff_level"] == "working"


# ------------------------------------------------------------------ training patches
def test_patches_cover_only_edited_regions(store: LabelStore, slide: Pyramid, tmp_path: Path):
    from napari_sgnet.training.export_patches import edited_regions, export_patches
    from napari_sgnet.training.patches import read_patch_folder

    assert edited_regions(store) == [Box(0, 0, 8, 6), Box(305, 45, 30, 20)]
    out = export_patches(store, slide, tmp_path / "patches")
    folder = read_patch_folder(out)
    assert folder.patch_size == 64 and folder.context_factor == 2.0
    assert folder.mpp == pytest.approx(MPP * BASE)
    edited = store.read_edited(Box(0, 0, W, H)).astype(bool)
    covered = np.zeros_like(edited)
    level1 = np.asarray(slide.levels[1])
    for item in folder:
        box = item.local_box
        assert item.model_id == "tiny:abc" and item.level == 1
        assert item.meta["slide_box"] == [box.x * BASE, box.y * BASE, 64 * BASE, 64 * BASE]
        assert edited[box.slices()].any()
        covered[box.slices()] = True
        assert item.local.shape == (64, 64, 3) and item.context.shape == (128, 128, 3)
        np.testing.assert_array_equal(item.local, level1[box.slices()])
        labels = store.read_labels(box)
        np.testing.assert_array_equal(item.local_mask, np.where(edited[box.slices()], labels, 0))
        ox, oy = item.offset
        np.testing.assert_array_equal(item.context[oy : oy + 64, ox : ox + 64], item.local)
    assert covered[edited].all()
    corner = next(i for i in folder if i.local_box.x == 0 and i.local_box.y == 0)
    assert (corner.context[:32, :32] == 255).all()  # surrounding patch padded with glass
    assert (corner.context_mask[:32, :32] == 0).all()
    with pytest.raises(StoreError, match="patches"):
        export_patches(store, slide, out)


# ------------------------------------------------------------------ npe2 writers
def test_writers_save_a_labels_layer(store: LabelStore, tmp_path: Path):
    from napari.layers import Labels

    from napari_sgnet._napari.writer import write_geojson, write_omezarr, write_tiff

    labels = make_labels().astype(np.int32)
    layer = Labels(
        labels,
        scale=(MPP * BASE, MPP * BASE),
        translate=((BASE - 1) / 2 * MPP, (BASE - 1) / 2 * MPP),
        units=("µm", "µm"),
        metadata={
            "napari_sgnet": {"palette": GLEASON.to_dict(), "base_downsample": BASE, "mpp": MPP}
        },
    )
    data, meta, kind = layer.as_layer_data_tuple()
    assert kind == "labels"
    [zpath] = write_omezarr(str(tmp_path / "w.ome.zarr"), data, meta)
    back = read_omezarr_labels(zpath)
    np.testing.assert_array_equal(np.asarray(back.levels[0]), labels)
    assert back.base_downsample == BASE and back.offset == (0.0, 0.0)
    [gpath] = write_geojson(str(tmp_path / "w.geojson"), data, meta)
    for f in json.loads(Path(gpath).read_text())["features"]:
        label = GLEASON.label_of(f["properties"]["classification"]["name"])
        np.testing.assert_array_equal(rasterise(geojson_polygons(f, BASE), H, W), labels == label)
    [tpath] = write_tiff(str(tmp_path / "w.tif"), data, meta)
    slide_res = np.repeat(np.repeat(labels, BASE, axis=0), BASE, axis=1)  # at the slide's level 0
    np.testing.assert_array_equal(tifffile.imread(tpath), slide_res)

    # A plain layer in pixels, placed by translate: offsets come through to the polygons.
    plain = Labels((labels == 2).astype(np.uint8), translate=(10, 20))
    [p] = write_geojson(str(tmp_path / "p.geojson"), *plain.as_layer_data_tuple()[:2])
    [feature] = json.loads(Path(p).read_text())["features"]
    polys = geojson_polygons(feature, 1)
    np.testing.assert_array_equal(rasterise(polys, H + 10, W + 20)[10:, 20:], labels == 2)


def test_napari_saves_through_the_manifest_writers(tmp_path: Path):
    import napari
    import npe2
    from napari.layers import Labels

    manifest = npe2.PluginManifest.from_distribution("napari-sgnet")
    writers = {tuple(w.filename_extensions) for w in manifest.contributions.writers or []}
    assert {(".ome.zarr", ".zarr"), (".geojson",), (".tif", ".tiff")} <= writers
    npe2.PluginManager.instance().discover()
    layer = Labels(make_labels()[:40, :50].astype(np.int32), name="L")
    for name in ("n.geojson", "n.ome.zarr", "n.tif"):
        written = napari.save_layers(str(tmp_path / name), [layer], plugin="napari-sgnet")
        assert written == [str(tmp_path / name)] and (tmp_path / name).exists()


# ------------------------------------------------------------------ CLI
def test_cli_export(store: LabelStore, tmp_path: Path, capsys, monkeypatch):
    from napari_sgnet.cli import main as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("export",))  # only this subcommand's parser
    main = cli.main

    out = tmp_path / "cli.geojson"
    args = ["export", str(store.path), "--format", "geojson", "--out", str(out), "-q"]
    assert main(args) == 0 and out.exists()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["export", str(tmp_path / "nope"), "-f", "tiff", "-o", str(out), "-q"]) == 2
    assert main(["export", str(store.path), "-f", "patches", "-o", str(out), "-q"]) == 2
    zarr_out = tmp_path / "cli.ome.zarr"
    assert (
        main(
            [
                "export",
                str(store.path),
                "-f",
                "ome-zarr",
                "--ngff",
                "0.4",
                "-o",
                str(zarr_out),
                "-q",
            ]
        )
        == 0
    )
    assert zarr.open_group(zarr_out, mode="r").metadata.zarr_format == 2


def test_float_label_image_is_refused_naming_the_file(store: LabelStore, tmp_path: Path):
    """An OME-Zarr label image whose level 0 holds floats: a StoreError naming the file."""
    import zarr

    from napari_sgnet.errors import StoreError

    levels = [np.asarray(a) for a in store.levels_as_dask()]
    out = export_omezarr(levels[0], tmp_path / "f.ome.zarr", chunk=64, mpp=MPP)
    group = zarr.open_group(out, mode="r+")
    path = group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
    shape = group[path].shape
    group.create_array(path, shape=shape, dtype="float64", overwrite=True)
    with pytest.raises(StoreError, match=r"f\.ome\.zarr.*non-integer dtype float64"):
        read_omezarr_labels(out)
