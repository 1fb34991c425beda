"""napari_sgnet._qt."""
