"""``napari-sgnet evaluate``: score models against ground truth under one tiling, side by side.

Each model predicts the slide's working level (the level closest to its µm/px) through the
inference engine into a temporary label store (``overlap`` as given, no glass skipping, so the
model alone is scored), or with ``--simple`` (or a ``--tile-size`` other than the model's patch
size) through :func:`napari_sgnet.training.evaluate.predict_level`, which is the engine's
protocol with overlap 0. Ablations (``--ablations``, :mod:`napari_sgnet.inference.ablation`)
always run through ``predict_level``. Every figure is computed per slide and reported as mean
± sd over slides and pooled (see :mod:`napari_sgnet.training.evaluate`): tissue-only and
all-pixel mIoU, pixel accuracy, boundary F, per-class IoU, confusion matrix, and the seam
figure beside the truth's and the tile-constant oracle's. Two trivial predictors are scored
as rows: "majority class" and the "tile-constant oracle" (which uses the truth).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json
from napari_sgnet.cli.evaluate_report import format_table
from napari_sgnet.errors import OptionError, UserInputError

__all__ = ["format_table", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="score models on a slide with ground truth (IoU, mIoU, seams)",
        description="Score one or more models on a slide with ground-truth labels under the same "
        "tiling and print them side by side.",
    )
    p.add_argument("slide", nargs="?", type=Path, help="slide file (or use --synthetic-seed)")
    p.add_argument(
        "--labels",
        type=Path,
        help="ground truth for SLIDE: a label-id image, or a QuPath .geojson of classified "
        "polygons (class names of the first --model's palette; outside them: no label)",
    )
    p.add_argument(
        "--synthetic-seed",
        type=int,
        action="append",
        default=[],
        help="evaluate on a generated slide with this seed (repeatable: pooled)",
    )
    p.add_argument("--size", type=int, default=16384, help="generated slide side (level-0 px)")
    p.add_argument(
        "--synthetic-version",
        type=int,
        choices=(1, 2),
        default=2,
        help="synthetic generator version: 1 = v1 blobs (glass labelled stroma), 2 = needle "
        "cores, glass label 0 (default 2)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="checkpoint folder, or a bundled name (sgnet, baseline); repeatable "
        "(default: the bundled sgnet model)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="tile side at the working level (default: each model's patch size)",
    )
    p.add_argument("--overlap", type=int, default=0, help="engine overlap (pixels per side)")
    p.add_argument(
        "--simple",
        action="store_true",
        help="use the built-in non-overlapping tiler instead of the inference engine",
    )
    p.add_argument(
        "--ablations",
        default=None,
        help="also score context ablations of each SGNet model: a comma list of local-blank, "
        "context-blank, context-shuffle, aux-only, or 'all'",
    )
    p.add_argument(
        "--boundary-tolerance",
        type=float,
        default=16.0,
        metavar="UM",
        help="boundary F match tolerance in µm (default 16 = 4 px at 4 µm/px)",
    )
    p.add_argument("--no-progress", "--quiet", "-q", dest="progress", action="store_false",
                   help="no progress bar")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_json_option(p, "the scores")
    p.add_argument(
        "--record",
        action="store_true",
        help="store the scores in each model's config.json (metrics['test'])",
    )
    p.set_defaults(func=run)


#: The model ``evaluate`` scores when no ``--model`` is given (the bundled SGNet).
DEFAULT_MODEL = "sgnet"


def _model_dir(spec: str) -> Path:
    from napari_sgnet.registry import find_model

    path = Path(spec)
    if path.exists():
        return path
    # a bundled or fine-tuned model's name; ModelNotFoundError lists the known models
    return find_model(spec).path


def _slides(args: argparse.Namespace) -> list[Any]:
    from napari_sgnet.training.sources import file_source, synthetic_source

    version = int(getattr(args, "synthetic_version", 2))
    sources = [synthetic_source(s, args.size, version=version) for s in args.synthetic_seed]
    if args.slide is not None:
        if args.labels is None:
            raise OptionError("SLIDE needs --labels (its ground truth)")
        palette = None
        if args.labels.suffix.lower() == ".geojson":
            from napari_sgnet.config import ModelConfig

            palette = ModelConfig.load(_model_dir(args.model[0]) / "config.json").palette
        sources.append(file_source(args.slide, args.labels, palette=palette))
    if not sources:
        raise OptionError("nothing to evaluate: give SLIDE --labels GT or --synthetic-seed N")
    return sources


def _predict_engine(
    source: Any,
    model_dir: Path,
    args: argparse.Namespace,
    store_path: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    from napari_sgnet.geometry import Box
    from napari_sgnet.inference.engine import predict_slide
    from napari_sgnet.io.labelstore import LabelStore

    predict_slide(
        source.image,
        store_path,
        str(model_dir),
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        skip_glass=False,
        overwrite=True,
        progress=None if progress is None else lambda e: progress(e.tiles_done, e.tiles_total),
    )
    store = LabelStore.open(store_path, mode="r")
    return store.read_labels(Box(0, 0, store.width, store.height))


class _Progress:
    """One progress bar per (row, slide) on stderr: tiles done / total and elapsed."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
        """``(update(done, total), close())`` of a new bar titled ``desc``."""
        if not self.enabled:
            return (lambda done, total: None), (lambda: None)
        from tqdm import tqdm

        state: dict[str, Any] = {"bar": None}
        start = time.monotonic()

        def update(done: int, total: int) -> None:
            if state["bar"] is None:
                state["bar"] = tqdm(
                    total=total, desc=desc, unit="tile", file=sys.stderr, dynamic_ncols=True
                )
            state["bar"].n = done
            state["bar"].refresh()

        def close() -> None:
            if state["bar"] is not None:
                state["bar"].close()
            else:
                print(f"{desc}: {time.monotonic() - start:.1f} s", file=sys.stderr)

        return update, close

    def step(self, text: str) -> None:
        """One ``evaluate: ...`` line on stderr for a stage that draws no bar."""
        if self.enabled:
            print(f"evaluate: {text}", file=sys.stderr, flush=True)


