"""Regenerate the pictures of docs/synthetic.md: ``python docs/images/make_synthetic_images.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_sgnet.geometry import Box
from napari_sgnet.io.working import working_level
from napari_sgnet.synthetic import SynthConfig, generate_slide
from napari_sgnet.synthetic._glands import CRIBRIFORM, GLAND, SOLID

OUT = Path(__file__).resolve().parent
PANEL = 256


def _save(img: Image.Image, name: str) -> None:
    """Save as an optimised 256-colour PNG (keeps the docs light)."""
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        OUT / name, optimize=True
    )


def _caption(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 8 + 6 * len(text), 16), fill=(255, 255, 255))
    draw.text((4, 3), text, fill=(0, 0, 0))
    return img


def _crop(slide, level: int, cx_um: float, cy_um: float) -> np.ndarray:
    ds = slide.downsamples[level]
    px = slide.config.mpp * ds
    box = Box(int(cx_um / px - PANEL / 2), int(cy_um / px - PANEL / 2), PANEL, PANEL)
    return slide.image.read(box, level=level, pad_value=255)


def main() -> None:
    slide = generate_slide(SynthConfig(width=24576, seed=1))
    renderer = slide.renderer
    mpp = slide.config.mpp
    coarse = slide.image.n_levels - 1
    labels = slide.labels.levels[coarse].compute()
    ds_coarse = slide.downsamples[coarse]

    def label_at(x_um: float, y_um: float) -> int:
        return int(labels[int(y_um / mpp / ds_coarse), int(x_um / mpp / ds_coarse)])

    # One example per class / architecture.
    examples: dict[str, tuple[float, float]] = {}
    edge: dict[str, float] = {}  # zoom on the epithelium of large glands, not their lumen
    names = {
        (2, GLAND): "benign",
        (3, GLAND): "gleason3",
        (4, CRIBRIFORM): "gleason4-cribriform",
        (4, GLAND): "gleason4-fused",
        (5, SOLID): "gleason5",
    }
    groups = renderer.glands.find(0, 0, 24576 * mpp, 24576 * mpp)
    for p in groups:
        key = (label_at(p.cx, p.cy), p.kind)
        if key in names and names[key] not in examples:
            examples[names[key]] = (p.cx, p.cy)
            edge[names[key]] = 0.8 * p.radius if p.radius > 60 else 0.0
        if key == (5, SOLID) and p.aspect > 4 and "gleason5-cords" not in examples:
            examples["gleason5-cords"] = (p.cx, p.cy)
    ys, xs = np.nonzero(labels == 1)
    layout = renderer.layout
    for y, x in zip(ys[::97], xs[::97], strict=True):
        cx, cy = (x + 0.5) * ds_coarse * mpp, (y + 0.5) * ds_coarse * mpp
        window = labels[max(y - 12, 0) : y + 13, max(x - 12, 0) : x + 13]
        field = layout.tissue_points(np.array([cx]), np.array([cy]))[0]
        deep = field > layout.tissue_threshold + 0.2
        if deep and (window == 1).all():
            examples["stroma"] = (cx, cy)
            break
    order = [
        "stroma",
        "benign",
        "gleason3",
        "gleason4-cribriform",
        "gleason4-fused",
        "gleason5",
        "gleason5-cords",
    ]
    titles = {
        "stroma": "stroma region (label 1)",
        "benign": "benign (2)",
        "gleason3": "Gleason 3",
        "gleason4-cribriform": "Gleason 4 cribriform",
        "gleason4-fused": "Gleason 4 fused",
        "gleason5": "Gleason 5 sheet",
        "gleason5-cords": "Gleason 5 cords",
    }
    sheet = Image.new("RGB", (PANEL * len(order), 2 * PANEL), "white")
    for i, name in enumerate(order):
        cx, cy = examples[name]
        low = _caption(Image.fromarray(_crop(slide, 2, cx, cy)), f"{titles[name]}, 2 um/px")
        high = _crop(slide, 0, cx + edge.get(name, 0.0), cy)
        high = _caption(Image.fromarray(high), "0.5 um/px")
        sheet.paste(low, (PANEL * i, 0))
        sheet.paste(high, (PANEL * i, PANEL))
    _save(sheet, "synthetic_classes.png")

    # Whole slide and its labels.
    thumb = slide.image.levels[coarse].compute()
    palette = np.array([[0, 0, 0], *[c.color for c in slide.palette.classes]], dtype=np.uint8)
    overview = np.concatenate([thumb, palette[labels]], axis=1)
    small = Image.fromarray(overview).resize(
        (overview.shape[1] // 2, overview.shape[0] // 2), Image.Resampling.BOX
    )
    _save(small, "synthetic_overview.png")

    # Stain shift: the same crop at -1, 0, +1.
    cx, cy = examples["gleason3"]
    panels = []
    for shift in (-1.0, 0.0, 1.0):
        shifted = generate_slide(slide.config.replace(stain_shift=shift))
        crop = Image.fromarray(_crop(shifted, 2, cx, cy))
        panels.append(_caption(crop, f"stain_shift {shift:+g}"))
    strip = Image.new("RGB", (PANEL * 3, PANEL), "white")
    for i, p in enumerate(panels):
        strip.paste(p, (PANEL * i, 0))
    _save(strip, "synthetic_stain_shift.png")

    # Local patch (256 px at 2 um/px) without glands whose 2x context shows glands.
    level = working_level(slide.image, 2.0).level  # a level at 2 um/px (downsample 4)
    lab = slide.labels.levels[level].compute()
    gl = slide.gland_level(level).compute()
    h, w = lab.shape
    for y in range(512, h - 768, 64):
        found = None
        for x in range(512, w - 768, 64):
            patch = lab[y : y + 256, x : x + 256]
            uniform = patch[0, 0] >= 3 and (patch == patch[0, 0]).all()
            if not uniform or gl[y : y + 256, x : x + 256].any():
                continue
            if gl[y - 128 : y + 384, x - 128 : x + 384].sum() > 3000:
                found = (x, y)
                break
        if found:
            break
    x, y = found
    view = Image.fromarray(slide.image.read(Box(x - 256, y - 256, 768, 768), level=level))
    draw = ImageDraw.Draw(view)
    draw.rectangle((256, 256, 511, 511), outline=(0, 160, 255), width=4)
    draw.rectangle((128, 128, 639, 639), outline=(255, 160, 0), width=4)
    text = f"label {lab[y, x]}: local 256 px (blue) has no gland, context 512 px (orange) does"
    _caption(view, text)
    _save(view, "synthetic_context.png")


if __name__ == "__main__":
    main()
