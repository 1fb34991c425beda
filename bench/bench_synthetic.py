"""Synthetic slide generation speed: Mpix/s per level and kind, one core and all cores.

    python bench/bench_synthetic.py [--size 65536] [--blocks 6] [--json-out FILE]

* ``single``: a ``blocks x blocks`` grid of 512 px chunks in the middle of the slide, rendered
  row-major on the calling thread (as a writer or a whole-slide pass reads), for level 0 and
  the 2 µm/px working level (downsample 4); plus ``*-graded``: 40 random chunks inside graded
  regions (glands, dense nuclei; caches warm). Process CPU time is the load-independent cost.
* ``dask``: the same region computed through the lazy dask level with the threaded scheduler.
* ``construct``: building a lazy 200,000 x 200,000 px slide (nothing rendered).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _single(renderer, kind: str, downsample: int, x0: int, y0: int, n: int) -> dict:
    from napari_sgnet.geometry import Box

    render = getattr(renderer, kind)
    render(downsample, Box(x0 - 512, y0, 512, 512))  # warm caches (textures, gland sites)
    boxes = [Box(x0 + i * 512, y0 + j * 512, 512, 512) for j in range(n) for i in range(n)]
    cpu, wall = time.process_time(), time.perf_counter()
    for box in boxes:
        render(downsample, box)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    mpix = len(boxes) * 512 * 512 / 1e6
    return {"mpix": mpix, "cpu_s": cpu, "wall_s": wall, "mpix_per_cpu_s": mpix / cpu}


def _graded(slide, downsample: int, n: int = 40) -> dict:
    """Image blocks inside graded regions (glands, dense nuclei), warm caches."""
    import numpy as np

    from napari_sgnet.geometry import Box

    labels = slide.labels.levels[-1].compute()
    coarse = slide.downsamples[-1]
    ys, xs = np.nonzero(labels >= 2)
    pick = np.random.default_rng(0).choice(len(ys), n, replace=False)
    scale = coarse / downsample
    boxes = [
        Box(int(xs[i] * scale) // 512 * 512, int(ys[i] * scale) // 512 * 512, 512, 512)
        for i in pick
    ]
    for box in boxes:
        slide.renderer.image(downsample, box)
    cpu, wall = time.process_time(), time.perf_counter()
    for box in boxes:
        slide.renderer.image(downsample, box)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    mpix = n * 512 * 512 / 1e6
    return {"mpix": mpix, "cpu_s": cpu, "wall_s": wall, "mpix_per_cpu_s": mpix / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    from napari_sgnet.synthetic import SynthConfig, generate_slide

    t = time.perf_counter()
    generate_slide(SynthConfig(width=200_000, seed=0))
    construct = time.perf_counter() - t
    slide = generate_slide(SynthConfig(width=args.size, seed=0))
    report: dict = {
        "size": args.size,
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "construct_200k_s": construct,
        "single": {},
        "dask": {},
    }
    n = args.blocks
    for level, ds in ((0, 1), (2, 4)):
        h, w = slide.config.level_shape(ds)
        x0, y0 = (w // 2 // 512) * 512, (h // 2 // 512) * 512
        for kind in ("image", "labels"):
            report["single"][f"ds{ds}-{kind}"] = _single(slide.renderer, kind, ds, x0, y0, n)
        report["single"][f"ds{ds}-image-graded"] = _graded(slide, ds)
        fresh = generate_slide(slide.config)  # cold caches, as a new process would be
        region = fresh.image.levels[level][y0 : y0 + n * 512, x0 : x0 + n * 512]
        cpu, wall = time.process_time(), time.perf_counter()
        region.compute(scheduler="threads")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        mpix = n * n * 512 * 512 / 1e6
        report["dask"][f"ds{ds}-image"] = {
            "mpix": mpix,
            "wall_s": wall,
            "cpu_s": cpu,
            "mpix_per_wall_s": mpix / wall,
        }
    print(json.dumps(report, indent=2))
    print(
        f"\nconstruct 200k x 200k: {construct * 1e3:.0f} ms   (load {report['load']:.1f}, "
        f"{report['cpus']} cpus)"
    )
    print("| what | Mpix | Mpix/s (per CPU second) |")
    print("|---|---|---|")
    for key, r in report["single"].items():
        print(f"| one thread, {key} | {r['mpix']:.1f} | {r['mpix_per_cpu_s']:.1f} |")
    for key, r in report["dask"].items():
        print(f"| dask threads, {key} (wall) | {r['mpix']:.1f} | {r['mpix_per_wall_s']:.1f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
