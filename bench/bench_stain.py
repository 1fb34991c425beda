"""Stain and noise robustness: mIoU of models on stain-shifted and noisy synthetic slides.

Each model predicts the working level of held-out generated slides (seeds 520-523 by default,
generator v2; the v1 sweeps used 400-403: no test, benchmark or training run of the project uses
them) through the evaluation tile loop
(:func:`napari_sgnet.training.evaluate.predict_level`: the inference engine's protocol with
overlap 0, the one model runtime), for ``SynthConfig(stain_shift=s)`` and ``SynthConfig(noise=n)``
(every other setting the training default: reference stain, noise 3). Scores pooled over the
seeds: mIoU over all labelled pixels, and "tissue mIoU" over tissue pixels only (glass is
labelled stroma/background in the synthetic ground truth; the tissue mask is taken from the
reference-stain, noise-free render of the same seed, so it does not move with the shift).
Prints JSON, then a table.

    python bench/bench_stain.py                                   # bundled sgnet + baseline
    python bench/bench_stain.py --model sgnet --model runs/stain/sgnet/best --size 8192
    python bench/bench_stain.py --quick                           # 1 seed, 4096 px, 3 shifts
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sgnet.config import ModelConfig
from napari_sgnet.metrics import ConfusionMatrix
from napari_sgnet.model import load_checkpoint
from napari_sgnet.registry import find_model
from napari_sgnet.training.dataset import tissue_pixels, working_views
from napari_sgnet.training.evaluate import predict_level
from napari_sgnet.training.sources import synthetic_source

STAIN_SHIFTS = (-1.0, -0.75, -0.5, 0.0, 0.5, 1.0, 2.0)
NOISES = (3.0, 8.0, 15.0, 25.0)
SEEDS = (520, 521, 522, 523)


def _model_dir(spec: str) -> Path:
    path = Path(spec)
    return path if path.exists() else find_model(spec).path


def _conditions(shifts: tuple[float, ...], noises: tuple[float, ...]) -> list[dict[str, float]]:
    out = [{"stain_shift": s, "noise": 3.0} for s in shifts]
    out += [{"stain_shift": 0.0, "noise": n} for n in noises if n != 3.0 or 0.0 not in shifts]
    return out


def _truth(seed: int, size: int, mpp: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth at the working level and its tissue-only copy (glass -> 0, ignored)."""
    ref = synthetic_source(seed, size, noise=0.0)
    image, labels = working_views(ref.image, ref.labels, mpp)
    truth = np.asarray(labels.array)
    tissue = tissue_pixels(np.asarray(image.array))
    return truth, np.where(tissue, truth, 0).astype(truth.dtype)


def sweep(
    models: list[str],
    seeds: tuple[int, ...],
    size: int,
    shifts: tuple[float, ...],
    noises: tuple[float, ...],
    batch_size: int = 8,
    log: Any = None,
) -> dict[str, Any]:
    """Scores of every model under every condition, pooled over ``seeds``."""
    loaded = []
    for spec in models:
        path = _model_dir(spec)
        config = ModelConfig.load(path / "config.json")
        loaded.append((spec, path, config, load_checkpoint(path, device="cpu").eval()))
    conditions = _conditions(shifts, noises)
    cms: dict[tuple[int, int], tuple[ConfusionMatrix, ConfusionMatrix]] = {}
    seconds: dict[int, float] = {}
    for seed in seeds:
        truths: dict[float | None, tuple[np.ndarray, np.ndarray]] = {}
        for ci, cond in enumerate(conditions):
            src = synthetic_source(seed, size, **cond)
            for mi, (_, _, config, model) in enumerate(loaded):
                if config.mpp not in truths:
                    truths[config.mpp] = _truth(seed, size, config.mpp)
                truth, tissue_truth = truths[config.mpp]
                t0 = time.perf_counter()
                with torch.inference_mode():  # at the working level, as the engine reads it
                    pred = predict_level(model, config, src.image, batch_size=batch_size)
                seconds[mi] = seconds.get(mi, 0.0) + time.perf_counter() - t0
                if (mi, ci) not in cms:
                    names = config.palette.names
                    cms[mi, ci] = (
                        ConfusionMatrix(config.num_classes, names),
                        ConfusionMatrix(config.num_classes, names),
                    )
                cms[mi, ci][0].update(truth, pred)
                cms[mi, ci][1].update(tissue_truth, pred)
                if log is not None:
                    print(
                        f"seed {seed} {cond} {loaded[mi][0]}: mIoU "
                        f"{cms[mi, ci][0].miou():.3f} (running)",
                        file=log,
                        flush=True,
                    )
    results = []
    for mi, (spec, path, config, _) in enumerate(loaded):
        rows = []
        for ci, cond in enumerate(conditions):
            full, tissue = cms[mi, ci]
            rows.append(
                {
                    **cond,
                    "miou": full.miou(),
                    "tissue_miou": tissue.miou(),
                    "pixel_accuracy": full.pixel_accuracy(),
                    "iou": full.to_dict()["iou"],
                }
            )
        results.append(
            {
                "model": spec,
                "path": str(path),
                "name": config.name,
                "kind": config.kind,
                "stain_normalisation": getattr(config, "stain_normalisation", None),
                "predict_seconds": round(seconds.get(mi, 0.0), 1),
                "conditions": rows,
            }
        )
    return {
        "seeds": list(seeds),
        "size": size,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "models": results,
    }


def format_table(result: dict[str, Any]) -> str:
    """Conditions as rows, models as column pairs (mIoU / tissue mIoU)."""
    labels = [f"{m['model']} ({m['kind']})" for m in result["models"]]
    head = ["condition", *(f"{lab}: mIoU / tissue" for lab in labels)]
    rows = []
    first = result["models"][0]["conditions"]
    for ci, cond in enumerate(first):
        name = f"stain {cond['stain_shift']:+g}, noise {cond['noise']:g}"
        cells = [
            f"{m['conditions'][ci]['miou']:.3f} / {m['conditions'][ci]['tissue_miou']:.3f}"
            for m in result["models"]
        ]
        rows.append([name, *cells])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> int:
    """Run the sweep; print JSON then a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="repeatable")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--size", type=int, default=8192, help="slide side, level-0 px")
    parser.add_argument("--shifts", type=float, nargs="+", default=list(STAIN_SHIFTS))
    parser.add_argument("--noises", type=float, nargs="+", default=list(NOISES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4096 px, 3 shifts, 1 noise")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.size, args.shifts, args.noises = [400], 4096, [-1.0, 0.0, 1.0], [15.0]
    t0 = time.perf_counter()
    result = sweep(
        args.model or ["sgnet", "baseline"],
        tuple(args.seeds),
        args.size,
        tuple(args.shifts),
        tuple(args.noises),
        args.batch_size,
        log=sys.stderr,
    )
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
