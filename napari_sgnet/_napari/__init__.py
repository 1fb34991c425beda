"""napari_sgnet._napari."""
