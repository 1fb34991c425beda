"""CPU speed of the model against this machine's limit, before and after inference-time fusion.

Reports, for the bundled SGNet (or ``--checkpoint``): the FLOPs per tile (``count_flops``), the
bare forward before fusion (eval mode, channels-last: what the predictor ran before) and after
(``model/fuse.py: prepare_for_inference``), the achieved GFLOP/s beside this machine's fp32
matmul rate (a large ``torch.mm`` timed the same way) and copy bandwidth, a profile of the
fused forward by kind of operation, and the engine end to end (``predict_slide`` on a rendered
region, fused vs unfused predictor). ``--variants`` adds issue 11's table: the forward time of
dense vs depthwise general branches and widths. ``--candidates`` instead times whole SGNet
candidates for the retrained weights (issue 10 part 5), fused, against the bundled model fused
and unfused: GFLOP/tile, parameters, ms per batch, GFLOP/s and the ratio to the bundled unfused
forward of the same run and to the documented 48.9 ms. Before/after runs are interleaved in one
process (so a change of load hits both), medians are reported with the minimum, and the load
average and CPU utilisation say whether the machine was shared. Prints a table, then JSON.

    python bench/bench_cpu.py                 # 2 threads, batch 8
    python bench/bench_cpu.py --quick         # smoke run
    python bench/bench_cpu.py --variants      # + dense vs depthwise, widths (issue 11)
    python bench/bench_cpu.py --candidates    # only the SGNet candidates table (issue 10)
    python bench/bench_cpu.py --candidates --candidate-config runs/x/best/config.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from napari_sgnet.model import count_flops, count_parameters, load_bundled, load_checkpoint
from napari_sgnet.model.fuse import prepare_for_inference

CL = torch.channels_last


def _median_min(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs)}


def machine_limits(threads: int, repeats: int) -> dict:
    """fp32 matmul GFLOP/s (2048^3 ``torch.mm``) and copy bandwidth (64 MiB), median of runs."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    mm = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        if i >= 2:
            mm.append(time.perf_counter() - t0)
    src = torch.randn(16 * 2**20)
    dst = torch.empty_like(src)
    cp = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        dst.copy_(src)
        if i >= 2:
            cp.append(time.perf_counter() - t0)
    flops, nbytes = 2 * n**3, 2 * src.numel() * 4
    return {
        "threads": threads,
        "matmul_gflops_median": round(flops / statistics.median(mm) / 1e9, 1),
        "matmul_gflops_best": round(flops / min(mm) / 1e9, 1),
        "copy_gbs_median": round(nbytes / statistics.median(cp) / 1e9, 1),
    }


def _inputs(
    model: nn.Module, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    p = cfg.patch_size
    local = torch.randn(batch, 3, p, p, generator=g).contiguous(memory_format=CL)
    if not cfg.needs_context:
        return local, None
    a = cfg.context_size
    return local, torch.randn(batch, 3, a, a, generator=g).contiguous(memory_format=CL)


def unfused_copy(model: nn.Module) -> nn.Module:
    """The model as the predictor ran it before fusion: eval mode, channels-last."""
    return copy.deepcopy(model).eval().to(memory_format=CL)


def time_interleaved(
    variants: dict[str, nn.Module], args: tuple, repeats: int, warmup: int
) -> dict[str, dict]:
    """Wall and process-CPU seconds per call, variants alternating within each round."""
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    names = list(variants)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                variants[name](*args)
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]  # cancel drift within a round
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                variants[name](*args)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    out = {}
    for name in names:
        out[name] = {
            "wall": wall[name],
            "cpu": cpu[name],
            "cpu_util": statistics.median(
                c / w for c, w in zip(cpu[name], wall[name], strict=True)
            ),
        }
    return out


