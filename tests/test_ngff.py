"""The one NGFF builder/parser, and every NGFF group the project writes, validated.

Each group napari-sgnet writes (the label store, the OME-Zarr label export in 0.4 and
0.5, the synthetic slide's image and labels in 0.4 and 0.5) is opened with
ome-zarr-models, whose v04/v05 models implement the spec's schema; the parser must read
back exactly what the builder wrote; and pixel values are checked with a second reader
(ome-zarr-py's Reader, or plain zarr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ome_zarr_models as models
import pytest
import zarr
from ome_zarr_models import v04, v05
from ome_zarr_models.v04.image_label import ImageLabel as ImageLabel04
from ome_zarr_models.v04.labels import Labels as Labels04
from ome_zarr_models.v05.image_label import ImageLabel as ImageLabel05
from ome_zarr_models.v05.labels import Labels as Labels05

from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import pattern_slide
from napari_sgnet.io.exporters import export_omezarr, ngff_label_attributes, read_omezarr_labels
from napari_sgnet.io.exporters.source import LabelSource
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.ngff import (
    CLASS_KEY,
    NO_LABEL,
    Axis,
    Dataset,
    ImageLabel,
    Multiscale,
    check_version,
    label_multiscale,
    labels_attributes,
    level_datasets,
    multiscale_attributes,
    ngff_version,
    parse_image_label,
    parse_labels,
    parse_multiscale,
    spatial_axes,
)
from napari_sgnet.io.writers import write_ome_zarr
from napari_sgnet.palette import GLEASON, ClassInfo, Palette

VERSIONS = ("0.4", "0.5")
IMAGE_MODEL = {"0.4": v04.Image, "0.5": v05.Image}
LABEL_MODEL = {"0.4": ImageLabel04, "0.5": ImageLabel05}
LABELS_MODEL = {"0.4": Labels04, "0.5": Labels05}


def _attrs(path: Path) -> dict:
    return zarr.open_group(path, mode="r").attrs.asdict()


def _assert_palette_label(image_label: ImageLabel | None, palette: Palette) -> None:
    """Label 0 is transparent "no label"; class k is label k + 1 with its colour and name."""
    assert image_label is not None
    assert image_label.colors[0] == (0, (0, 0, 0, 0))
    names = {i: c.name for i, c in enumerate(palette.classes, start=1)}
    assert image_label.class_names() == {0: NO_LABEL, **names}
    for i, cls_info in enumerate(palette.classes, start=1):
        assert image_label.colors[i] == (i, (*cls_info.color, 255))
    assert {v for v, _ in image_label.colors} == {p["label-value"] for p in image_label.properties}


# ------------------------------------------------------------------ builder <-> parser
@pytest.mark.parametrize("version", VERSIONS)
def test_parser_reads_back_what_the_builder_wrote(version: str) -> None:
    multiscale = Multiscale(
        axes=(Axis("c", "channel"), *spatial_axes("micrometer")),
        datasets=(
            Dataset("0", (1.0, 0.25, 0.25)),
            Dataset("1", (1.0, 0.5, 0.5), (0.0, 0.125, 0.125)),
        ),
        name="img",
        type="mode",
        metadata={"method": "test"},
        scale=(1.0, 2.0, 2.0),
    )
    image_label = ImageLabel.from_palette(GLEASON, source_image="../../")
    attrs = multiscale_attributes(multiscale, version, image_label=image_label)
    assert ngff_version(attrs) == version
    assert ("ome" in attrs) == (version == "0.5")
    back = parse_multiscale(attrs)
    assert back == multiscale and back.metadata == {"method": "test"}
    assert back.level_scale(1) == (1.0, 1.0, 1.0)
    assert parse_image_label(attrs) == image_label
    assert parse_labels(labels_attributes(["a", "b"], version)) == ["a", "b"]


def test_palette_round_trip_and_label_zero_convention() -> None:
    palette = Palette("two", (ClassInfo("tumour", (200, 10, 10)), ClassInfo("normal", (1, 2, 3))))
    image_label = ImageLabel.from_palette(palette)
    _assert_palette_label(image_label, palette)
    assert all(CLASS_KEY in p for p in image_label.properties)
    back = image_label.to_palette("two")
    assert back == palette


def test_level_datasets_place_pixel_centres() -> None:
    plain = level_datasets([1.0, 2.0], 0.5)
    assert [d.scale for d in plain] == [(0.5, 0.5), (1.0, 1.0)]
    assert all(d.translation is None for d in plain)
    centred = level_datasets([2.0, 4.0], 0.5, centred=True, offset=(10.0, 4.0))
    # Level pixel 0 of factor f covers slide pixels offset .. offset + f: centre offset + (f-1)/2.
    assert centred[0].translation == ((4.0 + 0.5) * 0.5, (10.0 + 0.5) * 0.5)
    assert centred[1].translation == ((4.0 + 1.5) * 0.5, (10.0 + 1.5) * 0.5)
    assert level_datasets([1.0], 1.0, centred=True)[0].translation is None
    with_channel = level_datasets([2.0], 1.0, leading=(1.0,), centred=True)
    assert with_channel[0].scale == (1.0, 2.0, 2.0)
    assert with_channel[0].translation == (0.0, 0.5, 0.5)


def test_parser_tolerates_older_ngff_and_rejects_broken_metadata() -> None:
    old = {"multiscales": [{"version": "0.3", "axes": ["y", "x"], "datasets": [{"path": "0"}]}]}
    ms = parse_multiscale(old)
    assert ms.axis_names == ("y", "x") and ms.datasets[0].scale is None
    assert ngff_version(old) == "0.3"
    implicit = {"multiscales": [{"datasets": [{"path": "0"}]}]}
    assert "".join(parse_multiscale(implicit).axis_names) == "tczyx"
    for broken, match in (
        ({}, "multiscales"),
        ({"multiscales": [{"datasets": []}]}, "no datasets"),
        ({"multiscales": [{"datasets": [{"nopath": 1}]}]}, "no path"),
        ({"ome": {"multiscales": [{"axes": [{}], "datasets": [{"path": "0"}]}]}}, "no name"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_multiscale(broken)
    assert parse_image_label({"multiscales": []}) is None
    with pytest.raises(ValueError, match="label-value"):
        parse_image_label({"image-label": {"colors": [{"rgba": [0, 0, 0, 0]}]}})


# ------------------------------------------------------------------ every written group
@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    slide = pattern_slide(300, 200, mpp=0.5)
    store = LabelStore.create(
        tmp_path / "s.sgnet.zarr", slide=slide, palette=GLEASON, base_downsample=2.0, tile=32
    )
    rng = np.random.default_rng(3)
    box = Box(0, 0, store.width, store.height)
    labels = rng.integers(0, 6, (box.h, box.w), dtype=np.uint8)
    store.write_tile(box, labels, np.full_like(labels, 200))
    store.update_pyramid(box)
    # The review state lives in a subgroup of the store; the store must still validate.
    store.review.save_pending(Box(0, 0, 4, 4), labels[:4, :4], labels[:4, :4], "now")
    return store


def test_label_store_validates_and_parses_back(store: LabelStore) -> None:
    group = zarr.open_group(store.path, mode="r")
    model = ImageLabel05.from_zarr(group)
    assert [d.path for d in model.attributes.ome.multiscales[0].datasets] == [
        str(k) for k in range(store.n_levels)
    ]
    attrs = group.attrs.asdict()
    factors = [2.0 * 2**k for k in range(store.n_levels)]
    assert parse_multiscale(attrs) == label_multiscale("pattern labels", factors, 0.5)
    _assert_palette_label(parse_image_label(attrs), GLEASON)

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(store.path)))()))
    for k, (h, w) in enumerate(store.level_shapes):
        expected = store.read_labels(Box(0, 0, w, h), k)
        np.testing.assert_array_equal(np.asarray(node.data[k]), expected)


@pytest.mark.parametrize("version", VERSIONS)
def test_label_export_validates_and_parses_back(
    store: LabelStore, tmp_path: Path, version: str
) -> None:
    out = export_omezarr(store, tmp_path / "l.ome.zarr", ngff=check_version(version), chunk=64)
    group = zarr.open_group(out, mode="r")
    LABEL_MODEL[version].from_zarr(group)
    attrs = group.attrs.asdict()
    source = LabelSource.from_store(store)
    assert parse_multiscale(attrs) == parse_multiscale(ngff_label_attributes(source, version))
    assert parse_multiscale(attrs).datasets[0].scale == (1.0, 1.0)  # 2 px x 0.5 µm/px
    _assert_palette_label(parse_image_label(attrs), GLEASON)
    back = read_omezarr_labels(out)
    for k in range(store.n_levels):
        h, w = store.level_shapes[k]
        expected = store.read_labels(Box(0, 0, w, h), k)
        np.testing.assert_array_equal(np.asarray(group[str(k)][...]), expected)  # plain zarr
        np.testing.assert_array_equal(np.asarray(back.levels[k]), expected)


@pytest.mark.parametrize("version", VERSIONS)
def test_synthetic_image_and_labels_validate(tmp_path: Path, version: str) -> None:
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    slide = generate_slide(
        SynthConfig(width=640, height=512, seed=4, chunk_size=128, min_level_size=128)
    )
    root = tmp_path / "synth.ome.zarr"
    write_ome_zarr(slide.image, root, version=version, chunks=128)
    label_group = write_ome_zarr(
        slide.labels,
        root,
        version=version,
        labels=True,
        name="gleason",
        palette=slide.palette,
        chunks=128,
    )
    image = IMAGE_MODEL[version].from_zarr(zarr.open_group(root, mode="r"))
    ome = image.attributes if version == "0.4" else image.attributes.ome
    assert len(ome.multiscales[0].datasets) == slide.image.n_levels
    LABELS_MODEL[version].from_zarr(zarr.open_group(root / "labels", mode="r"))
    LABEL_MODEL[version].from_zarr(zarr.open_group(label_group, mode="r"))
    assert type(models.open_ome_zarr(zarr.open_group(label_group, mode="r"))).__name__ == (
        "ImageLabel"
    )

    image_ms = parse_multiscale(_attrs(root))
    assert image_ms.axis_names == ("c", "y", "x")
    assert [d.scale for d in image_ms.datasets] == [
        (1.0, ds * slide.image.mpp, ds * slide.image.mpp) for ds in slide.image.downsamples
    ]
    label_attrs = _attrs(label_group)
    assert ngff_version(label_attrs) == version
    label_il = parse_image_label(label_attrs)
    _assert_palette_label(label_il, slide.palette)
    assert label_il is not None and label_il.source_image == "../../"
    assert parse_labels(_attrs(root / "labels")) == ["gleason"]
    stored = zarr.open_group(label_group, mode="r")
    for k, level in enumerate(slide.labels.levels):
        np.testing.assert_array_equal(stored[str(k)][...], level.compute())
