"""OME-Zarr exports inside an image of the slide, and placement read back (issue 12, part 3).

Checked with readers the project did not write: ome-zarr-models (the spec's schema, v0.4
and v0.5), ome-zarr-py's ``Reader`` and napari-ome-zarr's reader; and with the plugin's
own reader, which must place the labels (scale, half-pixel translation, µm units) where
the slide's pixels are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models import v04, v05

from napari_sgnet.errors import OptionError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.testing import pattern_slide
from napari_sgnet.io.exporters import export_omezarr
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.ngff import ImageLabel, parse_image_label, parse_labels, parse_multiscale
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.writers import write_ome_zarr
from napari_sgnet.palette import GLEASON

MODELS = {
    "0.4": (v04.Image, v04.Labels, v04.ImageLabel),
    "0.5": (v05.Image, v05.Labels, v05.ImageLabel),
}
MPP, BASE = 0.5, 2.0


@pytest.fixture(scope="module")
def slide() -> Pyramid:
    return pattern_slide(300, 200, mpp=MPP)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, slide: Pyramid) -> LabelStore:
    path = tmp_path_factory.mktemp("s") / "s.sgnet.zarr"
    store = LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=BASE, tile=32)
    labels = np.random.default_rng(3).integers(0, 6, (store.height, store.width), np.uint8)
    box = Box(0, 0, store.width, store.height)
    store.write_tile(box, labels, np.full_like(labels, 200))
    store.update_pyramid(box)
    return store


def _store_level(store: LabelStore, k: int) -> np.ndarray:
    h, w = store.level_shapes[k]
    return store.read_labels(Box(0, 0, w, h), k)


def _on_image_level(store: LabelStore, slide: Pyramid, k: int) -> np.ndarray:
    """What the labels inside the image hold at image level ``k``: the store's level of that
    resolution, or store level 0 repeated (nearest) where the image is finer."""
    factor = slide.downsamples[k]
    h, w = slide.levels[k].shape[:2]
    if factor < BASE:
        rep = int(BASE / factor)
        up = np.repeat(np.repeat(_store_level(store, 0), rep, axis=0), rep, axis=1)
        return up[:h, :w]
    return _store_level(store, int(np.log2(factor / BASE)))[:h, :w]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_export_into_an_image_of_the_slide(
    store: LabelStore, slide: Pyramid, tmp_path: Path, version: str
) -> None:
    steps: list[tuple[int, int]] = []
    out = export_omezarr(
        store,
        tmp_path / "with-image.ome.zarr",
        ngff=version,  # type: ignore[arg-type]
        chunk=64,
        image=slide,
        progress=lambda d, t: steps.append((d, t)),
    )
    assert steps[-1][0] == steps[-1][1]
    image_model, labels_model, label_model = MODELS[version]
    image_model.from_zarr(zarr.open_group(out, mode="r"))
    labels_model.from_zarr(zarr.open_group(out / "labels", mode="r"))
    label_model.from_zarr(zarr.open_group(out / "labels" / "sgnet", mode="r"))
    root = zarr.open_group(out, mode="r")
    assert parse_labels(zarr.open_group(out / "labels", mode="r").attrs.asdict()) == ["sgnet"]
    label_attrs = zarr.open_group(out / "labels" / "sgnet", mode="r").attrs.asdict()
    image_label = parse_image_label(label_attrs)
    assert image_label is not None and image_label.source_image == "../../"
    # The image: every slide level, channel-first, in µm, with a 3-channel omero block.
    image_ms = parse_multiscale(root.attrs.asdict())
    assert image_ms.axis_names == ("c", "y", "x")
    assert [d.scale for d in image_ms.datasets] == [
        (1.0, ds * MPP, ds * MPP) for ds in slide.downsamples
    ]
    for k, level in enumerate(slide.levels):
        np.testing.assert_array_equal(
            np.moveaxis(np.asarray(root[str(k)][...]), 0, -1), level.compute()
        )
    ome = root.attrs.asdict().get("ome", root.attrs.asdict())
    assert len(ome["omero"]["channels"]) == 3

    # ome-zarr-py finds the image and its labels, with the labels' pixels and transforms.
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(out)))())
    label_nodes = [n for n in nodes if n.load(__import__("ome_zarr").reader.Label)]
    assert label_nodes, "ome-zarr-py found no labels in the image"
    label_node = label_nodes[0]
    assert len(label_node.data) == slide.n_levels  # one label level per image level
    for k in range(slide.n_levels):
        np.testing.assert_array_equal(
            np.asarray(label_node.data[k]), _on_image_level(store, slide, k)
        )
    transforms = label_node.metadata["coordinateTransformations"]
    assert transforms[0] == [{"type": "scale", "scale": [MPP, MPP]}]
    assert transforms[1] == [
        {"type": "scale", "scale": [2 * MPP, 2 * MPP]},
        {"type": "translation", "translation": [0.5 * MPP, 0.5 * MPP]},
    ]

    # napari-ome-zarr: the RGB image (3 channel layers, not refused) and the labels, in µm.
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(out))
    assert reader is not None
    layers = reader()
    kinds = [layer_type for _, _, layer_type in layers]
    assert kinds.count("labels") == 1 and kinds.count("image") == 1
    image_kwargs = next(kw for _, kw, t in layers if t == "image")
    assert image_kwargs["channel_axis"] == 0 and len(image_kwargs["name"]) == 3
    label_data, label_kwargs, _ = next(layer for layer in layers if layer[2] == "labels")
    assert label_kwargs["scale"] == [MPP, MPP] == image_kwargs["scale"]
    assert label_kwargs["units"] == ("micrometer", "micrometer")
    np.testing.assert_array_equal(np.asarray(label_data[0]), _on_image_level(store, slide, 0))

    # The plugin's own reader: the slide and its labels, placed by scale and translation.
    from napari_sgnet._napari.reader import read_slide

    ours = read_slide(str(out))
    assert [t for _, _, t in ours] == ["image", "labels"]
    _, kw_image, _ = ours[0]
    _, kw_labels, _ = ours[1]
    assert kw_image["scale"] == (MPP, MPP) and kw_image["units"] == ("µm", "µm")
    assert kw_labels["scale"] == (MPP, MPP) and "translate" not in kw_labels
    assert kw_labels["units"] == ("µm", "µm")
    assert kw_labels["metadata"]["napari_sgnet"]["palette"] == GLEASON.to_dict()


def test_standalone_export_is_placed_by_the_plugin_reader(
    store: LabelStore, tmp_path: Path
) -> None:
    from napari_sgnet._napari.reader import read_slide

    out = export_omezarr(store, tmp_path / "alone.ome.zarr", chunk=64)
    v05.ImageLabel.from_zarr(zarr.open_group(out, mode="r"))
    image_label = parse_image_label(zarr.open_group(out, mode="r").attrs.asdict())
    assert image_label is not None and image_label.source_image is None  # stands alone
    [(data, kwargs, kind)] = read_slide(str(out))
    assert kind == "labels"
    assert kwargs["scale"] == (BASE * MPP, BASE * MPP)
    assert kwargs["translate"] == ((BASE - 1) / 2 * MPP,) * 2
    assert kwargs["units"] == ("µm", "µm")
    np.testing.assert_array_equal(np.asarray(data[0]), _store_level(store, 0))


def test_foreign_label_image_placement_comes_from_its_translation(tmp_path: Path) -> None:
    """A label image we did not write: its level-0 translation and µm unit place it."""
    from napari_sgnet.io.exporters import read_omezarr_labels

    group = zarr.open_group(tmp_path / "foreign.zarr", mode="w", zarr_format=2)
    group.create_array("0", shape=(8, 8), dtype="uint8", fill_value=0)
    group.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "axes": [
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [0.5, 0.5]},
                                {"type": "translation", "translation": [5.0, 10.0]},
                            ],
                        }
                    ],
                }
            ],
            "image-label": {
                "version": "0.4",
                "colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}],
                "properties": [{"label-value": 1, "name": "tumour"}],  # the older key
            },
        }
    )
    v04.ImageLabel.from_zarr(zarr.open_group(tmp_path / "foreign.zarr", mode="r"))
    source = read_omezarr_labels(tmp_path / "foreign.zarr")
    assert source.mpp == 0.5 and source.base_downsample == 1.0
    assert source.offset == (20.0, 10.0)  # (x, y) in level-0 pixels
    assert list(source.palette.names) == ["tumour"]  # class names under the older key still read


def test_class_names_under_one_key_both_ways() -> None:
    image_label = ImageLabel.from_palette(GLEASON)
    assert all("class" in p and "name" not in p for p in image_label.properties)
    legacy = ImageLabel(
        colors=((1, (1, 2, 3, 255)),), properties=({"label-value": 1, "name": "old"},)
    )
    assert legacy.class_names() == {1: "old"}
    both = ImageLabel(properties=({"label-value": 1, "class": "new", "name": "old"},))
    assert both.class_names() == {1: "new"}


def test_rgb_image_omero_lists_its_channels(tmp_path: Path, slide: Pyramid) -> None:
    from napari_ome_zarr import napari_get_reader

    root = write_ome_zarr(slide, tmp_path / "rgb.ome.zarr", chunks=64)
    ome = zarr.open_group(root, mode="r").attrs.asdict()["ome"]
    assert [c["label"] for c in ome["omero"]["channels"]] == ["R", "G", "B"]
    v05.Image.from_zarr(zarr.open_group(root, mode="r"))
    reader = napari_get_reader(str(root))
    assert reader is not None
    [(_data, kwargs, kind)] = reader()
    assert kind == "image" and kwargs["channel_axis"] == 0 and len(kwargs["name"]) == 3


def test_export_into_image_checks_the_slide_first(store: LabelStore, tmp_path: Path) -> None:
    other = pattern_slide(320, 200, mpp=MPP)
    out = tmp_path / "bad.ome.zarr"
    with pytest.raises(OptionError, match="320 x 200 px"):
        export_omezarr(store, out, image=other)
    with pytest.raises(OptionError, match="µm/px"):
        export_omezarr(store, out, image=pattern_slide(300, 200, mpp=0.25))
    assert not out.exists()


def test_cli_export_with_image(
    store: LabelStore, slide: Pyramid, tmp_path: Path, monkeypatch, capsys
) -> None:
    from napari_sgnet.cli import main as cli
    from napari_sgnet.io.writers import write_ome_tiff

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("export",))
    slide_file = write_ome_tiff(slide, tmp_path / "slide.ome.tif", tile=64, compression="zlib")
    out = tmp_path / "cli.ome.zarr"
    base = ["export", str(store.path), "-f", "ome-zarr", "-o", str(out), "-q"]
    assert cli.main([*base, "--with-image"]) == 2
    assert "--with-image needs" in capsys.readouterr().err
    assert cli.main([*base, "--with-image", "--slide", str(slide_file)]) == 0
    v05.Image.from_zarr(zarr.open_group(out, mode="r"))
    v05.ImageLabel.from_zarr(zarr.open_group(out / "labels" / "sgnet", mode="r"))


def test_a_store_of_an_earlier_version_is_brought_up_to_date(
    slide: Pyramid, tmp_path: Path
) -> None:
    """A store whose label 0 had a colour but no property (as earlier versions wrote) fails
    ome-zarr-models; it still opens, and opening it for writing repairs its metadata."""
    from pydantic import ValidationError

    path = tmp_path / "old.sgnet.zarr"
    LabelStore.create(path, slide=slide, palette=GLEASON, base_downsample=BASE, tile=32)
    group = zarr.open_group(path, mode="r+")
    ome = group.attrs.asdict()["ome"]
    ome["image-label"]["properties"] = ome["image-label"]["properties"][1:]
    group.update_attributes({"ome": ome})
    with pytest.raises(ValidationError, match="Inconsistent"):
        v05.ImageLabel.from_zarr(zarr.open_group(path, mode="r"))
    LabelStore.open(path, mode="r")  # readable as it is, and left as it is
    with pytest.raises(ValidationError):
        v05.ImageLabel.from_zarr(zarr.open_group(path, mode="r"))
    store = LabelStore.open(path)
    v05.ImageLabel.from_zarr(zarr.open_group(path, mode="r"))
    attrs = zarr.open_group(path, mode="r").attrs.asdict()
    assert parse_image_label(attrs) == ImageLabel.from_palette(GLEASON)
    assert parse_multiscale(attrs).name == "pattern labels"
    store.validate(deep=True)  # the layout checks still pass


def test_synthetic_truth_class_names_come_back(tmp_path: Path) -> None:
    """The synthetic truth's classes read back by name (ours, napari-ome-zarr's)."""
    from napari_ome_zarr import napari_get_reader

    from napari_sgnet.io.exporters import read_omezarr_labels
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    synth = generate_slide(SynthConfig(width=256, height=256, seed=1, chunk_size=128))
    group = write_ome_zarr(
        synth.labels,
        tmp_path / "truth.labels.ome.zarr",
        labels=True,
        name=synth.palette.name,
        palette=synth.palette,
        chunks=128,
    )
    assert list(read_omezarr_labels(group).palette.names) == list(synth.palette.names)
    reader = napari_get_reader(str(group))
    assert reader is not None
    [(_, kwargs, kind)] = reader()
    assert kind == "labels"
    assert kwargs["properties"]["class"][1:] == list(synth.palette.names)


def test_an_image_translation_places_the_slide_layer(slide: Pyramid, tmp_path: Path) -> None:
    """An OME-Zarr image whose level 0 is translated: the napari layer is translated too."""
    from napari_sgnet._napari.layers import image_layer_data
    from napari_sgnet.io import open_pyramid

    root = write_ome_zarr(slide, tmp_path / "moved.ome.zarr", chunks=64)
    group = zarr.open_group(root, mode="r+")
    ome = group.attrs.asdict()["ome"]
    ome["multiscales"][0]["datasets"][0]["coordinateTransformations"].append(
        {"type": "translation", "translation": [0.0, 5.0, 10.0]}  # µm
    )
    group.update_attributes({"ome": ome})
    v05.Image.from_zarr(zarr.open_group(root, mode="r"))
    pyramid = open_pyramid(root)
    assert pyramid.mpp == MPP and pyramid.metadata["origin_px"] == (10.0, 20.0)
    _, kwargs, _ = image_layer_data(pyramid)
    assert kwargs["translate"] == (5.0, 10.0) and kwargs["units"] == ("µm", "µm")
    _, kwargs, _ = image_layer_data(pyramid.with_mpp(0.25))  # placement follows the pixels
    assert kwargs["translate"] == (2.5, 5.0)
