"""``napari-sgnet train``: train SGNet (or its baseline) on slides, synthetic slides or patches."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_sgnet.errors import OptionError, UserInputError

__all__ = ["add_data_arguments", "register", "run"]

#: Flags whose defaults are filled in after a possible resume (None = "not given").
_MODEL_DEFAULTS: dict[str, Any] = {"arch": "deeplabv3plus_small", "patch_size": 128, "mpp": 4.0}
_TRAIN_DEFAULTS = {"steps": 2000, "batch_size": 8, "lr": 2e-4, "seed": 0}


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Options selecting training / validation data (shared with ``evaluate``)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--synthetic-train-seeds",
        metavar="SEEDS",
        default=None,
        help="generated training slides, e.g. 0,1,2 or 0-7",
    )
    g.add_argument(
        "--synthetic-val-seeds",
        metavar="SEEDS",
        default=None,
        help="generated held-out slides (disjoint from the training seeds)",
    )
    g.add_argument(
        "--size",
        type=int,
        default=16384,
        help="side of generated slides in level-0 px at 0.5 µm/px (default 16384)",
    )
    g.add_argument(
        "--synthetic-version",
        type=int,
        choices=(1, 2),
        default=2,
        help="synthetic generator version: 1 = v1 blobs (glass labelled 1), 2 = needle cores "
        "on glass (label 0), outlined gland groups, mimics (default 2; see docs/synthetic.md)",
    )
    g.add_argument(
        "--slide",
        type=Path,
        action="append",
        default=[],
        help="training slide (repeatable; pair each with --labels)",
    )
    g.add_argument(
        "--labels",
        type=Path,
        action="append",
        default=[],
        help="ground truth for the --slide at the same position: a label-id image, or a "
        "QuPath .geojson of classified polygons (outside them: no label)",
    )
    g.add_argument("--val-slide", type=Path, action="append", default=[], help="held-out slide")
    g.add_argument(
        "--val-labels",
        type=Path,
        action="append",
        default=[],
        help="ground truth for the --val-slide at the same position (label image or .geojson)",
    )
    g.add_argument(
        "--patches",
        type=Path,
        action="append",
        default=[],
        help="exported patch folder to train on (repeatable)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train SGNet or its baseline",
        description="Train SGNet (general branch + surrounding-context branch) or, with "
        "--baseline, the same general branch alone. Writes OUT/step-N, OUT/last and OUT/best "
        "(model.safetensors + config.json + resumable optimizer state).",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_data_arguments(p)
    m = p.add_argument_group("model")
    m.add_argument("--arch", default=None, help="general branch (default deeplabv3plus_small)")
    m.add_argument("--baseline", action="store_true", help="train the general branch alone")
    m.add_argument(
        "--baseline-input",
        choices=("local", "context"),
        default="local",
        help="with --baseline: what the general branch sees: the local patch (default) or the "
        "surrounding patch downsampled to the local size (SGNet's field of view)",
    )
    m.add_argument("--sci-width", type=int, default=None, help="SCI width (default 128)")
    m.add_argument("--sci-blocks", type=int, default=None, help="SCI blocks (default 2)")
    m.add_argument("--sci-heads", type=int, default=None, help="SCI attention heads (default 8)")
    m.add_argument("--patch-size", type=int, default=None, help="local patch side (default 128)")
    m.add_argument("--mpp", type=float, default=None, help="working µm/px (default 4.0)")
    m.add_argument("--name", default=None, help="model name stored in config.json")
    m.add_argument(
        "--stain-normalisation",
        choices=("none", "reinhard"),
        default="none",
        help="normalise every input tile's stain (training and inference alike; saved in "
        "config.json): reinhard = match CIELAB tissue statistics to a target",
    )
    m.add_argument(
        "--stain-target",
        type=Path,
        default=None,
        help="the Reinhard target: a JSON file ({'mean': [L,a,b], 'std': [L,a,b]}, or a "
        "config.json with stain_normalisation) or an RGB image of reference tissue; default: "
        "fitted on 256 training patches",
    )
    t = p.add_argument_group("optimisation")
    t.add_argument("--steps", type=int, default=None, help="total steps (default 2000)")
    t.add_argument("--batch-size", type=int, default=None, help="samples per step (default 8)")
    t.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 2e-4)")
    t.add_argument("--seed", type=int, default=None, help="init + data seed (default 0)")
    t.add_argument("--val-every", type=int, default=250)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--device", default="auto")
    t.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument(
        "--augment",
        choices=("stain", "mild", "geometric", "none"),
        default=None,
        help="augmentation preset (default stain: the stain-robust ranges of docs/training.md; "
        "mild: the first bundled weights' jitter); a resumed run keeps its own",
    )
    t.add_argument("--resume", action="store_true", help="continue OUT/last")
    t.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.set_defaults(func=run)


def _pairs(slides: list[Path], labels: list[Path], what: str) -> list[tuple[Path, Path]]:
    if len(slides) != len(labels):
        raise OptionError(f"{len(slides)} {what} slide(s) but {len(labels)} label image(s)")
    return list(zip(slides, labels, strict=True))


def build_sources(
    args: argparse.Namespace, palette: Any = None
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Training sources, validation sources and their JSON description from the arguments
    (``palette``: the classes GeoJSON ground truths map onto, default Gleason)."""
    from napari_sgnet.training.sources import describe_sources, file_source, parse_seeds
    from napari_sgnet.training.sources import synthetic_source as synth

    train_seeds = parse_seeds(args.synthetic_train_seeds)
    val_seeds = parse_seeds(args.synthetic_val_seeds)
    if set(train_seeds) & set(val_seeds):
        overlap = sorted(set(train_seeds) & set(val_seeds))
        raise OptionError(f"training and held-out seeds overlap: {overlap}")
    version = int(getattr(args, "synthetic_version", 2))
    train = [synth(s, args.size, version=version) for s in train_seeds]
    pairs = _pairs(args.slide, args.labels, "training")
    train += [file_source(s, lab, palette=palette) for s, lab in pairs]
    val = [synth(s, args.size, version=version) for s in val_seeds]
    pairs = _pairs(args.val_slide, args.val_labels, "held-out")
    val += [file_source(s, lab, palette=palette) for s, lab in pairs]
    description: dict[str, Any] = {
        "train_slides": describe_sources(train),
        "val_slides": describe_sources(val),
        "patch_folders": [str(p) for p in args.patches],
    }
    if train_seeds or val_seeds:
        description["synthetic"] = {
            "generator": "napari_sgnet.synthetic",
            "version": version,
            "train_seeds": train_seeds,
            "val_seeds": val_seeds,
            "size": args.size,
            "mpp": 0.5,
        }
    return train, val, description


