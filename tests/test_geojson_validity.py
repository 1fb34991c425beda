"""GeoJSON export: every geometry valid (GEOS/JTS rules), area and pixels exact.

Stress masks with pinch points (pixels touching diagonally), holes touching their shell
at one vertex, rings in rings in rings, single pixels and the slide edge; each export is
checked with shapely (validity, area) and rasterised back at pixel centres.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
from shapely.geometry import shape  # noqa: E402

from napari_sgnet.geometry import Box  # noqa: E402
from napari_sgnet.io.exporters import export_geojson  # noqa: E402
from napari_sgnet.io.exporters.polygons import mask_polygons, polygon_runs  # noqa: E402
from napari_sgnet.palette import GLEASON  # noqa: E402

MPP = 0.5


def _checkerboard(n: int = 12) -> np.ndarray:
    return np.indices((n, n)).sum(0) % 2 == 1


def _diagonals() -> np.ndarray:
    m = np.zeros((12, 12), dtype=bool)
    idx = np.arange(12)
    m[idx, idx] = True
    m[idx, 11 - idx] = True  # an X: pinch points at every step
    return m


def _rings_in_rings() -> np.ndarray:
    m = np.zeros((21, 21), dtype=bool)
    for k in (0, 4, 8):  # ring in a ring in a ring, and a centre pixel
        m[k : 21 - k, k : 21 - k] = True
        m[k + 2 : 19 - k, k + 2 : 19 - k] = False
    m[10, 10] = True
    return m


def _pinched_hole() -> np.ndarray:
    """A shell whose hole touches the outside at one vertex (a C closed diagonally)."""
    m = np.zeros((7, 7), dtype=bool)
    m[1:6, 1:6] = True
    m[2:4, 2:4] = False  # the hole ...
    m[1, 4] = False  # ... meets this notch of the outside at one corner
    return m


def _hole_pinching_shell() -> np.ndarray:
    """A hole touching the shell's outline at exactly one vertex."""
    m = np.ones((6, 6), dtype=bool)
    m[0, 0] = False  # notch at the corner
    m[1:3, 1:3] = False  # hole whose top-left corner is the notch's bottom-right corner
    return m


def _single_pixels() -> np.ndarray:
    m = np.zeros((9, 9), dtype=bool)
    m[::3, ::3] = True
    m[4, 4] = True
    return m


def _edges() -> np.ndarray:
    m = np.zeros((10, 10), dtype=bool)
    m[:, 0] = m[0, :] = True  # along two slide edges
    m[9, 9] = True  # the far corner pixel
    m[5:, 5:] = True
    m[6:8, 6:8] = False
    return m


STRESS = {
    "checkerboard": _checkerboard(),
    "diagonals": _diagonals(),
    "rings_in_rings": _rings_in_rings(),
    "pinched_hole": _pinched_hole(),
    "hole_pinching_shell": _hole_pinching_shell(),
    "single_pixels": _single_pixels(),
    "edges": _edges(),
    "full": np.ones((5, 7), dtype=bool),
}


def _shapely(polygons: list) -> list:
    from shapely.geometry import Polygon

    return [Polygon(p[0], p[1:]) for p in polygons]


