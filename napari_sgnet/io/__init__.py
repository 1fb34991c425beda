"""napari_sgnet.io: lazy slide pyramids, their readers, and typed input errors."""

from napari_sgnet.errors import CorruptSlideError, SlideError, StoreError, UnsupportedSlideError
from napari_sgnet.io.pyramid import Pyramid, read_window
from napari_sgnet.io.readers import open_pyramid

__all__ = [
    "CorruptSlideError",
    "Pyramid",
    "SlideError",
    "StoreError",
    "UnsupportedSlideError",
    "open_pyramid",
    "read_window",
]
