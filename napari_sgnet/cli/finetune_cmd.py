"""``napari-sgnet finetune``: fine-tune a model on committed corrections.

Calls :func:`napari_sgnet.training.finetune.run.finetune` (the same function as the app's
"Fine-tune" widget), shows a progress bar and prints a summary. ``--slide`` pairs with the
``--store`` before it, for stores that do not record their slide file.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout
from napari_sgnet.errors import UserInputError

__all__ = ["register", "run"]


class _StoreAction(argparse.Action):
    """``--store S`` appends ``[S, None]``; ``--slide X`` fills the last store's slide."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        stores = getattr(namespace, "stores", None) or []
        if option_string == "--store":
            stores.append([Path(values), None])
        else:
            if not stores or stores[-1][1] is not None:
                parser.error("--slide must follow the --store it belongs to")
            stores[-1][1] = Path(values)
        namespace.stores = stores


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``finetune`` subcommand."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on committed corrections",
        description="Fine-tune a model on the corrections committed in label stores (pixels "
        "marked edited) and/or exported patch folders. Corrected regions are split into train "
        "and held-out by region (deterministic for a seed, no training patch reaches a "
        "held-out region); the held-out mIoU is measured before and after, and the new model "
        "is saved as a new versioned checkpoint <out>/<name>-ft-<YYYYMMDD-HHMMSS>/.",
    )
    p.set_defaults(stores=[])
    d = p.add_argument_group("corrections")
    d.add_argument("--store", action=_StoreAction, metavar="STORE", help="label store (repeatable)")
    d.add_argument("--slide", action=_StoreAction, metavar="SLIDE",
                   help="slide of the preceding --store (default: the file the store records)")
    d.add_argument("--patches", type=Path, action="append", default=[], metavar="DIR",
                   help="exported patch folder (repeatable)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, metavar="M",
                   help="checkpoint folder or model name (default: the bundled model)")
    m.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="models folder for the new checkpoint (default: $NAPARI_SGNET_MODELS "
                   "or ~/.local/share/napari-sgnet/models)")
    t = p.add_argument_group("fine-tuning")
    t.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    t.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    t.add_argument("--batch-size", type=int, default=8, help="samples per step (default 8)")
    t.add_argument("--seed", type=int, default=0, help="split and data seed (default 0)")
    t.add_argument("--holdout", type=float, default=0.25,
                   help="share of corrected regions held out (default 0.25)")
    t.add_argument("--allow-single-class", action="store_true",
                   help="fine-tune even when every correction has the same class")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_json_option(p, "the result")
    p.add_argument("--no-progress", "--quiet", "-q", dest="no_progress", action="store_true",
                   help="no progress bar")
    p.set_defaults(func=run)


def _progress_bar(enabled: bool) -> tuple[Any, Any]:
    """A progress callback drawing a tqdm bar per stage, and a function closing it."""
    from tqdm import tqdm

    state: dict[str, Any] = {"stage": None, "bar": None}
    names = {"before": "held-out (before)", "train": "fine-tuning", "after": "held-out (after)"}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def callback(ev: Any) -> None:
        if not enabled or ev.stage not in names:
            return
        if ev.stage != state["stage"]:
            close()
            state["stage"] = ev.stage
            unit = "step" if ev.stage == "train" else "tile"
            state["bar"] = tqdm(total=ev.total, desc=names[ev.stage], unit=unit, file=sys.stderr)
        bar = state["bar"]
        bar.total = ev.total
        bar.n = ev.step
        post = {}
        if ev.loss is not None:
            post["loss"] = f"{ev.loss:.4f}"
        if ev.eta_s is not None:
            post["eta"] = f"{ev.eta_s:.0f}s"
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    return callback, close


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary(result: Any) -> str:
    split = result.split
    lines = [
        f"parent model:      {result.parent['name']} ({result.parent['path'] or 'in memory'})",
        f"regions:           {split['train_regions']} train / {split['held_out_regions']} "
        f"held out (seed {split['seed']}, {split['held_out_pixels']} held-out pixels)",
        f"steps:             {result.steps} on {result.device} in {result.wall_time_s:.1f} s",
        f"held-out mIoU:     {_fmt(result.miou_before)} -> {_fmt(result.miou_after)}"
        f"  ({'improved' if result.improved else 'NOT improved'})",
        f"held-out accuracy: {_fmt(result.before.get('pixel_accuracy'))} -> "
        f"{_fmt(result.after.get('pixel_accuracy'))}",
        f"new model:         {result.checkpoint}",
    ]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the fine-tuning; returns the exit code."""
    from napari_sgnet.cli.main import EXIT_BAD_INPUT, EXIT_CANCELLED
    from napari_sgnet.registry import resolve_model_dir
    from napari_sgnet.training.finetune.run import (
        FinetuneConfig,
        FinetuneError,
        PatchCorrections,
        StoreCorrections,
        finetune,
    )

    sources: list[Any] = [StoreCorrections(store, slide) for store, slide in args.stores]
    sources += [PatchCorrections(folder) for folder in args.patches]
    if not sources:
        print("error: give at least one --store or --patches", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        config = FinetuneConfig(
            steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
            holdout_fraction=args.holdout, allow_single_class=args.allow_single_class,
            device=args.device, precision=args.precision, num_threads=args.threads,
        )
        model = resolve_model_dir(args.model, args.out)
    except (UserInputError, FileNotFoundError) as exc:  # options; --model not found
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    callback, close = _progress_bar(not args.no_progress and not json_on_stdout(args))
    cancel = threading.Event()
    try:
        result = finetune(sources, model, args.out, config, progress=callback, cancel=cancel)
    except FinetuneError as exc:
        close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        close()
        print("cancelled: no model was written", file=sys.stderr)
        return EXIT_CANCELLED
    close()
    if result.cancelled:
        print("cancelled: no model was written", file=sys.stderr)
        return EXIT_CANCELLED
    if args.json:
        out = {
            "checkpoint": str(result.checkpoint), "name": result.name, "parent": result.parent,
            "before": result.before, "after": result.after, "improved": result.improved,
            "steps": result.steps, "wall_time_s": round(result.wall_time_s, 2),
            "split": result.split, "device": result.device, "warnings": list(result.warnings),
        }
        emit_json(out, args.json)
    if not json_on_stdout(args):
        print(_summary(result))
    return 0
