"""napari_sgnet.synthetic."""
