"""napari_sgnet.training."""
