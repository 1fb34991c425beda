"""Training samples drawn from slides (image + label pyramids) or exported patch folders.

Every draw is a pure function of a ``numpy.random.Generator``; the batch for training step
``s`` is drawn from ``default_rng([seed, s])``, so a run is reproducible and a resumed run draws
exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from napari_sgnet.config import ModelConfig
from napari_sgnet.errors import UserInputError
from napari_sgnet.geometry import Box
from napari_sgnet.inference.ood import TISSUE_SATURATION, tissue_pixels
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.io.windows import GLASS_PAD, read_local_and_context
from napari_sgnet.io.working import ScaleError, WorkingLevel, working_level
from napari_sgnet.training.augment import AugmentConfig, Sample, augment
from napari_sgnet.training.patches import PatchFolder, PatchFolderError

__all__ = [
    "BatchStream",
    "DataError",
    "PatchFolderSampler",
    "SampleSource",
    "SlideSampler",
    "SlideSource",
    "collate",
    "in_memory_level",
    "make_batch",
    "tissue_pixels",
    "working_views",
]

log = logging.getLogger(__name__)

#: Pixels whose ``max(RGB) - min(RGB)`` is at most this are glass (unstained).
GLASS_SATURATION = TISSUE_SATURATION

#: Working levels up to this size are read into memory once (fast random windows).
DEFAULT_CACHE_BYTES = 256 * 2**20


class DataError(UserInputError):
    """Training data is unusable (no labelled tissue, mismatched label pyramid, ...)."""


@dataclass(frozen=True)
class SlideSource:
    """A slide and its ground-truth label pyramid (label ids, 0 = no label).

    ``tissue``, when given, is a bool/uint8 pyramid of the slide's tissue (non-zero = tissue,
    levels like ``labels``'); evaluation then scores tissue pixels by it (see
    :mod:`napari_sgnet.training.evaluate`), otherwise by ``labels > 0``.
    """

    image: Pyramid
    labels: Pyramid
    name: str = ""
    tissue: Pyramid | None = None


class SampleSource(Protocol):
    """Anything that draws one :class:`Sample` from a random generator."""

    def sample(self, rng: np.random.Generator) -> Sample: ...


def working_views(
    image: Pyramid, labels: Pyramid, mpp: float | None
) -> tuple[WorkingLevel, WorkingLevel]:
    """The image and label working levels at the model's µm/px (the engine's reads).

    The image is area-averaged from its nearest finer level when it has no level at ``mpp``
    (:func:`napari_sgnet.io.working.working_level`); the labels are reduced by mode/nearest
    from their level of the same size as the image's source level, so both cover the same
    working pixels. A label pyramid without µm/px is matched to the image by level size.

    Raises
    ------
    DataError
        The slide has no µm/px, is coarser than ``mpp``, or no label level fits the image's.
    """
    try:
        img = working_level(image, mpp)
    except ScaleError as exc:
        raise DataError(str(exc)) from exc
    size = img.size
    src_size = image.level_size(img.level)
    candidates = []
    if labels.mpp is not None:
        try:
            candidates.append(working_level(labels, mpp, labels=True))
        except ScaleError:
            pass
    # Same source size, same factor: the label pixels under each working pixel.
    candidates += [
        WorkingLevel(labels, i, img.factor, labels=True)
        for i in range(labels.n_levels)
        if labels.level_size(i) == src_size
    ]
    # A label level already at the working size (labels saved at the model's resolution).
    candidates += [
        WorkingLevel(labels, i, 1.0, labels=True)
        for i in range(labels.n_levels)
        if labels.level_size(i) == size
    ]
    for lab in candidates:
        if lab.size == size:
            return img, lab
    raise DataError(
        f"label pyramid {labels.name!r} has no level of size {src_size[0]} x {src_size[1]} "
        f"(or {size[0]} x {size[1]}) matching level {img.level} of {image.name!r}"
    )


def in_memory_level(
    pyramid: Pyramid, level: int, cache_bytes: int = DEFAULT_CACHE_BYTES
) -> tuple[Pyramid, int]:
    """``(pyramid, level)`` to read from: a one-level in-memory copy of ``level`` when it fits
    ``cache_bytes`` (random windows then cost no decoding), else the input unchanged."""
    arr = pyramid.levels[level]
    if arr.nbytes > cache_bytes:
        return pyramid, level
    data = np.asarray(arr.compute() if hasattr(arr, "compute") else arr)
    # A numpy-backed level: Pyramid.read / read_window slice it directly, without the
    # per-read graph overhead of a dask array (a few ms per window, per sample).
    level_array: Any = data
    return Pyramid(
        (level_array,), (1.0,), pyramid.level_mpp(level), pyramid.source, pyramid.name
    ), 0


class SlideSampler:
    """Draws samples from one slide at the model's working level (see :func:`working_views`).

    A local patch is centred near a random labelled tissue pixel (classes drawn uniformly when
    ``balance_classes``) and rejected when more than ``max_unlabelled`` of it is label 0 or
    glass (unsaturated pixels, see :func:`tissue_pixels`; ground truths often label glass as
    background, which would otherwise flood the samples); its surrounding patch is centred on a
    random point inside it (padded with glass / label 0).

    Parameters
    ----------
    source : SlideSource
        Slide and labels.
    config : ModelConfig
        Patch size, context factor and µm/px.
    max_unlabelled : float
        Largest accepted fraction of label-0 or glass pixels in the local patch.
    balance_classes : bool
        Pick the class first (uniformly over classes present), then a position of that class.
    cache_bytes : int
        Working levels up to this size are held in memory.
    """

    def __init__(
        self,
        source: SlideSource,
        config: ModelConfig,
        max_unlabelled: float = 0.5,
        balance_classes: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_tries: int = 50,
    ) -> None:
        self.name = source.name or source.image.name
        self.patch = config.patch_size
        self.factor = config.context_factor
        self.max_unlabelled = max_unlabelled
        self.max_tries = max_tries
        img, lab = working_views(source.image, source.labels, config.mpp)
        self.working = img
        self.image, self.level = in_memory_level(*img.as_pyramid(), cache_bytes)
        self.labels, self.lab_level = in_memory_level(*lab.as_pyramid(), cache_bytes)
        self.stride = max(1, self.patch // 8)
        grid = self._grid(self.labels, self.lab_level)
        self.check_tissue = source.image.is_rgb
        if self.check_tissue:
            grid = np.where(tissue_pixels(self._grid(self.image, self.level)), grid, 0)
        ids = np.unique(grid)
        ids = ids[ids != 0]
        if ids.size == 0:
            raise DataError(f"{self.name}: no labelled tissue at the working level")
        self.classes = ids
        self.positions = {int(k): np.argwhere(grid == k) * self.stride for k in ids}
        self.all_positions = np.concatenate(list(self.positions.values()))
        self.balance = balance_classes

    def _grid(self, pyramid: Pyramid, level: int) -> np.ndarray:
        arr = pyramid.levels[level][:: self.stride, :: self.stride]
        return np.asarray(arr.compute() if hasattr(arr, "compute") else arr)

    def sample(self, rng: np.random.Generator) -> Sample:
        """Draw one sample; raises :class:`DataError` when no acceptable patch is found."""
        p = self.patch
        for _ in range(self.max_tries):
            if self.balance:
                cls = int(self.classes[rng.integers(self.classes.size)])
                pos = self.positions[cls]
            else:
                pos = self.all_positions
            cy, cx = pos[rng.integers(len(pos))] + rng.integers(0, self.stride, 2)
            box = Box(int(cx) - p // 2, int(cy) - p // 2, p, p)
            center = (box.x + float(rng.uniform(0, p)), box.y + float(rng.uniform(0, p)))
            local_mask, context_mask, ctx = read_local_and_context(
                self.labels, self.lab_level, box, self.factor, center, pad_value=0
            )
            limit = self.max_unlabelled * local_mask.size
            if np.count_nonzero(local_mask == 0) > limit:
                continue
            local, context, _ = read_local_and_context(
                self.image, self.level, box, self.factor, center, pad_value=GLASS_PAD
            )
            if self.check_tissue:
                unusable = (local_mask == 0) | ~tissue_pixels(local)
                if np.count_nonzero(unusable) > limit:
                    continue
            rel = box.relative_to(ctx)
            offset = (rel.x, rel.y)
            return Sample(local[..., :3], context[..., :3], local_mask, context_mask, offset)
        raise DataError(
            f"{self.name}: no local patch with at most {self.max_unlabelled:.0%} unlabelled or "
            f"glass pixels in {self.max_tries} tries"
        )


class PatchFolderSampler:
    """Draws samples uniformly from an exported patch folder (see :mod:`.patches`)."""

    def __init__(self, folder: PatchFolder, config: ModelConfig) -> None:
        if len(folder) == 0:
            raise DataError(f"{folder.path}: the patch folder has no items")
        if not folder.palette.same_classes(config.palette):
            raise DataError(
                f"{folder.path}: palette {folder.palette.names} differs from the model's "
                f"{config.palette.names}"
            )
        for e in folder.entries:
            lw, lh = e.get("local_size", [config.patch_size] * 2)
            cw, ch = e.get("context_size", [config.context_size] * 2)
            if (lw, lh, cw, ch) != (config.patch_size,) * 2 + (config.context_size,) * 2:
                raise DataError(
                    f"{folder.path}: item {e['id']} is {lw}x{lh} / {cw}x{ch}; the model needs "
                    f"{config.patch_size} / {config.context_size}"
                )
        self.folder = folder

    def sample(self, rng: np.random.Generator) -> Sample:
        """Draw one stored item."""
        try:
            item = self.folder[int(rng.integers(len(self.folder)))]
        except PatchFolderError as exc:
            raise DataError(str(exc)) from exc
        return Sample(item.local, item.context, item.local_mask, item.context_mask, item.offset)


def collate(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """Stack samples into uint8 image tensors ``(B, 3, H, W)``, int64 label tensors
    ``(B, H, W)`` and a float ``(B, 4)`` ``local_box`` ``(x, y, w, h)`` in context pixels."""

    def images(key: str) -> torch.Tensor:
        arr = np.stack([getattr(s, key) for s in samples])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def masks(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, key) for s in samples]).astype(np.int64))

    return {
        "local": images("local"),
        "context": images("context"),
        "local_labels": masks("local_mask"),
        "context_labels": masks("context_mask"),
        "local_box": torch.tensor([s.local_box for s in samples], dtype=torch.float32),
    }


def make_batch(
    sources: Sequence[SampleSource],
    batch_size: int,
    seed: int,
    step: int,
    augmentation: AugmentConfig | None = None,
) -> dict[str, torch.Tensor]:
    """The batch of training step ``step``: a pure function of ``(seed, step)``.

    Each sample picks a source uniformly, draws from it and is augmented.
    """
    if not sources:
        raise DataError("no training sources")
    rng = np.random.default_rng([seed, step])
    aug = augmentation if augmentation is not None else AugmentConfig()
    samples = []
    for _ in range(batch_size):
        s = sources[int(rng.integers(len(sources)))].sample(rng)
        samples.append(augment(s, rng, aug))
    return collate(samples)


class BatchStream(torch.utils.data.IterableDataset):
    """Batches for steps ``start..stop-1`` (use with ``DataLoader(batch_size=None)``).

    With several workers, worker ``i`` builds the steps ``start + i, start + i + n, ...`` and
    the loader interleaves them back in order.
    """

    def __init__(
        self,
        sources: Sequence[SampleSource],
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        augmentation: AugmentConfig | None = None,
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.start, self.stop = start, stop
        self.augmentation = augmentation

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        first, every = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + first, self.stop, every):
            yield make_batch(self.sources, self.batch_size, self.seed, step, self.augmentation)
