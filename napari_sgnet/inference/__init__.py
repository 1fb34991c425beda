"""napari_sgnet.inference."""