def _kind(name: str, shapes: list) -> str:
    if name in ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution"):
        w = shapes[1] if len(shapes) > 1 else []
        return "conv depthwise" if len(w) == 4 and w[1] == 1 else "conv dense"
    if name in ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul"):
        return "matmul (SCI linears)"
    if "attention" in name:
        return "attention (SDPA)"
    if name in ("aten::native_batch_norm", "aten::batch_norm", "aten::_batch_norm_impl_index"):
        return "batch norm"
    if name in ("aten::cat", "aten::copy_", "aten::contiguous", "aten::clone"):
        return "cat / copy / layout"
    if name in ("aten::upsample_bilinear2d", "aten::grid_sampler_2d", "aten::avg_pool2d"):
        return "resample / pool"
    if name in ("aten::relu_", "aten::relu", "aten::clamp_min_", "aten::gelu", "aten::add"):
        return "elementwise (ReLU, GELU, add)"
    if name in ("aten::native_layer_norm", "aten::layer_norm"):
        return "layer norm"
    return "other"


def profile_kinds(model: nn.Module, args: tuple, runs: int = 3) -> dict[str, float]:
    """Share of self CPU time per kind of operation (leaf ops only), in percent."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(*args)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(runs):
                model(*args)
    totals: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages(group_by_input_shape=True):
        totals[_kind(evt.key, evt.input_shapes)] += evt.self_cpu_time_total
    total = sum(totals.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def forward_rows(flops: dict[str, int], batch: int, timed: dict, limits: dict) -> list[dict]:
    rows = []
    base_flops = flops["unfused"]
    for name, t in timed.items():
        med = statistics.median(t["wall"])
        best = min(t["wall"])
        rate = base_flops * batch / med / 1e9
        rows.append(
            {
                "variant": name,
                "batch": batch,
                "ms_per_batch_median": round(med * 1e3, 2),
                "ms_per_batch_min": round(best * 1e3, 2),
                "ms_per_tile_median": round(med * 1e3 / batch, 3),
                # process CPU time: with --threads 1 a load-robust figure on a shared machine
                "cpu_ms_per_batch_median": round(statistics.median(t["cpu"]) * 1e3, 2),
                "gflops_per_tile": round(flops[name] / 1e9, 4),
                # the unfused model's count: the same work done in less time
                "achieved_gflops_median": round(rate, 1),
                "achieved_gflops_best": round(base_flops * batch / best / 1e9, 1),
                "share_of_matmul_peak": round(rate / limits["matmul_gflops_median"], 3),
                "cpu_util_per_thread": round(t["cpu_util"] / torch.get_num_threads(), 2),
            }
        )
    return rows


def _speedup(timed: dict, a: str, b: str) -> dict:
    """``a`` time over ``b`` time: ratio of medians and median of per-round ratios."""
    wa, wb = timed[a]["wall"], timed[b]["wall"]
    return {
        "ratio_of_medians": round(statistics.median(wa) / statistics.median(wb), 3),
        "median_of_round_ratios": round(
            statistics.median(x / y for x, y in zip(wa, wb, strict=True)), 3
        ),
        "ratio_of_minima": round(min(wa) / min(wb), 3),
        "ratio_of_cpu_medians": round(
            statistics.median(timed[a]["cpu"]) / statistics.median(timed[b]["cpu"]), 3
        ),
    }


def _region(model: nn.Module, side: int):
    """A ``side``-px region of a synthetic slide, as a one-level pyramid at the model's µm/px."""
    import dask.array as da
    import numpy as np

    from napari_sgnet.geometry import Box
    from napari_sgnet.io.pyramid import Pyramid
    from napari_sgnet.io.working import working_level
    from napari_sgnet.synthetic import SynthConfig, generate_slide

    mpp = float(model.config.mpp or 2.0)
    margin = model.config.context_size
    slide = generate_slide(SynthConfig(width=16384, seed=1, tissue_fraction=1.0)).image
    work = working_level(slide, mpp)  # read (and area-reduce) at the model's µm/px
    w, h = work.size
    x0, y0 = (w - side) // 2 - margin, (h - side) // 2 - margin
    img = np.ascontiguousarray(work.read(Box(x0, y0, side + 2 * margin, side + 2 * margin)))
    pyr = Pyramid((da.from_array(img, chunks=(512, 512, 3)),), (1.0,), mpp=mpp, name="region")
    return pyr, Box(margin, margin, side, side)


