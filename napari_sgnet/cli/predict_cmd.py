"""``napari-sgnet predict SLIDE... --out DIR``: segment slides into label stores."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from napari_sgnet.app.store_paths import unique_store_path
from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout
from napari_sgnet.cli.main import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK
from napari_sgnet.errors import report_failure

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H integers, got {text!r}") from exc
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"region width and height must be positive: {text!r}")
    return x, y, w, h


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="segment slides with SGNet into label stores (OME-Zarr labels)",
        description=(
            "Run a model over whole slides (or a region) and write one label store per "
            "slide into --out. Exit codes: 0 ok, 2 bad input, 130 cancelled, 1 other error."
        ),
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or OME-Zarr folders")
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint folder (model.safetensors or model.onnx, + config.json) or model "
        "name; default: bundled",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder for the label stores: <slide name without extensions>.sgnet.zarr, "
        "the store the app opens for that slide (<name>-<fingerprint>.sgnet.zarr when a "
        "different slide of the same name already has that store)",
    )
    p.add_argument(
        "--region",
        type=_region,
        default=None,
        help="X,Y,W,H in slide level-0 pixels (default: whole slide)",
    )
    p.add_argument(
        "--regions",
        type=Path,
        default=None,
        metavar="FILE.geojson",
        help="predict only the tiles these polygons cover (QuPath GeoJSON, slide level-0 "
        "pixels; classes ignored; each covered tile is predicted whole); one SLIDE only",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    p.add_argument(
        "--overlap",
        type=int,
        default=0,
        help="pixels cropped from each side of each prediction (default 0)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also keep the per-class probabilities (uint8, softmax x 255) in the store "
        "(a new store; export them with `napari-sgnet export --format probabilities`)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads of the forward pass (default: torch's; distributed workers "
        "use the same count, so their bytes match a single-process run)",
    )
    p.add_argument("--mpp", type=float, default=None, help="override the slides' level-0 µm/px")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run on a local dask cluster with N worker processes",
    )
    where.add_argument(
        "--scheduler", default=None, help="run on the dask.distributed scheduler at this address"
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--restart",
        dest="resume",
        action="store_false",
        help="recompute every tile of an existing store (edits are kept); by default a run "
        "resumes: finished tiles are skipped and a store made with another model is re-predicted",
    )
    again.add_argument(
        "--resume",
        dest="explicit_resume",
        action="store_true",
        help="skip finished tiles (the default) and also re-predict a store made with another "
        "model (edits are kept), which is otherwise refused",
    )
    p.set_defaults(resume=True, explicit_resume=False)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing stores (including edits) and start afresh; the old store is "
        "moved aside and deleted only after the new run's first commit (put back if the "
        "run fails before)",
    )
    p.add_argument(
        "--no-skip-glass",
        dest="skip_glass",
        action="store_false",
        help="run the model on glass too",
    )
    add_json_option(p, "the summaries")
    p.add_argument("--no-progress", "--quiet", "-q", dest="progress", action="store_false",
                   help="no progress bar")
    p.set_defaults(func=run)


def _ood(slide: Path, event: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The run's out-of-distribution verdict; the per-slide check when the run judged no tile
    (all tiles done before, or a distributed run), recorded in the store's request record."""
    result = event.ood
    if result is not None and result.tiles > 0:
        return dict(result.to_dict())
    from napari_sgnet.inference.ood_check import check_slide
    from napari_sgnet.inference.prepare import open_slide
    from napari_sgnet.io.labelstore import LabelStore

    result = check_slide(
        open_slide(slide, mpp=args.mpp), args.model, device=args.device, precision=args.precision
    )
    store = LabelStore.open(event.store)
    if store.requests:
        store.update_request(int(store.requests[-1]["number"]), ood=result.to_dict())
    return dict(result.to_dict())


def _summary(slide: Path, event: Any, ood: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "slide": str(slide),
        "store": str(event.store),
        "status": event.stage,
        "tiles": event.tiles_done + event.tiles_cached,
        "predicted": event.tiles_predicted,
        "glass": event.tiles_glass,
        "cached": event.tiles_cached,
        "seconds": round(event.elapsed_s, 2),
        "mpix_per_s": round(event.mpix_per_s, 3),
        "tissue_fraction": None
        if event.tissue_fraction is None
        else round(event.tissue_fraction, 4),
        "level": event.level,
        "resolution": _resolution(event.store),
        "ood": ood,
    }