def _scored_row(
    scores: list[Any], refs: list[Any], info: dict[str, Any], tolerance: tuple[float, float]
) -> dict[str, Any]:
    """A result row: the summary plus the old pooled keys (``miou`` ... ``seams``)."""
    from napari_sgnet.training.scoring import summarise

    summary = summarise(scores, refs)
    pooled_all = summary["pooled"]["all_pixels"]
    return {
        # the figures earlier versions wrote (pooled all-pixel; seams over tissue)
        "miou": pooled_all["miou"],
        "pixel_accuracy": pooled_all["pixel_accuracy"],
        "iou": pooled_all["iou"],
        "pixels": pooled_all["pixels"],
        "seams": summary["pooled"]["seams"],
        **info,
        "boundary_tolerance_um": tolerance[0],
        "boundary_tolerance_px": tolerance[1],
        **summary,
    }


def evaluate_models(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Scores of every ``--model`` (and ablation, and trivial predictor), keyed by row label.

    Each row holds the per-slide figures, their mean and sd over slides and the pooled
    figures (:func:`napari_sgnet.training.evaluate.summarise`), with ``kind`` one of
    ``model``, ``ablation``, ``trivial`` or ``oracle``.
    """
    import numpy as np
    import torch

    from napari_sgnet.config import ModelConfig
    from napari_sgnet.inference.ablation import AblatedModel, ablation_applies, parse_ablations
    from napari_sgnet.model import load_checkpoint
    from napari_sgnet.model.runtime import resolve_device
    from napari_sgnet.training.evaluate import predict_level
    from napari_sgnet.training.scoring import score_slide, seam_reference, slide_truth

    try:
        ablations = parse_ablations(getattr(args, "ablations", None))
    except ValueError as exc:
        raise OptionError(str(exc)) from exc
    if ablations and args.overlap:
        raise OptionError("--ablations run the non-overlapping tiling: use --overlap 0")
    if "context-shuffle" in ablations and args.batch_size < 2:
        raise OptionError("context-shuffle needs --batch-size 2 or more (a derangement per batch)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.model:
        args.model = [DEFAULT_MODEL]
    progress = _Progress(getattr(args, "progress", True))
    tolerance_um = float(getattr(args, "boundary_tolerance", 16.0))
    sources = _slides(args)
    device = resolve_device(args.device)
    results: dict[str, dict[str, Any]] = {}
    # (mpp, step) -> per slide (truth, tissue), for the trivial rows
    grids: dict[tuple[float | None, int], list[tuple[np.ndarray, np.ndarray, float]]] = {}
    truths: dict[tuple[float | None, int], tuple[Any, np.ndarray, np.ndarray]] = {}
    references: dict[tuple[float | None, int, int], Any] = {}
    with tempfile.TemporaryDirectory(prefix="sgnet-eval-") as tmp:
        for index, spec in enumerate(args.model):
            model_dir = _model_dir(spec)
            config = ModelConfig.load(model_dir / "config.json")
            tile = args.tile_size or config.patch_size
            simple = args.simple or tile != config.patch_size
            step = tile if simple else config.patch_size - 2 * args.overlap
            model = load_checkpoint(model_dir, device=device) if simple or ablations else None
            label = f"{config.name} ({_short_kind(config)})"
            while label in results:
                label += "'"
            variants: list[tuple[str, str | None, Any]] = [(label, None, None)]
            skipped: dict[str, list[str]] = {}
            for name in ablations:
                why = ablation_applies(model, name)
                if why is None:
                    variants.append((f"{label} [{name}]", name, AblatedModel(model, name)))
                else:
                    skipped.setdefault(why, []).append(name)
            notes = [f"{', '.join(names)} skipped: {why}" for why, names in skipped.items()]
            rows: dict[str, tuple[list[Any], list[Any]]] = {v[0]: ([], []) for v in variants}
            tolerance_px = math.nan
            for i, src in enumerate(sources):
                # the truth of a slide at a resolution, and its seam reference on a grid, are
                # the same for every model that shares them: computed once
                if (config.mpp, i) not in truths:
                    at = "" if config.mpp is None else f" at {config.mpp:g} µm/px"
                    progress.step(f"slide {i + 1}/{len(sources)} {src.name}: reading the truth{at}")
                    truths[config.mpp, i] = slide_truth(src, config.mpp)
                img, truth, tissue = truths[config.mpp, i]
                mpp = img.mpp if img.mpp is not None else config.mpp
                tolerance_px = tolerance_um / mpp if mpp else tolerance_um / 4.0
                if (config.mpp, step, i) not in references:
                    references[config.mpp, step, i] = seam_reference(truth, tissue, step)
                ref = references[config.mpp, step, i]
                grids.setdefault((config.mpp, step), [])
                if len(grids[(config.mpp, step)]) < len(sources):
                    grids[(config.mpp, step)].append((truth, tissue, tolerance_px))
                for row, ablation, wrapped in variants:
                    update, close = progress.bar(f"{row} / {src.name}")
                    try:
                        if ablation is None and not simple:
                            store_path = Path(tmp) / f"{index}-{src.name}.zarr"
                            pred = _predict_engine(src, model_dir, args, store_path, update)
                        else:
                            image, level = img.as_pyramid()
                            with torch.inference_mode():
                                pred = predict_level(
                                    wrapped if wrapped is not None else model,
                                    config,
                                    image,
                                    level,
                                    tile,
                                    args.batch_size,
                                    device,
                                    progress=update,
                                )
                    finally:
                        close()
                    if pred.shape != truth.shape:
                        raise UserInputError(
                            f"{src.name}: prediction {pred.shape} and ground truth "
                            f"{truth.shape} differ in size"
                        )
                    score = score_slide(src.name, pred, truth, tissue, config, step, tolerance_px)
                    rows[row][0].append(score)
                    rows[row][1].append(ref)
            info = {
                "model": str(model_dir),
                "tile": step,
                "mpp": config.mpp,
                "tiler": "simple" if simple else f"engine (overlap {args.overlap})",
                "slides": [s.name for s in sources],
            }
            for row, ablation, _ in variants:
                results[row] = {
                    "kind": "model" if ablation is None else "ablation",
                    "ablation": ablation,
                    **_scored_row(*rows[row], info, (tolerance_um, tolerance_px)),
                }
            if notes:
                results[label]["ablation_notes"] = notes
        results.update(_trivial_rows(grids, sources, args, tolerance_um))
    return results


def _trivial_rows(
    grids: dict[tuple[float | None, int], list[Any]],
    sources: list[Any],
    args: argparse.Namespace,
    tolerance_um: float,
) -> dict[str, dict[str, Any]]:
    """The "majority class" and "tile-constant oracle" rows of every (µm/px, tile) grid."""
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.metrics import tile_constant
    from napari_sgnet.training.scoring import (
        majority_label,
        majority_prediction,
        score_slide,
        seam_reference,
    )

    out: dict[str, dict[str, Any]] = {}
    config = ModelConfig.load(_model_dir(args.model[0]) / "config.json")
    for (mpp, step), slides in grids.items():
        suffix = "" if len(grids) == 1 else f" ({mpp} µm/px, tile {step})"
        majority = majority_label([t for t, _, _ in slides], [m for _, m, _ in slides])
        rows: dict[str, tuple[str, list[Any], list[Any]]] = {
            f"majority class{suffix}": ("trivial", [], []),
            f"tile-constant oracle [oracle]{suffix}": ("oracle", [], []),
        }
        for src, (truth, tissue, tol) in zip(sources, slides, strict=True):
            ref = seam_reference(truth, tissue, step)
            preds = (
                majority_prediction(tissue, majority),
                tile_constant(truth, step, tissue & (truth > 0)),
            )
            for (_, scores, refs), pred in zip(rows.values(), preds, strict=True):
                scores.append(score_slide(src.name, pred, truth, tissue, config, step, tol))
                refs.append(ref)
        info = {
            "model": None,
            "tile": step,
            "mpp": mpp,
            "tiler": "none",
            "slides": [s.name for s in sources],
        }
        for row, (kind, scores, refs) in rows.items():
            tol_px = slides[0][2] if slides else math.nan
            out[row] = {
                "kind": kind,
                "ablation": None,
                **_scored_row(scores, refs, info, (tolerance_um, tol_px)),
            }
        out[f"majority class{suffix}"]["majority_label"] = majority
    return out


def _record(model_dir: Path, scores: dict[str, Any]) -> None:
    """Write the scores into ``model_dir/config.json`` as ``metrics["test"]`` (atomically)."""
    import os

    from napari_sgnet.config import ModelConfig

    path = model_dir / "config.json"
    config = ModelConfig.load(path)
    test = {k: v for k, v in scores.items() if k not in ("model", "kind", "ablation")}
    updated = config.replace(metrics={**config.metrics, "test": test})
    tmp = path.with_name(".config.json.tmp")
    updated.save(tmp)
    os.replace(tmp, path)
    print(f"recorded test scores in {path}")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table (and write JSON when asked)."""
    try:
        results = evaluate_models(args)
    except UserInputError as exc:  # config, checkpoint, slide, options
        print(f"error: {exc}", file=sys.stderr)
        return 2
    slides = ", ".join(next(iter(results.values()))["slides"])
    print(f"slides: {slides}\n")
    print(format_table(results))
    if args.record:
        for scores in results.values():
            if scores["kind"] == "model":
                _record(Path(scores["model"]), scores)
    emit_json(results, args.json)
    return 0


def _short_kind(config: Any) -> str:
    """``SGNet``, ``baseline`` (local patch) or ``same-FOV baseline`` for table rows."""
    if config.use_context:
        return "SGNet"
    return "same-FOV baseline" if config.needs_context else "baseline"
