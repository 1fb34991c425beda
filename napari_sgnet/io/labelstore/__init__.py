"""The label store: one zarr v3 group per slide with predicted and corrected labels.

:class:`LabelStore` is the public face; the modules behind it each own one part:

- :mod:`.meta`: slide identity, NGFF image-label attributes, timestamps;
- :mod:`.pyramid`: label-pyramid maths (level shapes, mode downsampling);
- :mod:`.base`: opening, identity checks, validation;
- :mod:`.store`: creation, tile writes, edits, commits;
- :mod:`.review_state`: pending edits and reviewed regions kept inside the store.
"""

from napari_sgnet.io.labelstore.store import DONE_GLASS, DONE_PREDICTED, LabelStore

__all__ = ["DONE_GLASS", "DONE_PREDICTED", "LabelStore"]
