"""``napari-sgnet synth``: write a synthetic Gleason-like slide and its labels to disk."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from napari_sgnet.errors import StoreError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic Gleason-like slide (OME-TIFF) and its labels (OME-Zarr)",
        description=(
            "Generate a synthetic H&E-like prostate slide with region-level Gleason labels. "
            "Writes OUT_DIR/NAME.ome.tif (JPEG-tiled pyramid), OUT_DIR/NAME.labels.ome.zarr "
            "(NGFF labels with the Gleason palette) and OUT_DIR/NAME.synth.json (the settings). "
            "Same settings, same pixels."
        ),
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--size", type=int, default=16384, help="level-0 width in pixels [16384]")
    p.add_argument("--height", type=int, default=None, help="level-0 height [= size]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--mpp", type=float, default=0.5, help="level-0 µm per pixel [0.5]")
    p.add_argument(
        "--stain-shift",
        type=float,
        default=0.0,
        help="stain/scanner domain shift, 0 = reference, 1 = strong [0]",
    )
    p.add_argument("--noise", type=float, default=3.0, help="pixel noise sigma, grey levels [3]")
    p.add_argument("--blur", type=float, default=0.0, help="blur sigma in level-0 pixels [0]")
    p.add_argument("--tissue-fraction", type=float, default=0.6, help="tissue cover [0.6]")
    p.add_argument(
        "--region-size", type=float, default=2000.0, help="typical graded-region size in µm [2000]"
    )
    p.add_argument(
        "--version",
        type=int,
        choices=(1, 2),
        default=2,
        dest="version",
        help="generator version: 1 = v1 tissue blobs, glass labelled 1; 2 = needle cores on "
        "glass (label 0), outlined gland groups, mimics and distractors [2]",
    )
    p.add_argument("--name", default=None, help="file name stem [synthetic-SIZE-sSEED]")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality [90]")
    p.add_argument(
        "--zarr-version",
        choices=("0.4", "0.5"),
        default="0.5",
        help="NGFF version of the labels [0.5]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate and write the slide; returns the exit code."""
    from tqdm import tqdm

    from napari_sgnet.io.writers import write_ome_tiff, write_ome_zarr
    from napari_sgnet.synthetic import SynthConfig, SynthConfigError, generate_slide

    name = args.name or _default_name(args)
    try:
        config = SynthConfig(
            width=args.size,
            height=args.height,
            seed=args.seed,
            mpp=args.mpp,
            stain_shift=args.stain_shift,
            noise=args.noise,
            blur=args.blur,
            tissue_fraction=args.tissue_fraction,
            region_size_um=args.region_size,
            name=name,
            version=args.version,
        )
    except SynthConfigError as exc:
        raise StoreError(args.out_dir, f"invalid settings: {exc}") from exc
    out_dir: Path = args.out_dir
    image_path = out_dir / f"{name}.ome.tif"
    labels_path = out_dir / f"{name}.labels.ome.zarr"
    settings_path = out_dir / f"{name}.synth.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(out_dir, "is not a folder")
    if not args.overwrite:
        for path in (image_path, labels_path, settings_path):
            if path.exists():
                raise StoreError(path, "already exists; pass --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise StoreError(out_dir, f"cannot create the output folder ({why})") from exc

    slide = generate_slide(config)
    total = 2 * sum(int(a.shape[0]) * int(a.shape[1]) for a in slide.image.levels)
    start = time.perf_counter()
    with tqdm(total=total, unit="px", unit_scale=True, desc=name, dynamic_ncols=True) as bar:
        write_ome_tiff(
            slide.image,
            image_path,
            mpp=config.mpp,
            compression="jpeg",
            quality=args.quality,
            tile=config.chunk_size,
            overwrite=args.overwrite,
            progress=bar.update,
        )
        label_group = write_ome_zarr(
            slide.labels,
            labels_path,
            mpp=config.mpp,
            version=args.zarr_version,
            labels=True,
            name=slide.palette.name,
            palette=slide.palette,
            chunks=config.chunk_size,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    settings_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    elapsed = time.perf_counter() - start

    mm = config.width * config.mpp / 1000.0, int(config.rows) * config.mpp / 1000.0
    print(
        f"wrote {image_path}  ({config.width} x {config.height} px, {mm[0]:.1f} x {mm[1]:.1f} mm, "
        f"{slide.image.n_levels} levels, {_size(image_path)})"
    )
    names = ", ".join(slide.palette.names)
    glass = "0 glass, " if config.version == 2 else ""
    print(f"wrote {label_group}  (labels {glass}1-5: {names})")
    print(f"wrote {settings_path}")
    print(f"in {elapsed:.1f} s")
    print("open it:")
    print(f"  napari {image_path}")
    print(f"  labels: {label_group} (NGFF image-label; ome-zarr / napari-ome-zarr)")
    print("  Python, lazily: generate_slide(SynthConfig.from_dict(json.load(open(")
    print(f"      {str(settings_path)!r}))))   # from napari_sgnet.synthetic")
    return 0


def _default_name(args: argparse.Namespace) -> str:
    name = f"synthetic-{args.size}-s{args.seed}"
    if getattr(args, "version", 2) != 2:
        name += f"-v{args.version}"
    if args.stain_shift:
        name += f"-shift{args.stain_shift:g}"
    return name


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"