def _configs(args: argparse.Namespace) -> tuple[Any, Any]:
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.training.config import TrainConfig
    from napari_sgnet.training.state import read_trainer_state

    overrides = {k: getattr(args, k) for k in _TRAIN_DEFAULTS if getattr(args, k) is not None}
    extra = {
        "val_every": args.val_every,
        "checkpoint_every": args.checkpoint_every,
        "device": args.device,
        "precision": args.precision,
        "num_workers": args.workers,
        "num_threads": args.threads,
    }
    if args.resume:
        last = args.out / "last"
        model_config = ModelConfig.load(last / "config.json").replace(training={}, metrics={})
        saved = read_trainer_state(last).get("train_config", {})
        train_config = TrainConfig.from_dict({**saved, **extra, **overrides})
        return model_config, train_config
    model_args = {
        k: getattr(args, k) if getattr(args, k) is not None else v
        for k, v in _MODEL_DEFAULTS.items()
    }
    kind = "baseline" if args.baseline else "sgnet"
    if args.baseline_input != "local" and not args.baseline:
        raise OptionError("--baseline-input context needs --baseline")
    if args.baseline_input == "context":
        kind = "baseline-fov"
    sci = {
        f"sci_{k}": getattr(args, f"sci_{k}")
        for k in ("width", "blocks", "heads")
        if getattr(args, f"sci_{k}") is not None
    }
    model_config = ModelConfig(
        general_branch=model_args["arch"],
        use_context=not args.baseline,
        baseline_input=args.baseline_input,
        patch_size=model_args["patch_size"],
        mpp=model_args["mpp"],
        name=args.name or kind,
        **sci,
    )
    if args.augment is not None:
        from napari_sgnet.training.augment import AugmentConfig

        extra["augment"] = AugmentConfig.preset(args.augment)
    train_config = TrainConfig(**{**_TRAIN_DEFAULTS, **overrides}, **extra)
    return model_config, train_config