def _centres_inside(geom, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return shapely.contains_xy(geom, (xx + 0.5) * scale, (yy + 0.5) * scale)


def _check(geoms: list, mask: np.ndarray, scale: float = 1.0) -> None:
    """Every geometry valid, areas exact, rasterised back == mask."""
    for g in geoms:
        assert shapely.is_valid(g), shapely.is_valid_reason(g)
    union = shapely.union_all(geoms) if geoms else shapely.Polygon()
    assert sum(g.area for g in geoms) == pytest.approx(mask.sum() * scale**2)
    assert union.area == pytest.approx(mask.sum() * scale**2)  # no overlaps
    np.testing.assert_array_equal(_centres_inside(union, *mask.shape, scale), mask)


@pytest.mark.parametrize("name", sorted(STRESS))
def test_traced_polygons_are_valid_and_exact(name: str):
    mask = STRESS[name]
    polygons = mask_polygons(mask)
    geoms = _shapely(polygons)
    _check(geoms, mask)
    multi = shapely.MultiPolygon(geoms)
    assert shapely.is_valid(multi), shapely.is_valid_reason(multi)
    rows, x0, x1 = polygon_runs(polygons)
    back = np.zeros_like(mask)
    for r, a, b in zip(rows, x0, x1, strict=True):
        back[r, a:b] = True
    np.testing.assert_array_equal(back, mask)


def test_pinch_points_become_shell_and_touching_hole():
    (poly,) = mask_polygons(_pinched_hole())  # one 4-connected region
    assert len(poly) == 2  # a shell and a hole touching it at one point
    g = _shapely([poly])[0]
    assert shapely.is_valid(g) and g.exterior.intersection(g.interiors[0]).geom_type == "Point"


def test_diagonal_neighbours_are_separate_polygons():
    mask = np.eye(3, dtype=bool)
    assert len(mask_polygons(mask)) == 3  # 4-connectivity: one polygon per pixel
    assert shapely.is_valid(shapely.MultiPolygon(_shapely(mask_polygons(mask))))


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_all_valid(seed: int):
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 50)) < (0.3 + 0.08 * seed)
    polygons = mask_polygons(mask)
    _check(_shapely(polygons), mask)
    assert shapely.is_valid(shapely.MultiPolygon(_shapely(polygons)))


def _labels() -> np.ndarray:
    rng = np.random.default_rng(7)
    lab = rng.integers(1, 4, (48, 64)).astype(np.uint8)  # pinch points everywhere
    lab[:21, :21] = np.where(_rings_in_rings(), 4, 2)
    lab[30:42, 40:52] = np.where(_checkerboard(), 5, 0)
    lab[40:46, 0:6] = np.where(_hole_pinching_shell(), 3, 1)
    return lab


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("block", [16, 2048])
def test_export_geojson_valid_and_exact(tmp_path: Path, split: bool, block: int):
    lab = _labels()
    base = 2.0
    out = export_geojson(
        lab, tmp_path / "a.geojson", split=split, block=block, mpp=MPP, base_downsample=base
    )
    doc = json.loads(out.read_text())
    by_class: dict[int, list] = {}
    for f in doc["features"]:
        g = shape(f["geometry"])
        assert shapely.is_valid(g), shapely.is_valid_reason(g)
        label = GLEASON.label_of(f["properties"]["classification"]["name"])
        by_class.setdefault(label, []).append(g)
    assert set(by_class) == set(np.unique(lab)) - {0}
    for label, geoms in by_class.items():
        _check(geoms, lab == label, scale=base)
    if not split:
        assert all(len(g) == 1 for g in by_class.values())


def test_measurements_area_and_confidence(tmp_path: Path):
    lab = _labels()
    conf = np.random.default_rng(2).integers(0, 256, lab.shape).astype(np.uint8)
    for split in (False, True):
        out = export_geojson(
            lab, tmp_path / f"m{split}.geojson", split=split, measurements=True,
            confidence=conf, mpp=MPP, base_downsample=2.0, block=16, overwrite=True,
        )  # fmt: skip
        for f in json.loads(out.read_text())["features"]:
            g = shape(f["geometry"])
            m = f["properties"]["measurements"]
            assert m["Area µm^2"] == pytest.approx(g.area * MPP**2)  # slide px * µm/px
            label = GLEASON.label_of(f["properties"]["classification"]["name"])
            inside = _centres_inside(g, *lab.shape, 2.0) & (lab == label)
            assert m["Mean confidence"] == pytest.approx(conf[inside].mean() / 255, abs=1e-4)
    plain = json.loads(export_geojson(lab, tmp_path / "p.geojson", mpp=MPP).read_text())
    assert all("measurements" not in f["properties"] for f in plain["features"])


