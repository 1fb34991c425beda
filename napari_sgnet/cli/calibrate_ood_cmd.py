"""``napari-sgnet calibrate-ood --model NAME``: add out-of-distribution statistics to a model.

Fits the training statistics of the model's own training slides (by default the synthetic
seeds and size recorded in its ``config.json``) and calibrates the thresholds on held-out
synthetic slides at the training stain (default seeds 300-305, which no test, benchmark or
training run uses), then writes them into the checkpoint's ``config.json``. The weights, and
so the model id, do not change. See ``docs/ood.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

from napari_sgnet.cli._output import add_json_option, emit_json, json_on_stdout
from napari_sgnet.errors import OptionError

__all__ = ["DEFAULT_HELD_OUT", "register", "run"]

#: Held-out synthetic seeds the bundled models' thresholds are calibrated on.
DEFAULT_HELD_OUT = "300-305"


def register(sub: Any) -> None:
    """Add the ``calibrate-ood`` subcommand."""
    p = sub.add_parser(
        "calibrate-ood",
        help="add training statistics for the out-of-distribution check to a model",
        description="Fit colour and feature statistics of a model's training tiles, calibrate "
        "the thresholds on held-out synthetic slides, and save them in its config.json.",
    )
    p.add_argument("--model", required=True, help="checkpoint folder or model name")
    p.add_argument(
        "--train-seeds",
        default=None,
        help="synthetic training seeds, e.g. 0-7 (default: those recorded in the config)",
    )
    p.add_argument(
        "--size", type=int, default=None, help="synthetic slide side (default: as recorded)"
    )
    p.add_argument(
        "--held-out-seeds",
        default=DEFAULT_HELD_OUT,
        help=f"held-out synthetic seeds at the training stain (default {DEFAULT_HELD_OUT})",
    )
    p.add_argument(
        "--synthetic-version",
        type=int,
        choices=(1, 2),
        default=None,
        help="synthetic generator version (default: as recorded in the config, else 1)",
    )
    p.add_argument("--fit-tiles", type=int, default=None, help="training tiles (default 256)")
    p.add_argument(
        "--held-out-tiles", type=int, default=None, help="tiles per held-out slide (default 48)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the training-tile draw")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_json_option(p, "the statistics")
    p.set_defaults(func=run)


def _recorded(config: Any) -> tuple[list[int], int | None, int]:
    """Training seeds, slide size and generator version recorded in a model's config."""
    synthetic = (config.training.get("data") or {}).get("synthetic") or {}
    seeds = [int(s) for s in synthetic.get("train_seeds") or []]
    return seeds, synthetic.get("size"), int(synthetic.get("version", 1))


def run(args: argparse.Namespace) -> int:
    """Compute and save the statistics; returns the exit code."""
    import torch

    from napari_sgnet.registry import find_model
    from napari_sgnet.training.dataset import SlideSampler
    from napari_sgnet.training.ood_stats import FIT_TILES, HELD_OUT_TILES, add_ood_statistics
    from napari_sgnet.training.sources import parse_seeds, synthetic_source

    if args.threads:
        torch.set_num_threads(args.threads)
    card = find_model(args.model)
    config = card.config
    seeds, size, version = _recorded(config)
    if args.synthetic_version is not None:
        version = args.synthetic_version
    options = {"version": version} if version != 1 else {}
    if args.train_seeds is not None:
        seeds = parse_seeds(args.train_seeds)
    size = args.size or size
    if not seeds or not size:
        raise OptionError(
            f"{card.path}: its config records no synthetic training seeds; pass --train-seeds "
            "and --size"
        )
    held = parse_seeds(args.held_out_seeds)
    if set(held) & set(seeds):
        raise OptionError(f"held-out seeds {sorted(set(held) & set(seeds))} are training seeds")
    tc = config.training.get("train_config") or {}
    samplers = [
        SlideSampler(synthetic_source(s, size, **options), config,
                     max_unlabelled=float(tc.get("max_unlabelled", 0.5)),
                     balance_classes=bool(tc.get("balance_classes", True)))
        for s in seeds
    ]
    held_out = [synthetic_source(s, size, **options).image for s in held]
    reference = add_ood_statistics(
        card.path, samplers, held_out,
        n_tiles=args.fit_tiles or FIT_TILES,
        tiles_per_slide=args.held_out_tiles or HELD_OUT_TILES,
        seed=args.seed, device=args.device,
        description={"train_seeds": seeds, "held_out_seeds": held, "size": int(size),
                     "generator": "napari_sgnet.synthetic", "version": version,
                     "stain_shift": 0.0},
    )
    emit_json(reference.to_dict(), args.json)
    if not json_on_stdout(args):
        print(
            f"{card.path}: OOD statistics from {reference.n_tiles} training tiles (seeds "
            f"{args.train_seeds or seeds}); thresholds colour {reference.colour_threshold}, "
            f"feature {reference.feature_threshold} (held-out seeds {args.held_out_seeds}, "
            f"{reference.calibration.get('tiles')} tiles)"
        )
    return 0
