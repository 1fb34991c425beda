"""``napari-sgnet evaluate``: score models against ground truth under one tiling, side by side.

Each model predicts the slide's working level (the level closest to its µm/px) through the
inference engine into a temporary label store (``overlap`` as given, no glass skipping, so the
model alone is scored), or with ``--simple`` (or a ``--tile-size`` other than the model's patch
size) through :func:`napari_sgnet.training.evaluate.predict_level`, which is the engine's
protocol with overlap 0. Scores: per-class IoU, mIoU, pixel accuracy, seam consistency on the
tile grid (see :mod:`napari_sgnet.metrics`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    p.add_argument("--labels", type=Path, help="ground-truth label-id image for SLIDE")
    p.add_argument(
        "--synthetic-seed",
        type=int,
        action="append",
        default=[],
        help="evaluate on a generated slide with this seed (repeatable: pooled)",
    )
    p.add_argument("--size", type=int, default=16384, help="generated slide side (level-0 px)")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint folder, or a bundled name (sgnet, baseline); repeatable",
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
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    p.add_argument(
        "--record",
        action="store_true",
        help="store the scores in each model's config.json (metrics['test'])",
    )
    p.set_defaults(func=run)


def _model_dir(spec: str) -> Path:
    from napari_sgnet.registry import find_model

    path = Path(spec)
    if path.exists():
        return path
    # a bundled or fine-tuned model's name; ModelNotFoundError lists the known models
    return find_model(spec).path


def _slides(args: argparse.Namespace) -> list[Any]:
    from napari_sgnet.training.sources import file_source, synthetic_source

    sources = [synthetic_source(s, args.size) for s in args.synthetic_seed]
    if args.slide is not None:
        if args.labels is None:
            raise OptionError("SLIDE needs --labels (its ground truth)")
        sources.append(file_source(args.slide, args.labels))
    if not sources:
        raise OptionError("nothing to evaluate: give SLIDE --labels GT or --synthetic-seed N")
    return sources


def _predict_engine(
    source: Any, model_dir: Path, args: argparse.Namespace, store_path: Path
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
    )
    store = LabelStore.open(store_path, mode="r")
    return store.read_labels(Box(0, 0, store.width, store.height))


def evaluate_models(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Scores of every ``--model`` on the selected slides (pooled), keyed by model label."""
    import numpy as np
    import torch

    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import load_checkpoint
    from napari_sgnet.model.runtime import resolve_device
    from napari_sgnet.training.dataset import working_views
    from napari_sgnet.training.evaluate import EvalResult, predict_level, score_prediction

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = _slides(args)
    device = resolve_device(args.device)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sgnet-eval-") as tmp:
        for index, spec in enumerate(args.model):
            model_dir = _model_dir(spec)
            config = ModelConfig.load(model_dir / "config.json")
            tile = args.tile_size or config.patch_size
            simple = args.simple or tile != config.patch_size
            step = tile if simple else config.patch_size - 2 * args.overlap
            model = load_checkpoint(model_dir, device=device) if simple else None
            total: EvalResult | None = None
            for src in sources:
                img, lab = working_views(src.image, src.labels, config.mpp)
                if simple:
                    image, level = img.as_pyramid()
                    with torch.inference_mode():
                        pred = predict_level(
                            model, config, image, level, tile, args.batch_size, device
                        )
                else:
                    store_path = Path(tmp) / f"{index}-{src.name}.zarr"
                    pred = _predict_engine(src, model_dir, args, store_path)
                truth = np.asarray(lab.array)
                if pred.shape != truth.shape:
                    raise UserInputError(
                        f"{src.name}: prediction {pred.shape} and ground truth "
                        f"{truth.shape} differ in size"
                    )
                scored = score_prediction(pred, truth, config, step)
                total = scored if total is None else total.merge(scored)
            label = f"{config.name} ({'SGNet' if config.use_context else 'baseline'})"
            while label in results:
                label += "'"
            assert total is not None
            results[label] = {
                **total.to_dict(),
                "model": str(model_dir),
                "tile": step,
                "mpp": config.mpp,
                "tiler": "simple" if simple else f"engine (overlap {args.overlap})",
                "slides": [s.name for s in sources],
            }
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Models as columns; per-class IoU, mIoU, accuracy and seam figures as rows."""
    names = list(results)
    first = next(iter(results.values()))
    rows: list[tuple[str, list[str]]] = []

    def fmt(v: Any, digits: int = 4) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    for cls in first["iou"]:
        rows.append((f"IoU {cls}", [fmt(results[n]["iou"].get(cls)) for n in names]))
    rows.append(("mIoU", [fmt(results[n]["miou"]) for n in names]))
    rows.append(("pixel accuracy", [fmt(results[n]["pixel_accuracy"]) for n in names]))
    for key, title in (
        ("border_rate", "seam: border disagreement"),
        ("interior_rate", "seam: interior disagreement"),
        ("ratio", "seam: ratio (1 = no seams)"),
    ):
        rows.append((title, [fmt(results[n]["seams"][key]) for n in names]))
    rows.append(("tile / tiler", [f"{results[n]['tile']} / {results[n]['tiler']}" for n in names]))
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(n), *(len(r[1][i]) for r in rows)) for i, n in enumerate(names)]
    lines = ["  ".join([" " * w0, *(n.rjust(w) for n, w in zip(names, widths, strict=True))])]
    lines.append("-" * len(lines[0]))
    for title, values in rows:
        cells = (v.rjust(w) for v, w in zip(values, widths, strict=True))
        lines.append("  ".join([title.ljust(w0), *cells]))
    return "\n".join(lines)


def _record(model_dir: Path, scores: dict[str, Any]) -> None:
    """Write the scores into ``model_dir/config.json`` as ``metrics["test"]`` (atomically)."""
    import os

    from napari_sgnet.config import ModelConfig

    path = model_dir / "config.json"
    config = ModelConfig.load(path)
    test = {k: v for k, v in scores.items() if k != "model"}
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
            _record(Path(scores["model"]), scores)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nscores written to {args.json}")
    return 0
