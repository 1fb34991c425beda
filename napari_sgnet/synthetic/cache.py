"""A shipped, exact cache of a synthetic slide's coarse levels.

The coarse levels of a whole synthetic slide are the expensive ones to render (each
pixel sums the whole slide's gland layout) and they are exactly what napari reads when a
slide is first shown (the thumbnail and the level that fits the canvas). For the bundled
sample slide they are rendered once, by ``scripts/make_synthetic_sample_cache.py``, and
stored losslessly (WebP lossless for RGB, zstd for labels) in one TIFF; the sample then
reads those pixels instead of rendering them. The file records the slide's full
:class:`SynthConfig` and a digest of the generator's source code: when either differs
from what would render the slide now, the cache is ignored (with a log line) and the
levels render from the generator as before. ``tests/test_synthetic_cache.py`` checks that
the shipped file is current and that crops of it equal the generator's own render
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.synthetic.config import SynthConfig
from napari_sgnet.synthetic.slide import SyntheticSlide

__all__ = [
    "CACHE_FORMAT",
    "CachedLevel",
    "generator_digest",
    "open_coarse_cache",
    "with_coarse_cache",
    "write_coarse_cache",
]

log = logging.getLogger(__name__)

#: Format tag stored in the cache file's description.
CACHE_FORMAT = "napari-sgnet-synthetic-coarse-cache/1"
_KINDS = ("image", "labels")


def generator_digest() -> str:
    """SHA-256 of the generator's source (every ``.py`` file of ``napari_sgnet.synthetic``).

    Any change to the code that renders pixels changes it, which invalidates every cache.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.name == "cache.py" and path.parent == root:
            continue  # this module reads pixels, it renders none
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes().replace(b"\r\n", b"\n"))
        h.update(b"\0")
    return h.hexdigest()


def _description(config: SynthConfig, pages: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "format": CACHE_FORMAT,
            "config": config.to_dict(),
            "generator": generator_digest(),
            "pages": pages,
        },
        sort_keys=True,
    )


def write_coarse_cache(slide: SyntheticSlide, path: str | Path, levels: int = 2) -> Path:
    """Render the ``levels`` coarsest levels of ``slide`` (image and labels) into ``path``.

    Parameters
    ----------
    slide : SyntheticSlide
        The slide (usually :func:`napari_sgnet.synthetic.sample_slide`).
    path : str or Path
        The TIFF to write (replaced atomically).
    levels : int
        How many of the coarsest levels to store.

    Returns
    -------
    Path
        ``path``.
    """
    import tifffile

    path = Path(path)
    n = len(slide.downsamples)
    chosen = list(range(max(0, n - levels), n))
    pages: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    for kind in _KINDS:
        pyramid = slide.image if kind == "image" else slide.labels
        for level in chosen:
            level_array = pyramid.levels[level]
            arrays.append(np.asarray(level_array.compute(scheduler="threads")))  # type: ignore[no-untyped-call]
            pages.append({"kind": kind, "downsample": slide.downsamples[level]})
    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp) as tif:
        for i, array in enumerate(arrays):
            extra: dict[str, Any] = {}
            if i == 0:
                extra["description"] = _description(slide.config, pages)
            if array.ndim == 3:
                tif.write(array, compression="webp", rowsperstrip=array.shape[0],
                          compressionargs={"level": 100, "lossless": True}, **extra)
            else:
                tif.write(array, compression="zstd", predictor=True, rowsperstrip=array.shape[0],
                          compressionargs={"level": 19}, **extra)
    os.replace(tmp, path)
    return path


