"""napari_sgnet.io: lazy slide pyramids, their readers, and typed input errors."""

from typing import Any

from napari_sgnet.errors import CorruptSlideError, SlideError, StoreError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid, read_window

__all__ = [
    "CorruptSlideError",
    "Pyramid",
    "SlideError",
    "StoreError",
    "UnsupportedSlideError",
    "open_pyramid",
    "read_window",
]


def __getattr__(name: str) -> Any:
    # The readers (zarr, tifffile, imagecodecs, ...) load on first use, not with the package:
    # importing ``napari_sgnet.io.pyramid`` (e.g. for the synthetic sample) stays cheap.
    if name == "open_pyramid":
        from napari_sgnet.io.readers import open_pyramid

        return open_pyramid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
