"""Fine-tuning on corrections fixes a stain shift: held-out mIoU before and after.

    python bench/bench_finetune.py [--k 24] [--region-tiles 1] [--steps 150] [--lr 1e-4]
        [--size 16384] [--shift -3] [--seed 530] [--synth-version 2]
        [--base bundled|train|DIR] [--base-steps 300] [--arch fcn_lite]
        [--threads 2] [--out DIR] [--json-out FILE]

1. The parent model: the bundled SGNet when installed (``--base bundled``), else one trained
   here (``--arch``, default the light ``fcn_lite`` general branch, so that it runs on a CPU)
   for ``--base-steps`` on unshifted synthetic slides (seeds 0-3), or ``--base DIR``.
2. A synthetic test slide (seed 530, generator v2 unless ``--synth-version 1``) rendered
   with a stain shift (``--shift``, default -3: the
   bundled model, trained with stain jitter, shrugs off +1 but not -3); the same slide without
   the shift shows what the parent can do on its own domain.
3. The parent predicts the shifted slide into a label store (the inference engine).
4. A simulated pathologist corrects K regions: the ground truth of K boxes (``--region-tiles``
   model tiles a side, chosen at random among tissue, apart from each other) is committed with
   ``commit_edit``.
5. ``finetune`` splits the corrected regions by region (seeded), scores the parent on the
   held-out ones, fine-tunes, scores the new model on the same tiles and saves it.
6. Both models are also scored on the whole shifted slide outside the corrected boxes.

Prints a table and JSON (K, steps, time, device, held-out and rest-of-slide mIoU before and
after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _base_model(args: argparse.Namespace, out: Path) -> tuple[Path, str]:
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import list_bundled
    from napari_sgnet.training.config import TrainConfig
    from napari_sgnet.training.dataset import SlideSampler
    from napari_sgnet.training.sources import synthetic_source
    from napari_sgnet.training.trainer import train

    if args.base == "bundled" and "sgnet" in list_bundled():
        from napari_sgnet.model import bundled_model_dir

        return bundled_model_dir("sgnet"), "bundled sgnet"
    if args.base not in ("bundled", "train"):
        return Path(args.base), f"checkpoint {args.base}"
    run_dir = out / "base-run"
    if (run_dir / "last" / "model.safetensors").is_file():
        return run_dir / "last", f"trained here ({args.base_steps} steps, reused)"
    cfg = ModelConfig(general_branch=args.arch, patch_size=args.patch, mpp=4.0,
                      name="synthetic-base")
    sources = [SlideSampler(synthetic_source(s, args.size, version=args.synth_version), cfg)
               for s in range(4)]
    t0 = time.perf_counter()
    tc = TrainConfig(steps=args.base_steps, batch_size=8, lr=1e-3, warmup_steps=20,
                     checkpoint_every=0, val_every=0, num_threads=args.threads, seed=0)
    result = train(cfg, sources, run_dir, tc,
                   progress=lambda p: p.step % 50 == 0 and print(
                       f"  base step {p.step}/{p.total} loss {p.loss:.3f}", flush=True))
    print(f"  base trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return result.last_dir, f"trained here on unshifted seeds 0-3 ({args.base_steps} steps)"


def _pick_boxes(truth, side: int, k: int, seed: int):
    """K boxes of ``side`` on a grid, mostly tissue, never adjacent to each other."""
    import numpy as np

    from napari_sgnet.geometry import Box

    ny, nx = truth.shape[0] // side, truth.shape[1] // side
    cells = [(y, x) for y in range(ny) for x in range(nx)
             if (truth[y * side:(y + 1) * side, x * side:(x + 1) * side] > 1).mean() > 0.5]
    rng = np.random.default_rng(seed)
    rng.shuffle(cells)
    chosen: list[tuple[int, int]] = []
    for y, x in cells:
        if all(abs(y - cy) > 1 or abs(x - cx) > 1 for cy, cx in chosen):
            chosen.append((y, x))
        if len(chosen) == k:
            break
    return [Box(x * side, y * side, side, side) for y, x in chosen]


def _rest_of_slide(model_dir: Path, image, truth, boxes) -> dict:
    """mIoU of a model on the whole working level outside the corrected boxes."""
    import numpy as np

    from napari_sgnet.metrics import ConfusionMatrix
    from napari_sgnet.model import load_checkpoint
    from napari_sgnet.training.evaluate import predict_level

    model = load_checkpoint(model_dir)
    pred = predict_level(model, model.config, image, batch_size=8)  # at its working level
    masked = truth.copy()
    for b in boxes:
        masked[b.slices()] = 0
    cm = ConfusionMatrix(model.config.num_classes, model.config.palette.names)
    cm.update(masked, pred)
    return {"miou": round(cm.miou(), 4), "pixel_accuracy": round(cm.pixel_accuracy(), 4),
            "pixels": cm.total, "_pred": np.asarray(pred)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=24, help="corrected regions")
    p.add_argument("--region-tiles", type=int, default=1, help="side of a region in tiles")
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=16384, help="slide side at 0.5 µm/px")
    p.add_argument("--shift", type=float, default=-3.0, help="stain shift of the test slide")
    p.add_argument("--seed", type=int, default=530, help="test slide seed")
    p.add_argument("--synth-version", type=int, default=2, choices=(1, 2),
                   help="synthetic generator version of the slides")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--base", default="bundled", help="'bundled', 'train' or a checkpoint dir")
    p.add_argument("--base-steps", type=int, default=300)
    p.add_argument("--arch", default="fcn_lite", help="general branch of a base trained here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None,
                   help="work folder (store, models); default a new temporary folder")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()

    import numpy as np
    import torch

    from napari_sgnet.inference import predict_slide
    from napari_sgnet.io.labelstore import LabelStore
    from napari_sgnet.synthetic import SynthConfig, generate_slide
    from napari_sgnet.training.dataset import working_views
    from napari_sgnet.training.finetune.run import FinetuneConfig, StoreCorrections, finetune

    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {args.out}", flush=True)
    t_all = time.perf_counter()
    print("parent model ...", flush=True)
    base, base_note = _base_model(args, args.out)
    from napari_sgnet.model import load_checkpoint

    base_cfg = load_checkpoint(base).config
    synth = SynthConfig(width=args.size, seed=args.seed, name=f"shifted-{args.seed}",
                        version=args.synth_version)
    shifted = generate_slide(synth.replace(stain_shift=args.shift))
    plain = generate_slide(synth.replace(stain_shift=0.0, name=f"plain-{args.seed}"))
    _, truth_level = working_views(shifted.image, shifted.labels, base_cfg.mpp)
    truth = np.asarray(truth_level.array)

    print("parent predicts the shifted slide ...", flush=True)
    store_path = args.out / f"shifted-{args.seed}.sgnet.zarr"
    t0 = time.perf_counter()
    predict_slide(shifted.image, store_path, base, device=args.device, overwrite=True,
                  skip_glass=False)
    predict_s = time.perf_counter() - t0
    store = LabelStore.open(store_path)
    assert store.width == truth.shape[1], "store level 0 is the working level"
    side = args.region_tiles * base_cfg.patch_size
    boxes = _pick_boxes(truth, side, args.k, args.seed)
    for b in boxes:
        store.commit_edit(b, truth[b.slices()], mask=np.ones((b.h, b.w), bool),
                          author="simulated pathologist", message="bench_finetune")
    print(f"committed {len(boxes)} corrections", flush=True)

    config = FinetuneConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                            seed=args.split_seed, device=args.device, num_threads=args.threads)

    def progress(ev) -> None:
        if ev.stage == "train" and ev.loss is not None and ev.step % 25 == 0:
            print(f"  step {ev.step}/{ev.total} loss {ev.loss:.3f} eta {ev.eta_s:.0f}s",
                  flush=True)

    t0 = time.perf_counter()
    result = finetune([StoreCorrections(store_path, shifted.image)], base,
                      args.out / "models", config, progress=progress)
    ft_s = time.perf_counter() - t0

    print("scoring the rest of the slide ...", flush=True)
    own = _rest_of_slide(base, plain.image, truth, boxes)
    before = _rest_of_slide(base, shifted.image, truth, boxes)
    after = _rest_of_slide(result.checkpoint, shifted.image, truth, boxes)
    for d in (own, before, after):
        d.pop("_pred")
    device = result.device
    if device.startswith("cuda"):
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    report = {
        "k_regions": len(boxes),
        "region_side_px": side,
        "working_mpp": base_cfg.mpp,
        "slide": {"size": args.size, "seed": args.seed, "stain_shift": args.shift,
                  "synthetic_version": args.synth_version,
                  "working_level_px": list(truth.shape)},
        "parent": base_note,
        "steps": result.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "split": {k: v for k, v in result.split.items() if k != "rule"},
        "held_out_before": result.before,
        "held_out_after": result.after,
        "rest_of_slide_parent_unshifted": own,
        "rest_of_slide_before": before,
        "rest_of_slide_after": after,
        "finetune_s": round(ft_s, 1),
        "predict_s": round(predict_s, 1),
        "total_s": round(time.perf_counter() - t_all, 1),
        "device": device,
        "checkpoint": str(result.checkpoint),
    }
    print(json.dumps(report, indent=2))
    rows = [
        ("held-out regions (corrected, not trained on)", result.before["miou"],
         result.after["miou"]),
        ("rest of the shifted slide", before["miou"], after["miou"]),
    ]
    print(f"\nK={len(boxes)} steps={result.steps} lr={args.lr} fine-tune {ft_s:.0f} s on {device}")
    print(f"parent on the unshifted slide: mIoU {own['miou']:.3f}")
    print(f"{'scored on':48s} {'before':>8s} {'after':>8s}")
    for name, b, a in rows:
        print(f"{name:48s} {b:8.3f} {a:8.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
