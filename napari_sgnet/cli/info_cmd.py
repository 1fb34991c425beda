"""``napari-sgnet info SLIDE``: describe a slide's pyramid without reading its pixels."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="describe a slide: levels, sizes, downsamples, chunks, µm/px, dtype",
        description=(
            "Open a slide lazily and describe its pyramid. Flat images (PNG, JPEG, strip "
            "TIFF) get their pyramid cache built on first use."
        ),
    )
    parser.add_argument("slide", help="slide file (SVS, NDPI, TIFF, PNG, ...) or OME-Zarr folder")
    parser.add_argument("--mpp", type=float, default=None, help="override level-0 µm/px")
    parser.add_argument(
        "--cache-dir", default=None, help="pyramid cache folder (default: $NAPARI_SGNET_CACHE)"
    )
    parser.add_argument(
        "--model-mpp",
        type=float,
        default=None,
        help="also say which level a model at this µm/px reads, and how it is resampled",
    )
    add_json_option(parser, "the description")
    parser.set_defaults(func=run)


def _progress_printer() -> Any:
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct != state["last"]:
            state["last"] = pct
            end = "\n" if done >= total else ""
            print(f"\rbuilding pyramid cache: {pct:3d}%", end=end, file=sys.stderr, flush=True)

    return progress


def describe(pyramid: Any) -> dict[str, Any]:
    """A JSON-serialisable description of a pyramid."""
    levels = []
    for i, (arr, ds) in enumerate(zip(pyramid.levels, pyramid.downsamples, strict=True)):
        levels.append(
            {
                "level": i,
                "width": int(arr.shape[1]),
                "height": int(arr.shape[0]),
                "downsample": float(ds),
                "chunks": [int(c[0]) for c in arr.chunks[:2]],
                "mpp": pyramid.level_mpp(i),
            }
        )
    meta = {k: v for k, v in pyramid.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {
        "name": pyramid.name,
        "source": None if pyramid.source is None else str(pyramid.source),
        "width": pyramid.width,
        "height": pyramid.height,
        "channels": int(pyramid.shape[2]) if len(pyramid.shape) == 3 else 1,
        "dtype": str(pyramid.dtype),
        "mpp": pyramid.mpp,
        "levels": levels,
        "metadata": meta,
    }


def run(args: argparse.Namespace) -> int:
    """Print the pyramid summary; a bad slide raises SlideError (exit code 2 in main).

    With ``--model-mpp`` also the working level a model at that µm/px reads (a slide without
    µm/px, or coarser than the model, is refused as the engine refuses it).
    """
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.working import working_level

    progress = None if args.json or not sys.stderr.isatty() else _progress_printer()
    pyramid = open_pyramid(
        args.slide, mpp=args.mpp, cache_dir=args.cache_dir, progress=progress, build_cache=False
    )
    model_mpp = getattr(args, "model_mpp", None)
    work = None if model_mpp is None else working_level(pyramid, model_mpp)
    if args.json:
        described = describe(pyramid)
        if work is not None:
            described["working"] = work.record()
        emit_json(described, args.json)
        if json_on_stdout(args):
            return 0
    print(pyramid.summary())
    meta = pyramid.metadata
    print(f"  format: {meta.get('format', 'unknown')}")
    print(f"  µm/px source: {meta.get('mpp_source') or 'unknown (pass --mpp)'}")
    if meta.get("cache_path"):
        print(f"  pyramid cache: {meta['cache_path']}")
    if work is not None:
        print(f"  working level for a {model_mpp:g} µm/px model: {work.describe()}")
    return 0
