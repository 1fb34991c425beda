"""``napari-sgnet demo``: the main job on the bundled sample slide.

With a display, :mod:`napari_sgnet.app` opens napari instead (see ``_qt/demo.py``);
this module is the headless equivalent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run", "sample_slide_path"]


def sample_slide_path() -> Path:
    """The bundled real sample slide."""
    return Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-Small-Region.svs"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="open the sample slide in napari (headless: summarise it and write results)",
        description="The main job on the bundled sample slide. With a display it opens napari; "
        "without one (or with --headless) it runs the headless equivalent.",
    )
    p.add_argument("--slide", type=Path, default=None, help="slide to use instead of the sample")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Headless demo: print the pyramid summary of the sample slide."""
    from napari_sgnet.io import open_pyramid

    slide = args.slide or sample_slide_path()
    pyramid = open_pyramid(slide)
    print(pyramid.summary())
    print(f"\nOpen it in napari with:  napari {slide}")
    return 0
