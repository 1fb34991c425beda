"""napari_sgnet.io."""
