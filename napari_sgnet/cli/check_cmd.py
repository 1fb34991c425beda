"""``napari-sgnet check STORE [--repair] [--slide SLIDE] [--model M]``: verify a label store.

Checks the store's structure (shapes, dtypes, metadata, NGFF), decodes every chunk of every
array, and compares the done-map with the chunks (see :mod:`napari_sgnet.io.labelstore.verify`).
``--repair`` deletes the damaged chunks, marks their tiles to-do and re-predicts them with
the normal engine (a resumed run), with the store's model (``--model`` when it cannot be
found by name) on the store's slide (``--slide`` re-links a moved slide). Exit codes: 0 the
store is sound (or was repaired), 2 problems found (or bad input), 1 other error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout
from napari_sgnet.cli.main import EXIT_BAD_INPUT, EXIT_OK
from napari_sgnet.errors import StoreError
from napari_sgnet.inference.request import RequestError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    p = subparsers.add_parser(
        "check",
        help="verify a label store chunk by chunk; --repair re-predicts damaged tiles",
        description=(
            "Verify a label store: shapes, dtypes, metadata, every chunk decodes, done-map "
            "against the chunks. --repair re-predicts the damaged tiles. Exit codes: 0 sound "
            "(or repaired), 2 problems found or bad input, 1 other error."
        ),
    )
    p.add_argument("store", type=Path, help="label store folder (<slide>.sgnet.zarr)")
    p.add_argument("--repair", action="store_true",
                   help="delete damaged chunks and re-predict their tiles")
    p.add_argument("--slide", default=None,
                   help="the store's slide, when it moved (re-links it in the store)")
    p.add_argument("--model", default=None,
                   help="the store's model (default: the registered model of the store's name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (repair)")
    add_json_option(p, "the report")
    p.set_defaults(func=run)


def _report_dict(report: Any) -> dict[str, Any]:
    return {
        "store": str(report.path),
        "ok": report.ok,
        "problems": list(report.problems),
        "damaged": [
            {"array": d.array, "chunk": list(d.coords), "tiles": [list(t) for t in d.tiles],
             "problem": d.problem}
            for d in report.damaged
        ],
        "chunks_checked": report.chunks_checked,
        "seconds": round(report.seconds, 3),
    }


def _model_for(store: Any, given: str | None) -> Any:
    """The model to re-predict with: ``given``, else the registry's model of the store's name,
    which must be the very model (same id) the done-map refers to."""
    from napari_sgnet.inference.models import describe_model

    recorded = store.model or {}
    if given is not None:
        return given
    name = recorded.get("name")
    if not name:
        raise StoreError(store.path, "records no model; pass --model to repair it")
    try:
        spec = describe_model(name)
    except RequestError as exc:
        raise StoreError(
            store.path, f"its model {name!r} is not installed ({exc}); pass --model"
        ) from exc
    if spec.info.model_id != recorded.get("id"):
        raise StoreError(
            store.path,
            f"was predicted with {recorded.get('id')}, but the installed {name!r} is "
            f"{spec.info.model_id}; pass --model with the store's checkpoint",
        )
    return spec


def _repair(store: Any, report: Any, args: argparse.Namespace) -> int:
    """Reset the damaged tiles and re-predict them; returns the number re-predicted."""
    from napari_sgnet.inference import InferenceRequest, run_inference
    from napari_sgnet.io.labelstore.slide_ref import find_slide, relink_slide
    from napari_sgnet.io.labelstore.verify import reset_damaged

    slide = relink_slide(store, args.slide) if args.slide else find_slide(store)
    model = _model_for(store, args.model)
    tiles = reset_damaged(store, report)
    if not tiles:
        return 0
    last = (store.requests or [{}])[-1]
    request = InferenceRequest(
        slide=slide, store=store.path, model=model, device=args.device,
        overlap=int(last.get("overlap") or 0), skip_glass=bool(last.get("skip_glass", True)),
        resume=True,
    )  # fmt: skip
    done = 0
    for event in run_inference(request):
        done = int(event.tiles_done)
    return done


def run(args: argparse.Namespace) -> int:
    """Verify (and optionally repair) the store; returns the exit code."""
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.io.labelstore.verify import verify_store

    store = LabelStore.open(args.store, mode="r+" if args.repair else "r")
    report = verify_store(store)
    if args.slide and not args.repair:
        from napari_sgnet.io.labelstore.slide_ref import relink_slide

        relink_slide(LabelStore.open(args.store), args.slide)
        print(f"{args.store}: slide re-linked to {Path(args.slide).absolute()}")
    if report.ok or not args.repair:
        emit_json(_report_dict(report), args.json)
        if not json_on_stdout(args):
            print(report.message())
        return EXIT_OK if report.ok else EXIT_BAD_INPUT
    print(report.message(), file=sys.stderr)
    n = _repair(store, report, args)
    after = verify_store(store)
    emit_json({"before": _report_dict(report), "repredicted": n, "after": _report_dict(after)},
              args.json)
    if not json_on_stdout(args):
        print(f"{args.store}: re-predicted {n} tile(s)")
        print(after.message())
    return EXIT_OK if after.ok else EXIT_BAD_INPUT
