"""napari_sgnet.model."""