def _with_stain(args: argparse.Namespace, config: Any, samplers: list[Any]) -> Any:
    """``config`` with the stain normalisation ``--stain-normalisation``/``--stain-target``
    ask for (a resumed run keeps its own)."""
    import numpy as np

    from napari_sgnet.config import ConfigError, ModelConfig, StainNormalisation
    from napari_sgnet.model.stain import fit_reinhard

    if args.resume or args.stain_normalisation == "none":
        if args.stain_target is not None and not args.resume:
            raise OptionError("--stain-target needs --stain-normalisation reinhard")
        return config
    target = args.stain_target
    spec: StainNormalisation | None
    if target is None:
        rng = np.random.default_rng([int(args.seed or 0), 0x57A1])
        patches = [samplers[int(rng.integers(len(samplers)))].sample(rng).local for _ in range(256)]
        spec = fit_reinhard(patches)
    elif target.suffix.lower() == ".json":
        try:
            data = json.loads(target.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{target}: cannot read stain target: {exc}") from exc
        if isinstance(data, dict) and "stain_normalisation" in data:
            spec = ModelConfig.load(target).stain_normalisation
            if spec is None:
                raise ConfigError(f"{target}: stain_normalisation is null: no target in it")
        else:
            try:
                spec = StainNormalisation.from_dict({"method": "reinhard", "target": data})
            except ConfigError as exc:
                raise ConfigError(f"{target}: {exc}") from exc
    else:
        from napari_sgnet.io import open_pyramid

        pyramid = open_pyramid(target)
        try:
            spec = fit_reinhard(np.asarray(pyramid.levels[-1])[..., :3])
        except ValueError as exc:
            raise OptionError(f"{target}: {exc}") from exc
    return config.replace(stain_normalisation=spec)


def run(args: argparse.Namespace) -> int:
    """Train and print where the best checkpoint went."""
    from tqdm import tqdm

    from napari_sgnet.training.dataset import PatchFolderSampler, SlideSampler
    from napari_sgnet.training.patches import read_patch_folder
    from napari_sgnet.training.trainer import TrainProgress, train

    try:
        model_config, train_config = _configs(args)
        train_src, val_src, description = build_sources(args, model_config.palette)
        samplers: list[Any] = [
            SlideSampler(s, model_config, train_config.max_unlabelled, train_config.balance_classes)
            for s in train_src
        ]
        samplers += [PatchFolderSampler(read_patch_folder(p), model_config) for p in args.patches]
        if not samplers:
            print(
                "error: no training data: give --synthetic-train-seeds, --slide/--labels or "
                "--patches",
                file=sys.stderr,
            )
            return 2
        model_config = _with_stain(args, model_config, samplers)
        bar = tqdm(total=train_config.steps, unit="step", dynamic_ncols=True)

        def progress(p: TrainProgress) -> None:
            if bar.n == 0 and p.step > 1:
                bar.n = p.step - 1
            bar.update(1)
            post = {"loss": f"{p.loss:.3f}", "lr": f"{p.lr:.1e}"}
            if p.val is not None and p.val.get("miou") is not None:
                post["val_mIoU"] = f"{p.val['miou']:.3f}"
                tqdm.write(f"step {p.step}: held-out mIoU {p.val['miou']:.4f}")
            bar.set_postfix(post, refresh=False)

        result = train(
            model_config,
            samplers,
            args.out,
            train_config,
            val_src,
            resume=args.resume,
            init_checkpoint=args.init,
            data_description=description,
            progress=progress,
        )
        bar.close()
    except UserInputError as exc:  # config, checkpoint, data, patch folder, train state, options
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"trained {result.steps} steps in {result.wall_time_s / 60:.1f} min; "
        f"best checkpoint: {result.best_dir}"
    )
    held_out = result.config.metrics.get("held_out")
    if held_out:
        print(
            f"held-out mIoU {held_out['miou']:.4f}, pixel accuracy {held_out['pixel_accuracy']:.4f}"
        )
    return 0
