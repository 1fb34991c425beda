"""Composition root of the ``napari-sgnet`` console script.

The CLI (``napari_sgnet.cli``) never imports napari or Qt. The only command that needs
a window, ``demo`` with a display, is dispatched here to the Qt layer; everything else,
and ``demo`` without a display, goes to the CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["has_display", "main"]


def has_display() -> bool:
    """True when a Qt window can be shown (an X11/Wayland display, or macOS/Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: GUI demo when possible, else the headless CLI."""
    from napari_sgnet.cli.main import build_parser
    from napari_sgnet.cli.main import main as cli_main

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "demo":
        args = build_parser().parse_args(args_list)
        if not args.headless and has_display():
            from napari_sgnet._qt.demo import run_demo

            return run_demo(args)
    return cli_main(args_list)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
