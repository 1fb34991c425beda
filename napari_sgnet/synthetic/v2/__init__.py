"""Generator version 2: needle-biopsy cores, outlined gland groups, real tumour densities.

See ``docs/synthetic.md`` (Version 2). :class:`RendererV2` has the interface of the v1
:class:`~napari_sgnet.synthetic._render.Renderer`.
"""

from napari_sgnet.synthetic.v2._render import RendererV2

__all__ = ["RendererV2"]
