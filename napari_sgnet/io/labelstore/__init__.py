"""The label store: one zarr v3 group per slide with predicted and corrected labels.

:class:`LabelStore` is the one class; it is made of parts, each in its own module,
that share one :class:`~napari_sgnet.io.labelstore.guard.StoreGuard` (the store's lock):

- :mod:`.layout`: the arrays and NGFF attributes of a store, made and checked;
- :mod:`.meta`: slide identity, timestamps and the ``sgnet`` records;
- :mod:`.pixels`: chunk-aligned writes of level-0 labels, confidence, edits, done-map;
- :mod:`.pyramid`: label-pyramid maths (level shapes, mode downsampling, updates);
- :mod:`.review_state`: pending edits and reviewed regions kept inside the store;
- :mod:`.store`: :class:`LabelStore` itself (opening, creation, the public operations);
- :mod:`.atomic`: creation in a temporary sibling, overwrite by moving the old store aside;
- :mod:`.slide_ref`: finding, checking and re-linking a store's slide (the fingerprint);
- :mod:`.outputs`: the one guard that keeps outputs off the inputs;
- :mod:`.verify`: chunk-by-chunk integrity checks and tile repair (``napari-sgnet check``).
"""

from napari_sgnet.io.labelstore.review_state import PendingEdit, ReviewRecord
from napari_sgnet.io.labelstore.store import DONE_GLASS, DONE_PREDICTED, LabelStore

__all__ = ["DONE_GLASS", "DONE_PREDICTED", "LabelStore", "PendingEdit", "ReviewRecord"]
