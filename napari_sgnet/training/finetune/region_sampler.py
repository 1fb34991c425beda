"""Training samples drawn from corrected regions, never reaching into a held-out region.

:class:`RegionSampler` draws local/surrounding pairs around the training regions of one slide
(label-store corrections); :func:`patch_training_folder` keeps the patch-folder items that may
be trained on. Both apply the leakage rule of :mod:`.splits`: no training local patch and no
training surrounding patch intersects the bounding box of a held-out region of the same slide.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from napari_sgnet.config import ModelConfig
from napari_sgnet.geometry import Box, context_box
from napari_sgnet.io.pyramid import Pyramid, read_window
from napari_sgnet.io.windows import GLASS_PAD
from napari_sgnet.training.augment import Sample
from napari_sgnet.training.dataset import DataError
from napari_sgnet.training.finetune.splits import Region, merge_boxes, overlaps_any
from napari_sgnet.training.patches import PatchFolder

__all__ = ["RegionSampler", "patch_context_box", "patch_training_folder"]

log = logging.getLogger(__name__)

#: Image crops around training regions are held in memory up to this many bytes in total.
DEFAULT_CACHE_BYTES = 512 * 2**20


class _Crops:
    """Windows of one array served from in-memory crops, falling back to ``source``."""

    def __init__(self, boxes: Sequence[Box], arrays: Sequence[np.ndarray], source=None, pad=0):
        self.items = list(zip(boxes, arrays, strict=True))
        self.source, self.pad = source, pad

    def read(self, box: Box) -> np.ndarray:
        for crop_box, array in self.items:
            if crop_box.contains(box):
                rel = box.relative_to(crop_box)
                return array[rel.slices()].copy()
        if self.source is None:  # pragma: no cover - reach boxes cover every draw
            raise DataError(f"window {box.as_tuple()} lies outside the sampled regions")
        return read_window(self.source, box, pad_value=self.pad)


class RegionSampler:
    """Draws samples around the training regions of one slide.

    A class is drawn uniformly among those corrected (``balance_classes``), then a corrected
    pixel of that class; the local patch is centred there (jittered), the surrounding patch is
    centred on a random point inside the local patch, and the draw is rejected when either
    patch meets a held-out region's box or the local patch is more than ``max_unlabelled``
    uncorrected. Only training regions carry labels; every other pixel is 0 (ignored).

    Parameters
    ----------
    image : Pyramid
        The slide; ``level`` is the working level (the store's level 0). When the slide has no
        level at the model's µm/px this is the one-level resampled view of
        :meth:`napari_sgnet.io.working.WorkingLevel.as_pyramid`.
    level : int
        Working level.
    regions : sequence of Region
        Training regions of this slide (working-level pixels).
    exclusions : sequence of Box
        Held-out regions' boxes of this slide.
    config : ModelConfig
        Patch size and context factor.
    max_unlabelled : float
        Largest accepted fraction of label-0 pixels in the local patch.
    balance_classes : bool
        Draw the class first.
    record : bool
        Keep every accepted ``(local box, context box)`` in :attr:`drawn` (for audits/tests).
    cache_bytes : int
        Budget for in-memory image crops around the regions (else windows are read lazily).

    Raises
    ------
    DataError
        When no training pixel can be the centre of a patch clear of the held-out regions.
    """

    def __init__(
        self,
        image: Pyramid,
        level: int,
        regions: Sequence[Region],
        exclusions: Sequence[Box],
        config: ModelConfig,
        max_unlabelled: float = 0.95,
        balance_classes: bool = True,
        record: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_tries: int = 200,
    ) -> None:
        self.name = image.name
        self.patch = config.patch_size
        self.factor = config.context_factor
        self.exclusions = list(exclusions)
        self.max_unlabelled = max_unlabelled
        self.balance = balance_classes
        self.max_tries = max_tries
        self.record = record
        self.drawn: list[tuple[Box, Box]] = []
        self.stride = max(1, self.patch // 8)
        p, c = self.patch, config.context_size
        reach = p // 2 + c // 2 + self.stride + 2
        reach_boxes = merge_boxes(
            Box(r.box.x - reach, r.box.y - reach, r.box.w + 2 * reach, r.box.h + 2 * reach)
            for r in regions
        )
        canvases = [np.zeros((b.h, b.w), dtype=np.uint8) for b in reach_boxes]
        for r in regions:
            for b, canvas in zip(reach_boxes, canvases, strict=True):
                if b.contains(r.box):
                    view = canvas[r.box.relative_to(b).slices()]
                    np.copyto(view, r.labels, where=r.labels > 0)
        self.labels = _Crops(reach_boxes, canvases)
        arr = image.levels[level]
        channels = int(arr.shape[2]) if arr.ndim == 3 else 1
        need = sum(b.area for b in reach_boxes) * channels
        if need <= cache_bytes:
            crops = [image.read(b, level, pad_value=GLASS_PAD) for b in reach_boxes]
            self.image = _Crops(reach_boxes, crops, arr, GLASS_PAD)
        else:
            log.info("%s: regions too large to cache (%d MB), read lazily", self.name, need >> 20)
            self.image = _Crops([], [], arr, GLASS_PAD)
        self.positions = self._candidates(regions)
        if not self.positions:
            raise DataError(
                f"{self.name}: every training region lies within a patch's reach of a held-out "
                "region; correct regions further apart or hold out fewer"
            )
        self.classes = np.array(sorted(self.positions), dtype=np.int64)
        self.all_positions = np.concatenate([self.positions[int(k)] for k in self.classes])

    def _candidates(self, regions: Sequence[Region]) -> dict[int, np.ndarray]:
        """Corrected pixels (on a stride grid) whose centred patches are clear of exclusions."""
        s, p = self.stride, self.patch
        per_class: dict[int, list[np.ndarray]] = {}
        for r in regions:
            sub = r.labels[::s, ::s]
            ys, xs = np.nonzero(sub)
            ys, xs = ys * s, xs * s
            if ys.size == 0:  # thinner than the stride: keep every pixel
                ys, xs = np.nonzero(r.labels)
            ok = ~_hits_any(
                r.box.x + xs - p // 2, r.box.y + ys - p // 2, p, self.factor, self.exclusions
            )
            ys, xs = ys[ok], xs[ok]
            cls = r.labels[ys, xs]
            pos = np.stack([ys + r.box.y, xs + r.box.x], axis=1)
            for k in np.unique(cls):
                per_class.setdefault(int(k), []).append(pos[cls == k])
        return {k: np.concatenate(v) for k, v in per_class.items() if sum(map(len, v))}

    def sample(self, rng: np.random.Generator) -> Sample:
        """Draw one sample; raises :class:`DataError` when no acceptable patch is found."""
        p = self.patch
        for _ in range(self.max_tries):
            if self.balance:
                pos = self.positions[int(self.classes[rng.integers(self.classes.size)])]
            else:
                pos = self.all_positions
            cy, cx = pos[rng.integers(len(pos))] + rng.integers(0, self.stride, 2)
            box = Box(int(cx) - p // 2, int(cy) - p // 2, p, p)
            center = (box.x + float(rng.uniform(0, p)), box.y + float(rng.uniform(0, p)))
            ctx = context_box(box, self.factor, center=center)
            if overlaps_any(ctx, self.exclusions) or overlaps_any(box, self.exclusions):
                continue
            local_mask = self.labels.read(box)
            if np.count_nonzero(local_mask == 0) > self.max_unlabelled * local_mask.size:
                continue
            context_mask = self.labels.read(ctx)
            local = self.image.read(box)[..., :3]
            context = self.image.read(ctx)[..., :3]
            rel = box.relative_to(ctx)
            if self.record:
                self.drawn.append((box, ctx))
            return Sample(local, context, local_mask, context_mask, (rel.x, rel.y))
        raise DataError(
            f"{self.name}: no training patch clear of the held-out regions with at most "
            f"{self.max_unlabelled:.0%} unlabelled pixels in {self.max_tries} tries"
        )


def _hits_any(
    x0: np.ndarray, y0: np.ndarray, p: int, factor: float, boxes: Sequence[Box]
) -> np.ndarray:
    """For local patches ``(x0, y0, p, p)``: does their centred surrounding patch meet a box?

    Vectorised :func:`~napari_sgnet.geometry.context_box` + :func:`.overlaps_any`.
    """
    hit = np.zeros(x0.shape, dtype=bool)
    if not boxes or x0.size == 0:
        return hit
    side = round(p * factor)
    cx0 = np.round(x0 + p / 2.0 - side / 2.0).astype(np.int64)
    cy0 = np.round(y0 + p / 2.0 - side / 2.0).astype(np.int64)
    for b in boxes:
        if b.is_empty:
            continue
        hit |= (cx0 < b.x1) & (b.x < cx0 + side) & (cy0 < b.y1) & (b.y < cy0 + side)
    return hit


def patch_context_box(entry: dict, config: ModelConfig) -> Box | None:
    """The surrounding patch of a patch-folder item in its slide's pixels (``None`` unplaced)."""
    box_v = entry.get("local_box")
    if not box_v:
        return None
    x, y, _, _ = (int(v) for v in box_v)
    ox, oy = (int(v) for v in entry["offset"])
    cw, ch = entry.get("context_size", [config.context_size] * 2)
    return Box(x - ox, y - oy, int(cw), int(ch))


def patch_training_folder(
    folder: PatchFolder,
    regions: Sequence[Region],
    exclusions: dict[str, list[Box]],
    config: ModelConfig,
) -> tuple[PatchFolder, int]:
    """The training items of a patch folder: those of ``regions`` clear of held-out boxes.

    Parameters
    ----------
    folder : PatchFolder
        The whole folder.
    regions : sequence of Region
        Its training regions (``items`` index ``folder.entries``).
    exclusions : dict
        Held-out boxes per leakage group.
    config : ModelConfig
        For the surrounding patch's size.

    Returns
    -------
    (PatchFolder, int)
        A folder view with only the usable items, and how many were dropped for leakage.
    """
    keep, dropped = [], 0
    for r in regions:
        excl = exclusions.get(r.group, [])
        for i in r.items:
            entry = folder.entries[i]
            ctx = patch_context_box(entry, config)
            box_v = entry.get("local_box")
            local = Box(*(int(v) for v in box_v)) if box_v else None
            if ctx is not None and (overlaps_any(ctx, excl) or overlaps_any(local, excl)):
                dropped += 1
                continue
            keep.append(i)
    entries = tuple(folder.entries[i] for i in sorted(keep))
    return dataclasses.replace(folder, entries=entries), dropped
