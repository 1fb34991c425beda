"""Model forward benchmark: SGNet vs its baseline, fp32 vs bf16 autocast.

Reports throughput in Mpix/s of *local* (predicted) area, FLOPs per tile, parameter counts and
the size of the saved ``model.safetensors``. Prints JSON, then a table.

    python bench/bench_model.py                   # default ModelConfig, CPU, 2 threads
    python bench/bench_model.py --device cuda --threads 0 --batch 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from napari_sgnet.config import ModelConfig
from napari_sgnet.model import build_model, count_flops, count_parameters, save_checkpoint


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    model, local, context, dtype, repeats: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per forward pass, ``repeats`` samples after ``warmup``."""
    device = local.device
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    wall, cpu = [], []
    with torch.inference_mode(), autocast:
        for i in range(warmup + repeats):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            model(local, context)
            _sync(device)
            if i >= warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return wall, cpu


def _cpu_has_bf16() -> bool | None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def checkpoint_megabytes(model) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(model, Path(tmp) / "ckpt")
        return (Path(tmp) / "ckpt" / "model.safetensors").stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--bf16-batches",
        type=int,
        nargs="*",
        default=None,
        help="batch sizes to time under bf16 autocast (default: the smallest; CPUs without "
        "native bf16 run it 10x slower than fp32)",
    )
    parser.add_argument("--bf16-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: leave)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--branch", default=None, help="general branch (default: config's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    base_cfg = ModelConfig() if args.branch is None else ModelConfig(general_branch=args.branch)
    p, a = base_cfg.patch_size, base_cfg.context_size

    models = {}
    info = {}
    for name, use_context in (("sgnet", True), ("baseline", False)):
        torch.manual_seed(0)
        model = build_model(base_cfg.replace(use_context=use_context)).eval()
        info[name] = {
            "params": count_parameters(model),
            "gflops_per_tile": count_flops(model) / 1e9,
            "safetensors_mb": round(checkpoint_megabytes(model), 3),
        }
        models[name] = model.to(device)

    bf16_batches = [min(args.batch)] if args.bf16_batches is None else args.bf16_batches
    rows = []
    for batch in args.batch:
        g = torch.Generator().manual_seed(batch)
        local = torch.randn(batch, 3, p, p, generator=g).to(device)
        context = torch.randn(batch, 3, a, a, generator=g).to(device)
        with_bf16 = batch in bf16_batches and args.bf16_repeats > 0
        dtypes = [torch.float32] + ([torch.bfloat16] if with_bf16 else [])
        for dtype in dtypes:
            bf16 = dtype == torch.bfloat16
            for name, model in models.items():
                times, cpu = time_forward(
                    model,
                    local,
                    context if name == "sgnet" else None,
                    dtype,
                    args.bf16_repeats if bf16 else args.repeats,
                    1 if bf16 else args.warmup,
                )
                best, median = min(times), statistics.median(times)
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "precision": "bf16-autocast" if dtype == torch.bfloat16 else "fp32",
                        "ms_per_batch_median": round(median * 1e3, 1),
                        "ms_per_batch_best": round(best * 1e3, 1),
                        "cpu_ms_per_batch_median": round(statistics.median(cpu) * 1e3, 1),
                        "mpix_per_s_median": round(batch * p * p / median / 1e6, 3),
                        "mpix_per_s_best": round(batch * p * p / best / 1e6, 3),
                    }
                )
                print(rows[-1], file=sys.stderr, flush=True)
    result = {
        "benchmark": "model_forward",
        "config": {
            "general_branch": base_cfg.general_branch,
            "patch_size": p,
            "context_size": a,
            "sci_width": base_cfg.sci_width,
            "sci_blocks": base_cfg.sci_blocks,
            "num_classes": base_cfg.num_classes,
        },
        "machine": {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpus_visible": os.cpu_count(),
            "cpu_native_bf16": _cpu_has_bf16(),
            "load_avg_1min_before": round(load_before, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
        },
        "models": info,
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print()
    for name, d in info.items():
        print(
            f"{name:9s} params {d['params'] / 1e6:6.3f} M  {d['gflops_per_tile']:6.2f} GFLOPs/tile"
            f"  model.safetensors {d['safetensors_mb']:.2f} MB"
        )
    print()
    header = (
        f"{'model':9s} {'batch':>5s} {'precision':>13s} {'ms/batch':>9s} {'Mpix/s':>7s} "
        f"{'best':>7s} {'CPU ms':>8s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:9s} {r['batch']:5d} {r['precision']:>13s} "
            f"{r['ms_per_batch_median']:9.1f} {r['mpix_per_s_median']:7.2f} "
            f"{r['mpix_per_s_best']:7.2f} {r['cpu_ms_per_batch_median']:8.1f}"
        )


if __name__ == "__main__":
    main()
