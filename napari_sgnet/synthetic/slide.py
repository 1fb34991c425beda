"""The public generator: a lazy, chunk-deterministic synthetic slide as two pyramids."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.geometry import Box
from napari_sgnet.io.pyramid import Pyramid, read_window
from napari_sgnet.palette import GLEASON, Palette
from napari_sgnet.synthetic._render import Renderer
from napari_sgnet.synthetic.config import SynthConfig
from napari_sgnet.synthetic.v2 import RendererV2

__all__ = ["SyntheticLevel", "SyntheticSlide", "generate_slide", "make_renderer", "sample_slide"]

log = logging.getLogger(__name__)

_KINDS = ("image", "labels", "glands", "tissue")
_BOOL_KINDS = ("glands", "tissue")


def make_renderer(config: SynthConfig) -> Renderer | RendererV2:
    """The renderer of the config's generator version."""
    return RendererV2(config) if config.version == 2 else Renderer(config)


class SyntheticLevel:
    """A numpy-like, read-only view of one level, rendered on demand by ``__getitem__``.

    Slicing with steps of 1 renders exactly the requested window (any offset, any size);
    it is what the dask arrays of :class:`SyntheticSlide` wrap, one call per chunk.

    Parameters
    ----------
    renderer : Renderer or RendererV2
        The slide's renderer.
    downsample : int
        Level downsample factor.
    kind : str
        ``"image"`` (RGB uint8), ``"labels"`` (uint8), ``"glands"`` (bool ground truth) or
        ``"tissue"`` (bool, True on tissue).
    """

    def __init__(self, renderer: Renderer | RendererV2, downsample: int, kind: str) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        self.renderer = renderer
        self.downsample = int(downsample)
        self.kind = kind
        h, w = renderer.config.level_shape(self.downsample)
        self.shape: tuple[int, ...] = (h, w, 3) if kind == "image" else (h, w)
        self.dtype = np.dtype(bool if kind in _BOOL_KINDS else np.uint8)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        cfg = self.renderer.config
        token = cfg.token() if self.kind == "image" else cfg.layout_token()
        return ("napari-sgnet-synthetic", token, self.kind, self.downsample)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis or k is None for k in key) or len(key) > self.ndim:
            raise IndexError(f"unsupported index {key!r}")
        key = key + (slice(None),) * (self.ndim - len(key))
        spatial = tuple(zip(key[:2], self.shape[:2], strict=True))
        (y0, y1), (x0, x1) = (self._span(k, n) for k, n in spatial)
        box = Box(x0, y0, x1 - x0, y1 - y0)
        if self.kind == "image":
            out = self.renderer.image(self.downsample, box)
        elif self.kind == "labels":
            out = self.renderer.labels(self.downsample, box)
        elif self.kind == "tissue":
            out = self.renderer.tissue(self.downsample, box)
        else:
            out = self.renderer.gland_mask(self.downsample, box)
        # Integers drop their axis; slice steps subsample what was rendered.
        post = tuple(
            slice(None, None, k.indices(n)[2]) if isinstance(k, slice) else 0 for k, n in spatial
        )
        return out[(*post, *key[2:])]

    @staticmethod
    def _span(k: Any, n: int) -> tuple[int, int]:
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                raise IndexError("negative steps are not supported")
            return (start, max(start, stop))
        i = int(k)
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            raise IndexError(f"index {k} out of range for size {n}")
        return (i, i + 1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic Gleason-like slide: lazy image and label pyramids sharing one geometry.

    Attributes
    ----------
    config : SynthConfig
        What generated it.
    image : Pyramid
        RGB uint8 H&E-like pyramid.
    labels : Pyramid
        uint8 label pyramid. Version 1: 1 glass and stroma, 2 benign, 3-5 Gleason 3-5 (no
        pixel is 0). Version 2: 0 glass (no label), 1 stroma, 2 benign, 3-5 Gleason 3-5.
    palette : Palette
        The class palette (:data:`napari_sgnet.palette.GLEASON`).
    renderer : Renderer or RendererV2
        What renders the pixels.
    tissue : Pyramid
        bool pyramid, True on tissue (tells glass from tissue for both versions).
    """

    config: SynthConfig
    image: Pyramid
    labels: Pyramid
    palette: Palette
    renderer: Renderer | RendererV2
    tissue: Pyramid

    @property
    def downsamples(self) -> tuple[int, ...]:
        """Integer downsample of each level."""
        return self.config.downsamples

    def read(self, box: Box, level: int = 0, kind: str = "image", pad_value: int = 0) -> np.ndarray:
        """Render exactly ``box`` of ``level`` (no chunk rounding: cheaper than
        ``slide.image.read`` for windows that are not chunk-aligned), padded like
        :meth:`Pyramid.read` past the slide edge.

        Parameters
        ----------
        box : Box
            Window in the pixels of ``level``.
        level : int
            Pyramid level.
        kind : {"image", "labels", "glands", "tissue"}
            What to render.
        pad_value : int
            Value outside the slide.
        """
        lazy = SyntheticLevel(self.renderer, self.downsamples[level], kind)
        return read_window(lazy, box, pad_value=pad_value)

    def gland_mask(self, box: Box, level: int = 0) -> np.ndarray:
        """Ground-truth gland mask (bool) of a window of ``level``, for analysis and tests."""
        return self.renderer.gland_mask(self.downsamples[level], box)

    def gland_level(self, level: int, chunks: int | None = None) -> da.Array:
        """The ground-truth gland mask of a level as a lazy dask array."""
        lazy = SyntheticLevel(self.renderer, self.downsamples[level], "glands")
        size = chunks or self.config.chunk_size
        return da.from_array(  # type: ignore[no-untyped-call,no-any-return]
            lazy, chunks=(size, size), asarray=False, fancy=False
        )


def _level_array(renderer: Renderer | RendererV2, downsample: int, kind: str) -> da.Array:
    lazy = SyntheticLevel(renderer, downsample, kind)
    c = renderer.config.chunk_size
    chunks = (c, c, 3) if kind == "image" else (c, c)
    token = lazy.__dask_tokenize__()[1]
    return da.from_array(  # type: ignore[no-untyped-call,no-any-return]
        lazy,
        chunks=chunks,
        asarray=False,
        fancy=False,
        name=f"synthetic-{kind}-{token}-{downsample}",
        meta=np.empty((0,) * lazy.ndim, lazy.dtype),
    )


def generate_slide(config: SynthConfig | None = None, **overrides: Any) -> SyntheticSlide:
    """Build a lazy synthetic slide; nothing is rendered until pixels are read.

    Parameters
    ----------
    config : SynthConfig, optional
        Slide description (defaults to ``SynthConfig()``).
    **overrides
        Field changes applied on top of ``config``, e.g. ``generate_slide(seed=3)``.

    Returns
    -------
    SyntheticSlide
        Image and label pyramids (levels at downsample 1, 2, 4, ... until the larger side
        is at most ``config.min_level_size``), each level sampled directly from the model.
    """
    config = config or SynthConfig()
    if overrides:
        config = config.replace(**overrides)
    renderer = make_renderer(config)
    downsamples = config.downsamples
    meta = {"synthetic": config.to_dict(), "generator": "napari_sgnet.synthetic"}
    image = Pyramid(
        tuple(_level_array(renderer, d, "image") for d in downsamples),
        tuple(float(d) for d in downsamples),
        mpp=config.mpp,
        name=config.name,
        metadata=dict(meta),
    )
    labels = Pyramid(
        tuple(_level_array(renderer, d, "labels") for d in downsamples),
        tuple(float(d) for d in downsamples),
        mpp=config.mpp,
        name=f"{config.name} labels",
        metadata={**meta, "palette": GLEASON.to_dict()},
    )
    tissue = Pyramid(
        tuple(_level_array(renderer, d, "tissue") for d in downsamples),
        tuple(float(d) for d in downsamples),
        mpp=config.mpp,
        name=f"{config.name} tissue",
        metadata=dict(meta),
    )
    log.debug("synthetic slide %s: %s", config.name, image.summary())
    return SyntheticSlide(config, image, labels, GLEASON, renderer, tissue)


def sample_slide(size: int = 16384, seed: int = 0, **overrides: Any) -> SyntheticSlide:
    """A square synthetic slide for demos and napari's sample-data menu.

    Parameters
    ----------
    size : int
        Level-0 side in pixels (16384 px = 8.2 mm at 0.5 µm/px).
    seed : int
        Seed of the layout and textures.
    **overrides
        Further :class:`SynthConfig` fields.
    """
    return generate_slide(
        SynthConfig(width=size, height=size, seed=seed, name=f"synthetic-{seed}", **overrides)
    )
