"""Inference benchmark: this engine vs a plain sliding-window loop vs MONAI, same model and tiling.

Run ``python bench/bench_inference.py`` (add ``--quick`` for a smoke run). Every
measurement runs in its own subprocess so peak RSS is that of the method alone.
Prints a table and, last, one JSON document.

* throughput: a region of a synthetic slide, pre-rendered into memory so all
  methods read identical pixels with no decode cost; 256-px patches, 512-px
  context, overlap 0, batch 8, skip-glass off. Mpix/s at the model's resolution.
  ``engine-unfused`` is the engine with the predictor's inference-time fusion off
  (``TorchPredictor(fuse=False)``: batch norm not folded), the engine before it.
* viewport: a 1920 x 1080 view of a lazy synthetic slide (rendering included),
  centre-first; latency to the first committed tile and to the full view.
* rss: whole-slide runs on lazy synthetic slides up to 100k x 100k px, stopped
  after a fixed number of tiles: peak RSS should not grow with slide size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MARGIN = 256  # rendered around the region so context windows read real pixels


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model(name: str):
    import torch

    torch.manual_seed(0)
    if name == "tiny":
        from napari_sgnet.inference.testing_torch import tiny_model

        return tiny_model(256, mpp=2.0)
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model

    branch = {"sgnet-lite": "fcn_lite", "sgnet-small": "deeplabv3plus_small"}[name]
    return build_model(ModelConfig(general_branch=branch, patch_size=256, mpp=2.0)).eval()


def _rendered_region(side: int):
    """A ``side``-px region of a synthetic slide at 2 µm/px, rendered into memory."""
    import dask.array as da
    import numpy as np

    from napari_sgnet.geometry import Box
    from napari_sgnet.io.pyramid import Pyramid
    from napari_sgnet.io.working import working_level
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    slide = generate_slide(SynthConfig(width=16384, seed=1, tissue_fraction=1.0)).image
    work = working_level(slide, 2.0)
    w, h = work.size
    x0, y0 = (w - side) // 2 - MARGIN, (h - side) // 2 - MARGIN
    img = np.ascontiguousarray(work.read(Box(x0, y0, side + 2 * MARGIN, side + 2 * MARGIN)))
    pyr = Pyramid((da.from_array(img, chunks=(512, 512, 3)),), (1.0,), mpp=2.0, name="region")
    return pyr, img, Box(MARGIN, MARGIN, side, side)


def child_throughput(
    method: str, model_name: str, side: int, device: str, save: str | None = None
) -> dict:
    import numpy as np
    import torch

    from napari_sgnet.inference import describe_model, make_plan
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.io.windows import read_local_and_context

    pyr, img, region = _rendered_region(side)
    model = _model(model_name)
    spec = describe_model(model)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    if method in ("engine", "engine-unfused"):
        from napari_sgnet.inference import predict_slide
        from napari_sgnet.io.labelstore import LabelStore

        if method == "engine-unfused":  # before inference-time fusion (model/fuse.py)
            model = TorchPredictor(model, device=device, info=spec.info, fuse=False)
        with tempfile.TemporaryDirectory() as tmp:
            predict_slide(
                pyr,
                Path(tmp) / "s.zarr",
                model,
                region=region,
                skip_glass=False,
                device=device,
                batch_size=8,
            )
            elapsed = time.perf_counter() - t0
            labels = LabelStore.open(Path(tmp) / "s.zarr").read_labels(region)
    elif method == "loop":
        pred = TorchPredictor(model, device=device, info=spec.info)
        plan = make_plan(pyr, spec.info, region=region)
        out = np.zeros((pyr.height, pyr.width), np.uint8)
        for i in range(0, len(plan.tiles), 8):
            tiles = plan.tiles[i : i + 8]
            pairs = [read_local_and_context(pyr, 0, plan.local_box(t), 2.0) for t in tiles]
            lab, _ = pred.predict(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
            for t, lb in zip(tiles, lab, strict=True):
                box = plan.tile_box(t)
                out[box.slices()] = lb[: box.h, : box.w]
        elapsed = time.perf_counter() - t0
        labels = out[region.slices()]
    elif method == "monai":
        from monai.inferers import sliding_window_inference

        dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        model = model.to(dev)
        cfg = model.config
        mean = torch.tensor(cfg.mean, device=dev).view(1, 3, 1, 1) * 255
        std = torch.tensor(cfg.std, device=dev).view(1, 3, 1, 1) * 255
        full = torch.from_numpy(img).permute(2, 0, 1)[None].float()  # whole image in memory
        padded = torch.nn.functional.pad(full, (128, 128, 128, 128), value=255.0)

        def predictor(win, coords):
            ctx = []
            for c in coords:
                ys, xs = c[-2], c[-1]
                y, x = ys.start + MARGIN, xs.start + MARGIN  # region -> full image coords
                ctx.append(padded[0, :, y : y + 512, x : x + 512])
            context = (torch.stack(ctx).to(dev) - mean) / std
            with torch.inference_mode():
                return model((win.to(dev) - mean) / std, context=context)["logits"]

        region_t = full[..., region.y : region.y1, region.x : region.x1]
        with torch.inference_mode():
            logits = sliding_window_inference(
                region_t,
                256,
                8,
                predictor,
                overlap=0.0,
                with_coord=True,
                sw_device=dev,
                device="cpu",
            )
        labels = (logits[0].argmax(0) + 1).to(torch.uint8).numpy()
        elapsed = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown method {method}")
    cpu = time.process_time() - c0
    if save:
        np.save(save, np.asarray(labels))
    return {
        "bench": "throughput",
        "method": method,
        "model": model_name,
        "side": side,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "mpix_per_s": round(side * side / 1e6 / elapsed, 3),
        "peak_rss_mb": round(_rss_mb(), 1),
        "data_rss_mb": round(base_rss, 1),
    }


def child_viewport(model_name: str, device: str) -> dict:
    from napari_sgnet.geometry import Box
    from napari_sgnet.inference import InferenceSession
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    slide = generate_slide(SynthConfig(width=32768, seed=2)).image
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        session = InferenceSession(
            slide,
            Path(tmp) / "s.zarr",
            _model(model_name),
            device=device,
            batch_size=4,
            commit_interval=0,
        )
        load_s = time.perf_counter() - t0
        ds = 4  # the view shows the inference level (2 µm/px) 1:1: 1920 x 1080 of it
        cx, cy = slide.width // 2, slide.height // 2
        view = Box(cx - 960 * ds, cy - 540 * ds, 1920 * ds, 1080 * ds)
        t0 = time.perf_counter()
        first = None
        for ev in session.submit(view):
            if first is None and ev.boxes:
                first = time.perf_counter() - t0
        full = time.perf_counter() - t0
        tiles, glass = ev.tiles_done, ev.tiles_glass
        t0 = time.perf_counter()
        warm_first = None
        for ev in session.submit(view.translate(view.w, 0)):  # pan right by one view
            if warm_first is None and ev.boxes:
                warm_first = time.perf_counter() - t0
                break  # a viewer would move on; the run is superseded/closed
        t0 = time.perf_counter()
        list(session.submit(view))  # panning back: served from the store
        cached = time.perf_counter() - t0
    return {
        "bench": "viewport",
        "model": model_name,
        "model_load_s": round(load_s, 2),
        "cold_first_tile_s": round(first or full, 3),
        "cold_full_view_s": round(full, 2),
        "warm_first_tile_s": round(warm_first or 0.0, 3),
        "tiles": tiles,
        "glass": glass,
        "revisit_s": round(cached, 3),
        "peak_rss_mb": round(_rss_mb(), 1),
    }


def child_rss(size: int, tiles: int, device: str) -> dict:
    from napari_sgnet.inference import InferenceRequest, run_inference
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    slide = generate_slide(SynthConfig(width=size, seed=3)).image
    cancel = threading.Event()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        request = InferenceRequest(
            slide,
            Path(tmp) / "s.zarr",
            _model("tiny"),
            device=device,
            batch_size=8,
            skip_glass=True,
        )
        last = None
        for last in run_inference(request, cancel=cancel):
            if last.tiles_done >= tiles:
                cancel.set()
    return {
        "bench": "rss",
        "slide_px": size,
        "tiles_planned": last.tiles_total,
        "tiles_run": last.tiles_done,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(_rss_mb(), 1),
    }


METHODS = ("engine", "engine-unfused", "loop", "monai")


def _best(runs: dict[str, list[dict]], model: str, tmp: str) -> list[dict]:
    """Per method: the fastest run, the median, and label agreement with the engine."""
    import numpy as np

    ref = np.load(os.path.join(tmp, f"{model}-engine.npy"))
    out = []
    for method, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out.append(rs[-1])
            continue
        best = dict(min(ok, key=lambda r: r["seconds"]))
        best["median_seconds"] = round(float(np.median([r["seconds"] for r in ok])), 3)
        best["min_cpu_seconds"] = round(min(r["cpu_seconds"] for r in ok), 3)
        labels = np.load(os.path.join(tmp, f"{model}-{method}.npy"))
        best["agreement_with_engine"] = round(float((labels == ref).mean()), 6)
        best["repeats"] = len(ok)
        out.append(best)
    return out


def _spawn(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"bench": args[0], "args": args, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default="tiny,sgnet-lite")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (best kept)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "throughput":
            out = child_throughput(
                rest[0], rest[1], int(rest[2]), args.device, rest[3] if len(rest) > 3 else None
            )
        elif kind == "viewport":
            out = child_viewport(rest[0], args.device)
        else:
            out = child_rss(int(rest[0]), int(rest[1]), args.device)
        print(json.dumps(out))
        return

    side = 512 if args.quick else 1536
    results = []
    tmp = tempfile.mkdtemp(prefix="bench-inference-")
    for model in args.models.split(","):
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _rep in range(args.repeats):  # interleaved, so load changes hit every method
            for method in METHODS:
                save = os.path.join(tmp, f"{model}-{method}.npy")
                runs[method].append(_spawn(["throughput", method, model, str(side), save]))
                print(runs[method][-1], file=sys.stderr)
        results.extend(_best(runs, model, tmp))
    results.append(_spawn(["viewport", "sgnet-lite" if not args.quick else "tiny"]))
    print(results[-1], file=sys.stderr)
    sizes = (25_000, 50_000) if args.quick else (25_000, 50_000, 100_000)
    for size in sizes:
        results.append(_spawn(["rss", str(size), "48"]))
        print(results[-1], file=sys.stderr)

    import torch

    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(f"\nmachine: {machine}\n")
    print(
        f"{'model':<12}{'method':<15}{'Mpix/s':>8}{'best s':>8}{'median s':>10}"
        f"{'CPU s':>8}{'peak RSS MB':>13}{'agree':>9}"
    )
    for r in results:
        if r.get("bench") == "throughput" and "error" not in r:
            print(
                f"{r['model']:<12}{r['method']:<15}{r['mpix_per_s']:>8.3f}{r['seconds']:>8.2f}"
                f"{r['median_seconds']:>10.2f}{r['min_cpu_seconds']:>8.2f}"
                f"{r['peak_rss_mb']:>13.0f}{r['agreement_with_engine']:>9.4f}"
            )
    for r in results:
        if r.get("bench") in ("viewport", "rss") or "error" in r:
            print(r)
    print(json.dumps({"machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
