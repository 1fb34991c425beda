"""``napari-sgnet demo``: the main job on the bundled sample slide.

With a display, :mod:`napari_sgnet.launch` opens napari instead (see ``_qt/demo.py``):
the sample slide, the SGNet dock and the bundled model, running on the view. This
module is the headless equivalent: it runs the model on a region of the slide into
a label store under an output folder, exports the labels, and says where they are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from napari_sgnet.errors import UserInputError

__all__ = ["demo_output_dir", "register", "run", "sample_slide_path"]

DEFAULT_OUT = "napari-sgnet-demo"


def sample_slide_path() -> Path:
    """The bundled real sample slide."""
    return Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-Small-Region.svs"


def demo_output_dir(args: argparse.Namespace) -> Path:
    """The demo's output folder (``--out``, default ``./napari-sgnet-demo``), created."""
    out = Path(getattr(args, "out", None) or DEFAULT_OUT).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="the main job on the sample slide: napari with the SGNet dock (headless: "
        "predict a region, export, say where the results are)",
        description="The main job on the bundled sample slide. With a display it opens napari "
        "with the slide, the SGNet dock and the bundled model, and runs on the view; without "
        "one (or with --headless) it predicts a region into a label store, exports it as "
        "OME-Zarr, GeoJSON and TIFF, and prints where the results are.",
    )
    p.add_argument("--slide", type=Path, default=None, help="slide to use instead of the sample")
    p.add_argument("--model", type=Path, default=None,
                   help="model checkpoint folder (default: the bundled SGNet model)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder for the label store and exports (default ./{DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--size", type=int, default=1024,
                   help="side of the central region to predict, slide pixels (default 1024)")
    p.add_argument("--whole", action="store_true", help="predict the whole slide")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.set_defaults(func=run)


def command_path(name: str) -> str:
    """How to type console script ``name`` in a new shell: the bare name when it is on
    ``PATH``, else its path beside the running Python (``.venv/bin/napari-sgnet``)."""
    if shutil.which(name):
        return name
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        try:
            return str(candidate.relative_to(Path.cwd()))
        except ValueError:
            return str(candidate)
    return name


def _progress(ev: object) -> None:
    done, total = ev.tiles_done, max(ev.tiles_total, 1)  # type: ignore[attr-defined]
    end = "\n" if ev.finished else ""  # type: ignore[attr-defined]
    print(f"\r  {ev.stage:<9} {done:4d}/{total} tiles  {ev.elapsed_s:6.1f} s",  # type: ignore[attr-defined]
          end=end, file=sys.stderr, flush=True)


def _export_all(store: object, slide: object, store_path: Path) -> dict[str, Path]:
    """Export a store as OME-Zarr, GeoJSON and TIFF beside it (the dock's default names)."""
    from napari_sgnet.app.exports import EXPORTS, default_export_path, run_export

    return {
        EXPORTS[kind].title: run_export(
            kind, store, default_export_path(kind, store_path, slide), overwrite=True
        )
        for kind in ("ome-zarr", "geojson", "tiff")
    }


def run(args: argparse.Namespace) -> int:
    """Headless demo: predict, export, print where everything is. Returns the exit code."""
    from napari_sgnet.app.store_paths import store_path_for
    from napari_sgnet.geometry import Box
    from napari_sgnet.inference.engine import run_inference
    from napari_sgnet.inference.models import describe_model
    from napari_sgnet.inference.request import InferenceRequest, RequestError
    from napari_sgnet.io import open_pyramid
    from napari_sgnet.io.labelstore import LabelStore

    slide_path = Path(args.slide or sample_slide_path())
    out = demo_output_dir(args)
    pyramid = open_pyramid(slide_path)
    print(pyramid.summary())
    try:
        model = describe_model(args.model)
    except UserInputError as exc:  # RequestError, CheckpointError: no such model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = model.info
    print(f"\nmodel: {info.name}, {info.palette.num_classes} classes "
          f"({', '.join(info.palette.names)}), {info.mpp} µm/px, {info.patch_size}-px patches")
    region = None
    if not args.whole:
        side = max(64, int(args.size))
        x = max(0, (pyramid.width - side) // 2)
        y = max(0, (pyramid.height - side) // 2)
        region = Box(x, y, min(side, pyramid.width), min(side, pyramid.height))
    store_path = store_path_for(pyramid, out)  # the store the app opens for the slide
    what = f"region {region.as_tuple()}" if region else "the whole slide"
    print(f"predicting {what} into {store_path}")
    request = InferenceRequest(slide=pyramid, store=store_path, model=model,
                               region=region, device=args.device, order="center")
    t0 = time.perf_counter()
    last = None
    try:
        for ev in run_inference(request):
            _progress(ev)
            last = ev
    except RequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ood = getattr(last, "ood", None)
    if ood is not None:  # the region's out-of-distribution verdict (docs/ood.md)
        print(f"\n{slide_path.name}: {ood.message()}")
    store = LabelStore.open(store_path, mode="r")
    exports = _export_all(store, pyramid, store_path)
    elapsed = time.perf_counter() - t0
    print(f"\ndone in {elapsed:.1f} s. Results in {out}:")
    print(f"  label store (predictions, confidence, edits): {store_path}")
    for kind, path in exports.items():
        print(f"  {kind:<8} {path}")
    print("\nOpen them in napari (the slide with the labels over it):")
    print(f"  {command_path('napari')} {store_path}")
    print("or review and correct them in the app (needs a display):")
    print(f"  {command_path('napari-sgnet')} demo --out {out}"
          + (f" --model {args.model}" if args.model else ""))
    return 0
