"""The out-of-distribution check of the bundled models: distance per stain shift, CMU, cost.

    python bench/bench_ood.py [--size 16384] [--seeds 516,517] [--model sgnet --model baseline]
                              [--slide FILE ...] [--json-out FILE]

For each model: the per-slide check (:func:`napari_sgnet.inference.ood_check.check_slide`,
16 tissue tiles) of synthetic v2 slides (default seeds 516, 517) whose seeds no training,
calibration (510-515), test or
benchmark uses, at the training stain and at ``stain_shift`` -1, -0.5, 0.5, 1 and 2, plus real
slides (default: the CMU sample). Prints the median colour and feature distances, the
verdict and the seconds each check took. See docs/ood.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SHIFTS = (0.0, -1.0, -0.5, 0.5, 1.0, 2.0)
CMU = Path(__file__).resolve().parents[1] / "napari_sgnet/sample_data/CMU-1-Small-Region.svs"


def _row(name: str, slide, model: str) -> dict:
    from napari_sgnet.inference.ood_check import check_slide

    t = time.perf_counter()
    r = check_slide(slide, model, device="cpu")
    return {"model": model, "slide": name, **r.to_dict(),
            "seconds": round(time.perf_counter() - t, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--seeds", default="516,517")
    p.add_argument("--model", action="append", default=None)
    p.add_argument("--slide", action="append", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()
    import torch

    from napari_sgnet.inference.prepare import open_slide
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    torch.set_num_threads(args.threads)
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for model in args.model or ["sgnet", "baseline"]:
        for slide_path in args.slide or [CMU]:
            rows.append(_row(slide_path.name, open_slide(slide_path), model))
        for shift in SHIFTS:
            for seed in seeds:
                cfg = SynthConfig(width=args.size, seed=seed, stain_shift=shift,
                                  name=f"synthetic-{seed}")
                rows.append(_row(f"synthetic-{seed} shift {shift:+g}",
                                 generate_slide(cfg).image, model))
    print(f"{'model':9} {'slide':28} {'colour':>7} {'thr':>5} {'feature':>7} {'thr':>5} "
          f"{'tiles':>5} {'verdict':20} {'s':>5}")
    for r in rows:
        def f(v):
            return "-" if v is None else f"{v:.2f}"
        print(f"{r['model']:9} {r['slide']:28} {f(r['colour']):>7} {f(r['colour_threshold']):>5}"
              f" {f(r['feature']):>7} {f(r['feature_threshold']):>5} {r['tiles']:>5} "
              f"{r['status']:20} {r['seconds']:>5}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
