"""``napari-sgnet export STORE --format F --out PATH``: export a label store.

Formats: ``ome-zarr`` (OME-NGFF labels), ``geojson`` (QuPath polygons in slide level-0
pixels), ``tiff`` (pyramidal OME-TIFF of label ids), ``patches`` (training patches of
the edited regions; needs ``--slide``). Exit codes: 0 done, 2 bad input (missing or
foreign store, existing output without ``--overwrite``, bad option), 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_sgnet.app.exports import EXPORT_KINDS, export_format, run_export
from napari_sgnet.cli.main import EXIT_BAD_INPUT, EXIT_OK
from napari_sgnet.errors import UserInputError

__all__ = ["FORMATS", "register", "run"]

#: The ``--format`` choices: the kinds of the export table
#: (:data:`napari_sgnet.app.exports.EXPORTS`).
FORMATS = EXPORT_KINDS


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a label store: OME-Zarr labels, GeoJSON (QuPath), TIFF mask, patches",
        description=(
            "Export the labels of a label store. Existing outputs are kept unless "
            "--overwrite is given; the output may never be the store, its slide, a path "
            "inside either or a folder holding either. A damaged store chunk is named "
            "(repair it with `napari-sgnet check STORE --repair`). See docs/exports.md for "
            "the formats."
        ),
    )
    parser.add_argument("store", help="label store folder (<slide>.sgnet.zarr)")
    parser.add_argument("--format", "-f", required=True, choices=FORMATS, help="output format")
    parser.add_argument("--out", "-o", required=True, help="output file or folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--ngff", choices=("0.4", "0.5"), default="0.5", help="OME-NGFF version (ome-zarr)"
    )
    parser.add_argument(
        "--with-image",
        action="store_true",
        help="ome-zarr: write an OME-Zarr image of --slide with the labels in labels/sgnet "
        "(default: the labels alone)",
    )
    parser.add_argument(
        "--tiff-level",
        choices=("slide", "working"),
        default=None,
        help="tiff: level 0 at the slide's level-0 resolution (default) or at the labels' "
        "working resolution",
    )
    parser.add_argument(
        "--level",
        type=int,
        default=None,
        help="geojson: label level to polygonise (default: finest up to 32k x 32k pixels)",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        help="geojson: drop polygons smaller than this (slide level-0 pixels squared)",
    )
    parser.add_argument(
        "--skip-background",
        action="store_true",
        help="geojson: leave out the first class (Stroma/background)",
    )
    parser.add_argument(
        "--split", action="store_true", help="geojson: one feature per region, not per class"
    )
    parser.add_argument(
        "--measurements",
        action="store_true",
        help="geojson: add area (µm²) and mean confidence to each feature's properties",
    )
    parser.add_argument(
        "--simplify",
        type=float,
        default=None,
        metavar="UM",
        help="geojson: simplify outlines with this tolerance in µm (default: exact outlines)",
    )
    parser.add_argument(
        "--slide", default=None, help="patches, ome-zarr --with-image: the store's slide"
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="patches: local patch side (default: the store's model)",
    )
    parser.add_argument(
        "--masks",
        choices=("edited", "all"),
        default="edited",
        help="patches: label only corrected pixels (default) or all labelled pixels",
    )
    parser.add_argument(
        "--patch-layout",
        dest="layout",
        choices=("items", "pairs"),
        default=None,
        help="patches: items/<id>/ folders with a manifest (default) or flat "
        "images/ + masks/ PNGs with patches.csv",
    )
    parser.add_argument("--quiet", "-q", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bar")
    parser.set_defaults(func=run)


def _progress_bar(label: str, quiet: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    if quiet:
        return (lambda done, total: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="step", file=sys.stderr, leave=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return progress, bar.close


def _export(args: argparse.Namespace, store: Any, progress: Callable[[int, int], None]) -> Path:
    """Write ``args.format`` through the export table, with the options its row takes."""
    row = export_format(args.format)
    options = {name: getattr(args, name) for name in row.options}
    return run_export(
        row.kind, store, Path(args.out), slide=args.slide, progress=progress,
        overwrite=args.overwrite, **options,
    )


def run(args: argparse.Namespace) -> int:
    """Run the export; returns the exit code."""
    from napari_sgnet.io.labelstore import LabelStore

    if args.format == "patches" and not args.slide:
        print("error: --format patches needs --slide SLIDE", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.with_image and (args.format != "ome-zarr" or not args.slide):
        print("error: --with-image needs --format ome-zarr and --slide SLIDE", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.image = args.slide if args.with_image else None
    store = LabelStore.open(args.store, mode="r")  # StoreError -> exit 2 in main
    progress, close = _progress_bar(f"export {args.format}", args.quiet)
    try:
        written = _export(args, store, progress)
    except UserInputError as exc:  # bad option values, store, slide, palette
        close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    close()
    print(f"wrote {written}")
    return EXIT_OK
