"""``napari-sgnet export-model``: write a torch checkpoint as an ONNX model, verified."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``export-model`` subcommand."""
    p = subparsers.add_parser(
        "export-model",
        help="write the bundled or a fine-tuned model as model.onnx + config.json",
        description=(
            "Export a torch checkpoint to the ONNX model contract (docs/model.md, 'Bring your "
            "own model'), then run it with onnxruntime and compare with torch: the largest "
            "absolute logit difference must be below --tolerance and the labels identical, "
            "else nothing is written. The folder is a checkpoint: --model DIR runs it."
        ),
    )
    p.add_argument(
        "--model", default=None, help="checkpoint folder or model name (default: bundled)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="new folder for model.onnx + config.json"
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs logit difference")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier ONNX export")
    add_json_option(p, "the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and verify; returns the exit code (errors propagate to ``main``)."""
    from napari_sgnet.inference.onnx_export import export_onnx

    result = export_onnx(args.model, args.out, tolerance=args.tolerance, overwrite=args.overwrite)
    summary = {
        "out": str(result.path),
        "max_abs_logit_diff": result.max_abs_diff,
        "labels_identical": result.labels_identical,
        "test_tiles": result.tiles,
    }
    emit_json(summary, args.json)
    if not json_on_stdout(args):
        print(
            f"wrote {result.path} (onnxruntime vs torch on {result.tiles} test tiles: max abs "
            f"logit difference {result.max_abs_diff:.2e}, labels identical)"
        )
    return 0