def _resolution(store: Path) -> dict[str, Any] | None:
    """The store's working-resolution record (µm/px, slide level read, resampling factor)."""
    from napari_sgnet.errors import StoreError
    from napari_sgnet.io.labelstore import LabelStore

    try:
        return LabelStore.open(store, mode="r").resolution
    except StoreError:
        return None


def _print_summary(s: dict[str, Any]) -> None:
    tissue = "n/a" if s["tissue_fraction"] is None else f"{100 * s['tissue_fraction']:.1f}%"
    print(
        f"{s['slide']}: {s['status']} — {s['predicted']} tiles predicted, {s['glass']} glass, "
        f"{s['cached']} already done; {s['seconds']:.1f} s, {s['mpix_per_s']:.2f} Mpix/s; "
        f"tissue {tissue}; store {s['store']}"
    )
    if s.get("resolution"):
        from napari_sgnet.io.working import describe_resolution

        print(f"{s['slide']}: working resolution {describe_resolution(s['resolution'])}")
    if s.get("ood") is not None:
        from napari_sgnet.inference.ood import OODResult

        print(f"{s['slide']}: {OODResult.from_dict(s['ood']).message()}")


def _warn_mpp_override(slide: Path, args: argparse.Namespace) -> None:
    """Print a ``warning:`` line when ``--mpp`` is more than 2x from the file's own µm/px."""
    if args.mpp is None:
        return
    from napari_sgnet.inference.prepare import open_slide
    from napari_sgnet.io.working import mpp_override_warning

    warning = mpp_override_warning(open_slide(slide, mpp=args.mpp))
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)


def _run_one(slide: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from napari_sgnet.inference import InferenceRequest, run_distributed, run_inference

    _warn_mpp_override(slide, args)

    from napari_sgnet.inference.prepare import open_slide

    request = InferenceRequest(
        slide=slide,
        # <stem>.sgnet.zarr, or <stem>-<fp8>.sgnet.zarr when another slide's store has the name
        store=unique_store_path(open_slide(slide, mpp=args.mpp), args.out),
        model=args.model,
        region=args.region,
        regions=args.regions,
        device=args.device,
        batch_size=args.batch_size,
        overlap=args.overlap,
        precision=args.precision,
        skip_glass=args.skip_glass,
        resume=args.resume,
        repredict_other_model=args.explicit_resume,
        overwrite=args.overwrite,
        mpp=args.mpp,
        threads=args.threads,
        probabilities=args.probabilities,
    )
    if args.workers or args.scheduler:
        events = run_distributed(request, n_workers=args.workers, scheduler_address=args.scheduler)
    else:
        events = run_inference(request)
    bar = None
    last = None
    try:
        for last in events:
            if bar is None and args.progress:
                bar = tqdm(
                    total=last.tiles_total,
                    desc=slide.name,
                    unit="tile",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            if bar is not None:
                bar.n = last.tiles_done
                bar.set_postfix_str(f"{last.mpix_per_s:.2f} Mpix/s", refresh=False)
                bar.refresh()
    finally:
        events.close()  # on Ctrl-C: commit what is written, record the run as cancelled
        if bar is not None:
            bar.close()
    assert last is not None
    return _summary(slide, last, _ood(slide, last, args) if last.stage == "completed" else None)


def run(args: argparse.Namespace) -> int:
    """Predict every slide; returns the CLI exit code (the worst over all slides)."""
    code = EXIT_OK
    summaries = []
    if args.regions is not None and (len(args.slides) != 1 or args.region is not None):
        print(
            "error: --regions belongs to one slide: give exactly one SLIDE, and no --region",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    for slide in (Path(s) for s in args.slides):
        try:
            summary = _run_one(slide, args)
        except KeyboardInterrupt:
            print(f"{slide}: cancelled; run the same command again to continue", file=sys.stderr)
            return EXIT_CANCELLED
        except Exception as exc:  # say what (traceback logged unless bad input), go on
            failure = report_failure(exc, log, f"predict {slide}")
            if failure.is_user_error:  # slide, store, request, config, palette, checkpoint
                print(f"error: {failure.message}", file=sys.stderr)
                code = max(code, EXIT_BAD_INPUT)
            else:
                print(f"error: {slide}: {failure.message}", file=sys.stderr)
                code = EXIT_ERROR if code == EXIT_OK else code
            continue
        summaries.append(summary)
        if not json_on_stdout(args):
            _print_summary(summary)
    emit_json(summaries, args.json)
    return code