def test_measurements_at_a_coarser_level(tmp_path: Path):
    coarse = _labels()
    lab = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    conf = np.full(lab.shape, 51, dtype=np.uint8)
    out = export_geojson(
        [lab, coarse], tmp_path / "c.geojson", level=1, measurements=True, confidence=conf,
        mpp=MPP,
    )  # fmt: skip
    for f in json.loads(out.read_text())["features"]:
        m = f["properties"]["measurements"]
        assert m["Area µm^2"] == pytest.approx(shape(f["geometry"]).area * MPP**2)
        assert m["Mean confidence"] == pytest.approx(0.2)


@pytest.mark.parametrize("split", [False, True])
def test_simplify_keeps_validity(tmp_path: Path, split: bool):
    yy, xx = np.mgrid[0:200, 0:200]
    lab = np.ones((200, 200), dtype=np.uint8)
    lab[(yy - 100) ** 2 + (xx - 90) ** 2 < 70**2] = 2  # staircase outlines to simplify
    lab[(yy - 100) ** 2 + (xx - 90) ** 2 < 30**2] = 3
    lab[150:198, 150:198] = _labels()[:48, :48]  # pinch points too
    kw = {"mpp": MPP, "split": split, "measurements": True}
    exact = json.loads(export_geojson(lab, tmp_path / "e.geojson", **kw).read_text())
    simple = json.loads(export_geojson(lab, tmp_path / "s.geojson", simplify=2.0, **kw).read_text())
    n_exact = sum(len(shapely.get_coordinates(shape(f["geometry"]))) for f in exact["features"])
    n_simple = sum(len(shapely.get_coordinates(shape(f["geometry"]))) for f in simple["features"])
    assert n_simple < 0.7 * n_exact
    for f in simple["features"]:
        g = shape(f["geometry"])
        assert shapely.is_valid(g), shapely.is_valid_reason(g)
        assert f["properties"]["measurements"]["Area µm^2"] > 0  # exact pixel area
    total = sum(shape(f["geometry"]).area for f in simple["features"])
    assert total == pytest.approx((lab > 0).sum(), rel=0.02)


def test_simplify_needs_mpp_and_a_positive_tolerance(tmp_path: Path):
    from napari_sgnet.errors import OptionError

    lab = _labels()
    with pytest.raises(OptionError, match="µm/px"):
        export_geojson(lab, tmp_path / "x.geojson", simplify=1.0)
    with pytest.raises(OptionError, match="positive"):
        export_geojson(lab, tmp_path / "x.geojson", simplify=-1.0, mpp=MPP)


def test_cli_measurements_and_simplify(tmp_path: Path):
    import dask.array as da

    from napari_sgnet.cli.main import main
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.pyramid import Pyramid

    lab = _labels()
    h, w = lab.shape
    slide = Pyramid((da.zeros((h, w, 3), dtype=np.uint8, chunks=64),), (1.0,), mpp=MPP)
    store = LabelStore.create(tmp_path / "s.sgnet.zarr", slide=slide, palette=GLEASON, tile=64)
    store.write_tile(Box(0, 0, w, h), lab, np.full(lab.shape, 102, dtype=np.uint8))
    store.update_pyramid(Box(0, 0, w, h))
    out = tmp_path / "s.geojson"
    argv = ["export", str(store.path), "-f", "geojson", "-o", str(out), "-q", "--split"]
    assert main([*argv, "--measurements", "--simplify", "1"]) == 0
    features = json.loads(out.read_text())["features"]
    assert features
    for f in features:
        assert shapely.is_valid(shape(f["geometry"]))
        m = f["properties"]["measurements"]
        assert m["Mean confidence"] == pytest.approx(0.4)
        assert m["Area µm^2"] > 0