def engine_compare(model: nn.Module, side: int, repeats: int, batch: int) -> dict:
    """``predict_slide`` on a rendered region with the fused (default) and unfused predictor."""

    from napari_sgnet.inference import describe_model, predict_slide
    from napari_sgnet.inference.predictor import TorchPredictor
    from napari_sgnet.io.labelstore import LabelStore

    pyr, region = _region(model, side)
    info = describe_model(model).info
    predictors = {
        "unfused": TorchPredictor(model, device="cpu", info=info, fuse=False),
        "fused": TorchPredictor(model, device="cpu", info=info),
    }
    secs: dict[str, list[float]] = defaultdict(list)
    labels = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms caches and is not counted
            order = list(predictors) if r % 2 == 0 else list(predictors)[::-1]
            for name in order:
                path = Path(tmp) / f"{name}-{r}.zarr"
                t0 = time.perf_counter()
                predict_slide(
                    pyr,
                    path,
                    predictors[name],
                    region=region,
                    skip_glass=False,
                    device="cpu",
                    batch_size=batch,
                )
                if r:
                    secs[name].append(time.perf_counter() - t0)
                labels[name] = LabelStore.open(path).read_labels(region)
    agree = float((labels["fused"] == labels["unfused"]).mean())
    tiles = (side // model.config.patch_size) ** 2
    out: dict = {"side_px": side, "tiles": tiles, "label_agreement": round(agree, 6)}
    for name, s in secs.items():
        out[name] = {
            "seconds_median": round(statistics.median(s), 3),
            "seconds_min": round(min(s), 3),
            "mpix_per_s_median": round(side * side / 1e6 / statistics.median(s), 3),
            "ms_per_tile_median": round(statistics.median(s) * 1e3 / tiles, 2),
        }
    out["speedup"] = round(out["unfused"]["seconds_median"] / out["fused"]["seconds_median"], 3)
    return out


def _variant_models(patch: int) -> dict[str, nn.Module]:
    """General branches for issue 11's architecture choice (random weights, eval mode)."""
    from napari_sgnet.model.encoders import MobileNetV2Encoder, TinyEncoder
    from napari_sgnet.model.general import DeepLabV3Plus, FCNLite, deeplabv3plus_r50

    def dlv3(width: float, separable: bool) -> nn.Module:
        return DeepLabV3Plus(
            MobileNetV2Encoder(width),
            aspp_ch=128,
            low_ch=32,
            decoder_ch=96,
            rates=(3, 6, 9),
            separable=separable,
            num_classes=None,
        )

    def fcn(widths: tuple[int, int, int, int], width: int) -> nn.Module:
        m = FCNLite(width=width)
        m.encoder = TinyEncoder(widths)
        ch = m.encoder.channels
        from napari_sgnet.model.layers import ConvBNAct

        m.lateral = nn.ModuleDict({str(s): ConvBNAct(ch[s], width, 1) for s in (4, 8, 16)})
        return m

    torch.manual_seed(0)
    return {
        "MobileNetV2 x0.5 + separable ASPP/decoder (bundled)": dlv3(0.5, True),
        "MobileNetV2 x0.5 + dense ASPP/decoder": dlv3(0.5, False),
        "MobileNetV2 x1.0 + separable ASPP/decoder": dlv3(1.0, True),
        "fcn_lite: dense VGG 16/24/48/96, 32 ch": FCNLite(width=32),
        "dense VGG 32/48/96/192, 64 ch": fcn((32, 48, 96, 192), 64),
        "dense VGG 32/64/128/256, 96 ch": fcn((32, 64, 128, 256), 96),
        "ResNet-50 + dense ASPP (deeplabv3plus_r50)": deeplabv3plus_r50(None),
    }


class _Branch(nn.Module):
    """A general branch with ``.config`` for :func:`count_flops`-style counting."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)


def variants_table(patch: int, batch: int, repeats: int, limits: dict) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    x = torch.randn(batch, 3, patch, patch).contiguous(memory_format=CL)
    for name, branch in _variant_models(patch).items():
        fused = prepare_for_inference(_Branch(branch.eval()))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fused(x[:1])
        flops = counter.get_total_flops()
        reps = max(3, repeats // 3) if flops > 2e9 else repeats
        t = time_interleaved({name: fused}, (x,), reps, 2)[name]
        med = statistics.median(t["wall"])
        rate = flops * batch / med / 1e9
        rows.append(
            {
                "general_branch": name,
                "params_m": round(count_parameters(branch) / 1e6, 3),
                "gflops_per_tile": round(flops / 1e9, 3),
                "ms_per_tile_median": round(med * 1e3 / batch, 3),
                "achieved_gflops": round(rate, 1),
                "share_of_matmul_peak": round(rate / limits["matmul_gflops_median"], 3),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


#: The bundled unfused forward on the quiet machine (docs/benchmarks.md): issue 10's reference.
OLD_UNFUSED_MS = 48.9

#: SGNet candidates for the retrained weights: name -> ModelConfig changes to the bundled config.
CANDIDATES: dict[str, dict] = {
    "deeplabv3plus_small, SCI 64 x 1": {"sci_width": 64, "sci_blocks": 1},
    "fcn_lite, SCI 64 x 1": {"general_branch": "fcn_lite", "sci_width": 64, "sci_blocks": 1},
    "vgg_fpn, SCI 128 x 2": {"general_branch": "vgg_fpn"},
    "vgg_fpn, SCI 96 x 1": {"general_branch": "vgg_fpn", "sci_width": 96, "sci_blocks": 1},
    "vgg_fpn, SCI 64 x 1": {"general_branch": "vgg_fpn", "sci_width": 64, "sci_blocks": 1},
    "vgg_fpn, SCI 64 x 1, 4 heads": {
        "general_branch": "vgg_fpn",
        "sci_width": 64,
        "sci_blocks": 1,
        "sci_heads": 4,
    },
    "vgg_fpn_deep, SCI 128 x 2": {"general_branch": "vgg_fpn_deep"},
    "vgg_fpn_deep, SCI 96 x 1": {
        "general_branch": "vgg_fpn_deep",
        "sci_width": 96,
        "sci_blocks": 1,
    },
    "vgg_fpn_deep, SCI 64 x 1": {
        "general_branch": "vgg_fpn_deep",
        "sci_width": 64,
        "sci_blocks": 1,
    },
    "vgg_fpn_deep, SCI 64 x 1, 4 heads": {
        "general_branch": "vgg_fpn_deep",
        "sci_width": 64,
        "sci_blocks": 1,
        "sci_heads": 4,
    },
}


def candidates_table(
    bundled: nn.Module, extra_configs: list[str], batch: int, repeats: int, warmup: int
) -> dict:
    """Whole SGNet candidates, fused, interleaved with the bundled model fused and unfused.

    Random weights (seeded): the time does not depend on their values. Every candidate runs on
    the bundled model's input (``P`` and context size of its config unless a config file says
    otherwise).
    """
    from napari_sgnet.config import ModelConfig
    from napari_sgnet.model import build_model

    base = bundled.config.replace(training={}, metrics={}, ood=None)
    configs = {name: base.replace(**changes) for name, changes in CANDIDATES.items()}
    for path in extra_configs:
        cfg = ModelConfig.load(path).replace(training={}, metrics={}, ood=None)
        configs[f"{cfg.name} ({Path(path).parent.name})"] = cfg
    models: dict[str, nn.Module] = {
        "bundled, unfused": unfused_copy(bundled),
        "bundled, fused": prepare_for_inference(bundled),
    }
    info: dict[str, dict] = {}
    for label, m in (("bundled, unfused", bundled), ("bundled, fused", bundled)):
        info[label] = {
            "config": bundled.config,
            "flops": count_flops(m),
            "params": count_parameters(m),
        }
    for name, cfg in configs.items():
        torch.manual_seed(0)
        m = build_model(cfg).eval()
        info[name] = {"config": cfg, "flops": count_flops(m), "params": count_parameters(m)}
        models[name] = prepare_for_inference(m)
    inputs = {name: _inputs(m, batch) for name, m in models.items()}
    wall: dict[str, list[float]] = defaultdict(list)
    names = list(models)
    load_before = os.getloadavg()
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                models[name](*inputs[name])
        for r in range(repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                models[name](*inputs[name])
                wall[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    ref = wall["bundled, unfused"]
    rows = []
    for name in names:
        cfg, w = info[name]["config"], wall[name]
        med, best = statistics.median(w), min(w)
        rows.append(
            {
                "candidate": name,
                "general_branch": cfg.general_branch,
                "sci": [cfg.sci_width, cfg.sci_blocks, cfg.sci_heads],
                "params_m": round(info[name]["params"] / 1e6, 3),
                "gflops_per_tile": round(info[name]["flops"] / 1e9, 3),
                "ms_per_batch_median": round(med * 1e3, 2),
                "ms_per_batch_min": round(best * 1e3, 2),
                "achieved_gflops_median": round(info[name]["flops"] * batch / med / 1e9, 1),
                "speedup_vs_bundled_unfused_median": round(statistics.median(ref) / med, 3),
                "speedup_vs_bundled_unfused_min": round(min(ref) / best, 3),
                "speedup_vs_bundled_unfused_round_median": round(
                    statistics.median(x / y for x, y in zip(ref, w, strict=True)), 3
                ),
                "speedup_vs_old_unfused_48_9ms": round(OLD_UNFUSED_MS / (med * 1e3), 3),
            }
        )
    return {
        "batch": batch,
        "rounds": repeats,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "rows": rows,
    }


def print_candidates(table: dict) -> None:
    print(
        f"\nSGNet candidates, fused, batch {table['batch']}, {table['rounds']} interleaved rounds; "
        f"load {table['load_avg_before']} -> {table['load_avg_after']}"
    )
    hdr = (
        f"{'candidate':36s} {'params M':>8s} {'GFLOP':>6s} {'ms med':>7s} {'ms min':>7s} "
        f"{'GFLOP/s':>7s} {'x unf med':>9s} {'x unf min':>9s} {'x 48.9':>6s}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for r in table["rows"]:
        print(
            f"{r['candidate']:36s} {r['params_m']:8.3f} {r['gflops_per_tile']:6.3f} "
            f"{r['ms_per_batch_median']:7.1f} {r['ms_per_batch_min']:7.1f} "
            f"{r['achieved_gflops_median']:7.1f} {r['speedup_vs_bundled_unfused_median']:9.2f} "
            f"{r['speedup_vs_bundled_unfused_min']:9.2f} {r['speedup_vs_old_unfused_48_9ms']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: bundled)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--engine-side", type=int, default=1024, help="px at the model's µm/px")
    parser.add_argument("--engine-repeats", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="issue 11's architecture table")
    parser.add_argument("--quick", action="store_true", help="few repeats, small engine region")
    parser.add_argument(
        "--candidates",
        action="store_true",
        help="only time the SGNet candidates for the retrained weights (issue 10 part 5)",
    )
    parser.add_argument(
        "--candidate-config",
        action="append",
        default=[],
        help="with --candidates: also time the model a config.json describes (repeatable)",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.engine_side, args.engine_repeats = 5, 1, 384, 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    model = load_checkpoint(args.checkpoint) if args.checkpoint else load_bundled()
    if args.candidates:
        table = candidates_table(
            model, args.candidate_config, args.batch, args.repeats, args.warmup
        )
        table["threads"] = args.threads
        table["cpus_visible"] = os.cpu_count()
        table["torch"] = torch.__version__
        print_candidates(table)
        print(json.dumps({"benchmark": "cpu_candidates", **table}, indent=1))
        return
    limits = machine_limits(args.threads, args.repeats)
    print(limits, file=sys.stderr, flush=True)
    models = {"unfused": unfused_copy(model), "fused": prepare_for_inference(model)}
    flops = {name: count_flops(m) for name, m in models.items()}
    inputs = _inputs(model, args.batch)
    with torch.inference_mode():
        ref = models["unfused"](*inputs)["logits"]
        got = models["fused"](*inputs)["logits"]
    max_rel = float((got - ref).abs().max() / ref.abs().max())
    timed = time_interleaved(models, inputs, args.repeats, args.warmup)
    rows = forward_rows(flops, args.batch, timed, limits)
    for r in rows:
        print(r, file=sys.stderr, flush=True)
    speedup = _speedup(timed, "unfused", "fused")
    kinds = {name: profile_kinds(m, inputs) for name, m in models.items()}
    engine = engine_compare(model, args.engine_side, args.engine_repeats, args.batch)
    print(engine, file=sys.stderr, flush=True)
    variants = (
        variants_table(model.config.patch_size, args.batch, args.repeats, limits)
        if args.variants
        else []
    )
    load_after = os.getloadavg()
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cpus_visible": os.cpu_count(),
        "torch": torch.__version__,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "shared": max(load_before[0], load_after[0]) > 0.5 * args.threads
        or min(r["cpu_util_per_thread"] for r in rows) < 0.9,
        **limits,
    }
    cfg = model.config
    result = {
        "benchmark": "cpu_model",
        "model": {
            "name": cfg.name,
            "general_branch": cfg.general_branch,
            "patch_size": cfg.patch_size,
            "context_size": cfg.context_size if cfg.needs_context else None,
            "fusion": repr(models["fused"].fusion_report),
            "max_rel_logit_diff": max_rel,
        },
        "machine": machine,
        "forward": rows,
        "forward_speedup": speedup,
        "profile_self_cpu_percent": kinds,
        "engine": engine,
        "variants": variants,
    }

    print(f"\nmachine: {machine}")
    print(f"model: {result['model']}\n")
    hdr = (
        f"{'forward':9s} {'GFLOP/tile':>10s} {'ms/batch':>9s} {'min':>7s} {'ms/tile':>8s} "
        f"{'GFLOP/s':>8s} {'of mm peak':>10s}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for r in rows:
        print(
            f"{r['variant']:9s} {r['gflops_per_tile']:10.3f} {r['ms_per_batch_median']:9.1f} "
            f"{r['ms_per_batch_min']:7.1f} {r['ms_per_tile_median']:8.2f} "
            f"{r['achieved_gflops_median']:8.1f} {r['share_of_matmul_peak']:10.1%}"
        )
    print(f"matmul fp32: {limits['matmul_gflops_median']} GFLOP/s; speedup {speedup}")
    print("\nprofile (self CPU %):")
    for name, k in kinds.items():
        print(f"  {name}: {k}")
    print(f"\nengine: {engine}")
    if variants:
        print(
            f"\n{'general branch':52s} {'params M':>8s} {'GFLOP':>7s} {'ms/tile':>8s} "
            f"{'GFLOP/s':>8s}"
        )
        for v in variants:
            print(
                f"{v['general_branch']:52s} {v['params_m']:8.3f} {v['gflops_per_tile']:7.3f} "
                f"{v['ms_per_tile_median']:8.3f} {v['achieved_gflops']:8.1f}"
            )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
