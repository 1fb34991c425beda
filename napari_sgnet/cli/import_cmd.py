"""``napari-sgnet import FILE.geojson --store STORE``: QuPath annotations as corrections.

The polygons (FeatureCollection, a bare list of features, or one Feature; Polygon and
MultiPolygon, holes honoured) are mapped onto the store's palette by class name, ignoring
case, rasterised at the store's level 0 and committed as one correction (pixels inside
the polygons become edited, later model runs keep them). See docs/exports.md, *Import
from QuPath*. Exit codes: 0 committed, 2 bad input (unreadable or malformed file, unknown
or missing class, a feature outside the slide, missing or read-only store), 130 cancelled.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_sgnet.app.imports import import_geojson
from napari_sgnet.cli.main import EXIT_OK

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand."""
    parser = subparsers.add_parser(
        "import",
        help="import QuPath GeoJSON annotations into a label store as corrections",
        description=(
            "Commit the Polygon/MultiPolygon annotations of a GeoJSON file (QuPath's "
            "'Export objects as GeoJSON', or napari-sgnet's own export) into a label store "
            "as one correction. Coordinates are slide level-0 pixels; each feature's "
            "classification name must be one of the store's classes (case ignored). "
            "Later features paint over earlier ones. See docs/exports.md."
        ),
    )
    parser.add_argument("file", type=Path, help="the .geojson file")
    parser.add_argument(
        "--store", required=True, type=Path, help="label store folder (<slide>.sgnet.zarr)"
    )
    parser.add_argument("--author", default=None, help="recorded with the commit (default: login)")
    parser.add_argument("--message", default=None, help="recorded with the commit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import and commit; print the pixels written per class. Returns the exit code."""
    from napari_sgnet.io.labelstore import LabelStore

    store = LabelStore.open(args.store)  # StoreError -> exit 2 in main
    result = import_geojson(args.file, store, author=args.author, message=args.message)
    ann = result.annotations
    n = len(ann.features) if ann is not None else 0
    skipped = f" ({ann.skipped} without an area skipped)" if ann is not None and ann.skipped else ""
    print(f"committed {n} feature(s){skipped} from {args.file} into {args.store}")
    for name, count in result.pixels_per_class.items():
        print(f"  {name}: {count} pixels")
    print(f"  total: {result.pixels} store pixels (commit {len(store.commits)})")
    return EXIT_OK
