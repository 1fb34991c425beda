"""napari-sgnet: ultra-high-resolution slide segmentation with SGNet in napari."""

__version__ = "0.1.0"