class CachedLevel:
    """A numpy-like, read-only view of one cached level, decoded on the first read.

    Parameters
    ----------
    path : Path
        The cache TIFF.
    page : int
        Its page holding this level.
    shape : tuple of int
        The level's shape.
    dtype : numpy.dtype
        Its dtype.
    """

    def __init__(self, path: Path, page: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.path = path
        self.page = page
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)
        self._array: np.ndarray | None = None
        self._lock = threading.Lock()

    def _load(self) -> np.ndarray:
        with self._lock:
            if self._array is None:
                import tifffile

                with tifffile.TiffFile(self.path) as tif:
                    array = tif.pages[self.page].asarray()
                if array.shape != self.shape or array.dtype != self.dtype:
                    raise ValueError(f"{self.path}: page {self.page} is {array.shape} "
                                     f"{array.dtype}, expected {self.shape} {self.dtype}")
                array.flags.writeable = False
                self._array = array
            return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._load()[key]  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self._load()
        return array if dtype is None else array.astype(dtype)


def open_coarse_cache(
    path: str | Path, config: SynthConfig
) -> dict[tuple[str, int], CachedLevel] | None:
    """The cached levels of ``config``'s slide in ``path``, or ``None`` when not usable.

    Reads only the file's header. ``None`` (logged) when the file is missing or unreadable,
    or was written for another config or by another version of the generator's code.

    Returns
    -------
    dict or None
        ``(kind, downsample) -> CachedLevel`` with kind ``"image"`` or ``"labels"``.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first
            meta = json.loads(first.description)
            shapes = [(tuple(p.shape), np.dtype(p.dtype)) for p in tif.pages]
    except (OSError, ValueError, TypeError, tifffile.TiffFileError) as exc:
        log.warning("synthetic cache %s unreadable (%s); rendering instead", path, exc)
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("config") != config.to_dict():
        log.info("synthetic cache %s is for another slide; rendering instead", path)
        return None
    if meta.get("generator") != generator_digest():
        log.info("synthetic cache %s was made by another generator version; rendering "
                 "instead (scripts/make_synthetic_sample_cache.py rebuilds it)", path)
        return None
    out: dict[tuple[str, int], CachedLevel] = {}
    for i, page in enumerate(meta.get("pages", [])):
        kind, downsample = str(page["kind"]), int(page["downsample"])
        h, w = config.level_shape(downsample)
        want = (h, w, 3) if kind == "image" else (h, w)
        shape, dtype = shapes[i]
        if shape != want or dtype != np.uint8:
            log.warning("synthetic cache %s: page %d is %s %s, expected %s uint8; ignored",
                        path, i, shape, dtype, want)
            return None
        out[(kind, downsample)] = CachedLevel(path, i, want, np.dtype(np.uint8))
    return out


def _swap_levels(
    pyramid: Pyramid, kind: str, slide: SyntheticSlide, cache: dict[tuple[str, int], CachedLevel]
) -> Pyramid:
    import dataclasses

    token = slide.config.token() if kind == "image" else slide.config.layout_token()
    levels = list(pyramid.levels)
    for i, d in enumerate(slide.downsamples):
        cached = cache.get((kind, d))
        if cached is None:
            continue
        levels[i] = da.from_array(  # type: ignore[no-untyped-call]
            cached,
            chunks=pyramid.levels[i].chunksize,
            asarray=False,
            fancy=False,
            name=f"synthetic-cache-{kind}-{token}-{d}",
            meta=np.empty((0,) * cached.ndim, np.uint8),
        )
    return dataclasses.replace(pyramid, levels=tuple(levels))


def with_coarse_cache(slide: SyntheticSlide, path: str | Path) -> SyntheticSlide:
    """``slide`` with its image and label levels read from the cache at ``path`` where usable.

    The pixels are the same as the generator's (the cache is only used when it was made
    from the same config by the same generator code); without a usable cache, ``slide``
    is returned unchanged.
    """
    import dataclasses

    cache = open_coarse_cache(path, slide.config)
    if not cache:
        return slide
    return dataclasses.replace(
        slide,
        image=_swap_levels(slide.image, "image", slide, cache),
        labels=_swap_levels(slide.labels, "labels", slide, cache),
    )
