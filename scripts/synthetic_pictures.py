"""Render the pictures of docs/synthetic.md (Version 2) into docs/images/synthetic/.

    python scripts/synthetic_pictures.py [--out docs/images/synthetic] [--seed 4]

One 384 px (192 µm) crop at 0.5 µm/px per class, mimic and distractor (centred on a site of
that kind found by the generator's own site index), a whole 4 x 3 mm slide at 4 µm/px beside
its labels, and 1.6 mm of one core at 1 µm/px. PNGs are palette-quantised to stay small.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from napari_sgnet.geometry import Box
from napari_sgnet.palette import GLEASON
from napari_sgnet.synthetic import SynthConfig, SyntheticSlide, generate_slide
from napari_sgnet.synthetic.v2._index import LATTICES
from napari_sgnet.synthetic.v2._render import RendererV2
from napari_sgnet.synthetic.v2._shapes import CRIBRIFORM, INFLAMMATION, NERVE, SOLID, VESSEL, Shape

log = logging.getLogger("synthetic_pictures")

#: Crop name -> (lattice, shape filter, caption).
CROPS: dict[str, tuple[str, Callable[[list[Shape]], bool], str]] = {
    "benign": ("benign", lambda g: g[0].tone < 0.3, "benign glands: basal cells, papillary folds"),
    "pin_like": ("benign", lambda g: g[0].tone >= 0.3, "PIN-like gland (benign, 2)"),
    "atrophy": ("atrophy", lambda g: True, "atrophy (benign, 2)"),
    "crowded_benign": ("crowded", lambda g: True, "crowded benign (benign, 2)"),
    "gleason3": ("gleason3", lambda g: True, "Gleason 3"),
    "gleason4_cribriform": ("gleason4", lambda g: g[0].kind == CRIBRIFORM, "Gleason 4 cribriform"),
    "gleason4_fused": ("gleason4", lambda g: g[0].kind != CRIBRIFORM, "Gleason 4 fused/poor"),
    "gleason5_sheet": ("gleason5", lambda g: len(g) == 1 and g[0].kind == SOLID, "Gleason 5 sheet"),
    "gleason5_cords": ("gleason5", lambda g: len(g) > 1, "Gleason 5 cords, single cells"),
    "nerve": ("distractor", lambda g: g[0].kind == NERVE, "nerve (stroma, 1)"),
    "vessel": ("distractor", lambda g: g[0].kind == VESSEL and g[0].red_cells > 0, "vessel"),
    "inflammation": ("distractor", lambda g: g[0].kind == INFLAMMATION, "inflammation"),
}


def _save(rgb: np.ndarray, path: Path, colours: int = 48) -> None:
    img = Image.fromarray(rgb)
    img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    log.info("%s: %d KB", path, path.stat().st_size // 1024)


def _groups(renderer: RendererV2, lattice: str) -> list[list[Shape]]:
    """Shape groups (one per site) of a lattice over the whole slide, in a fixed order."""
    li = next(i for i, lat in enumerate(LATTICES) if lat.name == lattice)
    index = renderer.shapes
    s, n = index._geometry(LATTICES[li])
    b = n * s
    cfg = renderer.config
    groups: list[list[Shape]] = []
    for by in range(int(cfg.rows * cfg.mpp // b) + 1):
        for bx in range(int(cfg.width * cfg.mpp // b) + 1):
            shapes, _ = index._block(li, bx, by)
            current: list[Shape] = []
            for p in shapes:
                # Members of one site share the key prefix; a new site starts a new group.
                if current and abs(p.cx - current[0].cx) + abs(p.cy - current[0].cy) > 2 * s:
                    groups.append(current)
                    current = []
                current.append(p)
            if current:
                groups.append(current)
    return groups


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    colours = np.array([[255, 255, 255]] + [list(c.color) for c in GLEASON.classes], np.uint8)
    out: np.ndarray = colours[np.minimum(labels, len(colours) - 1)]
    return out


def crops(slides: list[SyntheticSlide], out: Path, size: int = 384) -> None:
    """One level-0 crop per class, mimic and distractor (from the first slide that has it)."""
    for name, (lattice, keep, _) in CROPS.items():
        for slide in slides:
            assert isinstance(slide.renderer, RendererV2)
            groups = [g for g in _groups(slide.renderer, lattice) if keep(g)]
            if groups:
                break
        else:
            log.warning("no %s on these slides", name)
            continue
        g = groups[len(groups) // 2]
        mpp = slide.config.mpp
        cx, cy = g[0].cx / mpp, g[0].cy / mpp
        box = Box(int(cx) - size // 2, int(cy) - size // 2, size, size)
        _save(slide.read(box, 0), out / f"{name}.png")
        log.info("  %s: seed %d, level-0 box %s", name, slide.config.seed, box)
    slide = slides[0]
    # Unlabelled stroma: the middle of a stroma stretch of a core.
    ds = slide.downsamples[3]
    h, w = slide.config.level_shape(ds)
    labels = slide.read(Box(0, 0, w, h), 3, kind="labels")
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(labels == 1)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    box = Box(int(x) * ds - size // 2, int(y) * ds - size // 2, size, size)
    _save(slide.read(box, 0), out / "stroma.png")


def overviews(slide: SyntheticSlide, out: Path) -> None:
    """The slide at 4 µm/px beside its labels, and ~2 mm of a core at 1 µm/px."""
    level = slide.downsamples.index(8)
    h, w = slide.config.level_shape(8)
    box = Box(0, 0, w, h)
    image = slide.read(box, level)
    labels = _labels_rgb(slide.read(box, level, kind="labels"))
    gap = np.full((h, 8, 3), 255, np.uint8)
    _save(np.concatenate([image, gap, labels], axis=1), out / "slide_4um.png", colours=64)
    tissue = slide.read(box, level, kind="tissue")
    rows = np.flatnonzero(tissue.mean(axis=1) > 0.5)
    y = int(rows[len(rows) // 2]) * 8
    x = int(0.3 * slide.config.width)
    level1 = slide.downsamples.index(2)
    zbox = Box(x // 2, y // 2 - 500, 1600, 1000)
    # Without pixel noise (an image-only knob) the 2 mm picture compresses 4x better.
    zoom = generate_slide(slide.config.replace(noise=0.0)).read(zbox, level1)
    zoom_labels = _labels_rgb(slide.read(zbox, level1, "labels"))
    _save(zoom, out / "core_1um.png", colours=24)
    _save(zoom_labels[::4, ::4], out / "core_1um_labels.png", colours=8)


def main(argv: list[str] | None = None) -> int:
    """Render every picture."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/images/synthetic"))
    p.add_argument("--seed", type=int, default=4, help="slide seed (crops fall back to 0-3)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed] + [s for s in range(4) if s != args.seed]
    crops([generate_slide(SynthConfig(width=16384, seed=s, version=2)) for s in seeds], args.out)
    small = generate_slide(SynthConfig(width=8192, height=6144, seed=args.seed, version=2))
    overviews(small, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
