"""The GUI demo: napari with the sample slide."""

from __future__ import annotations

import argparse

__all__ = ["run_demo"]


def run_demo(args: argparse.Namespace) -> int:
    """Open napari with the sample slide and block until the window closes."""
    import napari

    from napari_sgnet.cli.demo_cmd import sample_slide_path

    slide = args.slide or sample_slide_path()
    viewer = napari.Viewer(title="napari-sgnet demo")
    viewer.open(str(slide), plugin="napari-sgnet")
    napari.run()
    return 0
