"""The Qt-free app core, shared by the dock widgets, the CLI and the tests.

- :mod:`~napari_sgnet.app.state`: the evented per-viewer :class:`AppState` the widgets are handed;
- :mod:`~napari_sgnet.app.runs`: the app's newest-wins inference runs (around ``InferenceSession``);
- :mod:`~napari_sgnet.app.store_paths`: the one rule for where a slide's label store is;
- :mod:`~napari_sgnet.app.exports`: the one export table;
- :mod:`~napari_sgnet.app.viewport`, :mod:`~napari_sgnet.app.review`,
  :mod:`~napari_sgnet.app.models`: viewport maths, the review session, the model choice.

Nothing here imports napari or Qt (an import-linter contract).
"""
