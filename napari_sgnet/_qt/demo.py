"""The GUI demo: napari with the sample slide, the SGNet dock and the bundled model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["open_demo", "run_demo"]


def open_demo(viewer: Any, args: argparse.Namespace, *, run: bool = True) -> Any:
    """Open the slide in ``viewer``, dock the SGNet widget and (optionally) run on the view.

    Returns
    -------
    SGNetWidget
        The dock widget.
    """
    from qtpy.QtCore import QTimer

    from napari_sgnet._qt.widget import SGNetWidget
    from napari_sgnet.cli.demo_cmd import demo_output_dir, sample_slide_path

    slide = Path(args.slide or sample_slide_path())
    out = demo_output_dir(args)
    viewer.open(str(slide), plugin="napari-sgnet")
    widget = SGNetWidget(viewer, model=getattr(args, "model", None), store_dir=out)
    device = getattr(args, "device", None)
    if device:
        widget.device_combo.setCurrentText(device)
    viewer.window.add_dock_widget(widget, name="SGNet", area="right")
    if run and widget.state.model is not None:
        # after the window has its final size, so the view is what the person sees
        QTimer.singleShot(300, widget.controller.run_on_view)
    return widget


def run_demo(args: argparse.Namespace) -> int:
    """Open napari with the sample slide and the SGNet dock; block until the window closes."""
    import napari

    viewer = napari.Viewer(title="napari-sgnet demo")
    open_demo(viewer, args)
    napari.run()
    return 0
