"""Slide IO benchmark: time to open, time to read a random 1024 x 1024 window at level 0.

Slides: the bundled CMU SVS sample, plus an OME-TIFF (JPEG tiles, SubIFD pyramid) and an
OME-Zarr (NGFF 0.5, zarr v3) generated into a temporary folder (16k x 16k by default).
Targets: open < 0.5 s, window < 50 ms. Prints a table and JSON (``--json-out`` saves it).

    python bench/bench_io.py [--size 16384] [--windows 30] [--synthetic 100000] [--json-out F]

``bench_synthetic_browse`` measures peak RSS while browsing any Pyramid (for the
100k x 100k synthetic slide once the generator exists).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from napari_sgnet.geometry import Box
from napari_sgnet.io import Pyramid, open_pyramid

ROOT = Path(__file__).resolve().parents[1]
SVS = ROOT / "sample_data" / "CMU-1-Small-Region.svs"
TARGET_OPEN_S = 0.5
TARGET_WINDOW_S = 0.050
WINDOW = 1024
TILE = 512


# ----------------------------------------------------------------------------- test slides


def _tile_pixels(y: int, x: int, h: int, w: int, ds: int) -> np.ndarray:
    """H&E-ish deterministic texture (smooth stain field + grain), cheap to generate."""
    yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float32) * ds
    base = 0.5 + 0.25 * np.sin(yy / 170.0) * np.cos(xx / 230.0) + 0.15 * np.sin((xx + yy) / 37.0)
    grain = np.random.default_rng(y * 7919 + x + ds).integers(0, 24, (h, w), dtype=np.uint8)
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = np.clip(200 * base + 40, 0, 255).astype(np.uint8) - grain // 2
    out[..., 1] = np.clip(120 * base + 60, 0, 255).astype(np.uint8) - grain // 2
    out[..., 2] = np.clip(160 * base + 70, 0, 255).astype(np.uint8) - grain // 2
    return out


def _level_sizes(size: int, min_side: int = 1024) -> list[int]:
    sizes = [size]
    while sizes[-1] // 2 >= min_side:
        sizes.append(sizes[-1] // 2)
    return sizes


def _tiles(side: int, ds: int) -> Iterator[np.ndarray]:
    for y in range(0, side, TILE):
        for x in range(0, side, TILE):
            tile = np.zeros((TILE, TILE, 3), np.uint8)
            h, w = min(TILE, side - y), min(TILE, side - x)
            tile[:h, :w] = _tile_pixels(y, x, h, w, ds)
            yield tile


def make_ome_tiff(path: Path, size: int) -> Path:
    """A JPEG-tiled OME-TIFF pyramid (SubIFDs) of ``size`` x ``size`` RGB."""
    sizes = _level_sizes(size)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        opts = {
            "tile": (TILE, TILE),
            "compression": "jpeg",
            "compressionargs": {"level": 90},
            "photometric": "rgb",
        }
        tw.write(
            _tiles(sizes[0], 1), shape=(size, size, 3), dtype=np.uint8, subifds=len(sizes) - 1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm"}, **opts,
        )  # fmt: skip
        for k, side in enumerate(sizes[1:], start=1):
            tw.write(
                _tiles(side, 2**k), shape=(side, side, 3), dtype=np.uint8, subfiletype=1, **opts
            )
    return path


def make_ome_zarr(path: Path, size: int) -> Path:
    """An OME-NGFF 0.5 (zarr v3) pyramid of ``size`` x ``size`` RGB, yxc, 512 chunks."""
    sizes = _level_sizes(size)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    datasets = []
    for k, side in enumerate(sizes):
        arr = group.create_array(
            str(k), shape=(side, side, 3), chunks=(TILE, TILE, 3), dtype="uint8"
        )
        for y in range(0, side, 4 * TILE):
            h = min(4 * TILE, side - y)
            band = np.concatenate(
                [
                    _tile_pixels(y, x, h, min(4 * TILE, side - x), 2**k)
                    for x in range(0, side, 4 * TILE)
                ],
                axis=1,
            )
            arr[y : y + h] = band
        s = 0.25 * 2**k
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [s, s, 1.0]}]}
        )
    axes = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
        {"name": "c", "type": "channel"},
    ]
    group.attrs.put(
        {"ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}}
    )
    return path


# ----------------------------------------------------------------------------- measurements


def time_open(path: Path, repeats: int = 5) -> dict[str, float]:
    """Median and worst wall time of ``open_pyramid`` (metadata only)."""
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        open_pyramid(path)
        times.append(time.perf_counter() - t0)
    return {"open_median_s": statistics.median(times), "open_max_s": max(times)}


def time_windows(pyramid: Pyramid, n: int, level: int = 0, seed: int = 0) -> dict[str, float]:
    """Median / p95 time to read ``n`` random ``WINDOW`` x ``WINDOW`` windows at ``level``."""
    rng = np.random.default_rng(seed)
    w, h = pyramid.level_size(level)
    side = min(WINDOW, w, h)
    times, cpu = [], []
    for _ in range(n):
        box = Box(
            int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)), side, side
        )
        c0, t0 = time.process_time(), time.perf_counter()
        pyramid.read(box, level)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times.sort()
    return {
        "window_px": side,
        "window_median_s": statistics.median(times),
        "window_p95_s": times[min(len(times) - 1, int(0.95 * len(times)))],
        "window_cpu_median_s": statistics.median(cpu),
    }


class _PeakRSS:
    """Samples the process' resident set size on a thread (psutil), recording the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def bench_synthetic_browse(
    pyramid: Pyramid, n_windows: int = 50, window: int = WINDOW, seed: int = 0
) -> dict[str, Any]:
    """SYNTHETIC-SLIDE BROWSE BENCHMARK: peak RSS while reading random windows.

    Reads ``n_windows`` random ``window`` x ``window`` windows spread over all levels
    (as panning and zooming would) and reports the peak resident memory above the
    baseline. Intended for the 100k x 100k synthetic slide: the peak must stay far below
    the slide's decoded size, proving reads stay lazy.

    Parameters
    ----------
    pyramid : Pyramid
        Any opened pyramid.
    n_windows : int
        Windows to read.
    window : int
        Window side in pixels of the level read.
    seed : int
        Seed of the window positions.

    Returns
    -------
    dict
        ``baseline_rss_mb``, ``peak_rss_mb``, ``peak_delta_mb``, ``decoded_level0_mb``,
        ``seconds``, ``windows``.
    """
    rng = np.random.default_rng(seed)
    gc.collect()
    t0 = time.perf_counter()
    try:
        monitor: Any = _PeakRSS()
    except ImportError:  # psutil missing: ru_maxrss is a lifetime peak, still an upper bound
        monitor = None
    if monitor is not None:
        with monitor:
            _browse(pyramid, rng, n_windows, window)
        base, peak = monitor.baseline, monitor.peak
    else:
        import resource

        base = 0
        _browse(pyramid, rng, n_windows, window)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    decoded = int(np.prod(pyramid.shape)) * pyramid.dtype.itemsize
    return {
        "windows": n_windows,
        "seconds": time.perf_counter() - t0,
        "baseline_rss_mb": base / 2**20,
        "peak_rss_mb": peak / 2**20,
        "peak_delta_mb": (peak - base) / 2**20,
        "decoded_level0_mb": decoded / 2**20,
    }


def _browse(pyramid: Pyramid, rng: np.random.Generator, n: int, window: int) -> None:
    for i in range(n):
        level = i % pyramid.n_levels
        w, h = pyramid.level_size(level)
        x = int(rng.integers(0, max(1, w - window + 1)))
        y = int(rng.integers(0, max(1, h - window + 1)))
        pyramid.read(Box(x, y, window, window), level)


# ----------------------------------------------------------------------------- main


def machine() -> str:
    """One-line machine description."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, CPU only"


def run(size: int, n_windows: int, workdir: Path) -> dict[str, Any]:
    """Generate the slides, measure, and return the results."""
    slides: dict[str, Path] = {}
    if SVS.is_file():
        slides["svs (CMU sample, 2220x2967)"] = SVS
    t0 = time.perf_counter()
    slides[f"ome-tiff jpeg {size}"] = make_ome_tiff(workdir / "bench.ome.tif", size)
    slides[f"ome-zarr 0.5 {size}"] = make_ome_zarr(workdir / "bench.ome.zarr", size)
    generated = time.perf_counter() - t0
    results = []
    for label, path in slides.items():
        pyr = open_pyramid(path)
        time_windows(pyr, 2)  # warm imports and the OS page cache
        row = {
            "slide": label,
            "levels": pyr.n_levels,
            **time_open(path),
            **time_windows(pyr, n_windows),
        }
        row["meets_targets"] = (
            row["open_median_s"] < TARGET_OPEN_S and row["window_median_s"] < TARGET_WINDOW_S
        )
        results.append(row)
    return {
        "machine": machine(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "size": size,
        "generate_s": generated,
        "targets": {"open_s": TARGET_OPEN_S, "window_s": TARGET_WINDOW_S},
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    """Markdown table of a report."""
    lines = [
        "| slide | levels | open median (s) | window median (ms) | window p95 (ms) "
        "| window CPU (ms) | targets |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['slide']} | {r['levels']} | {r['open_median_s']:.4f} | "
            f"{1e3 * r['window_median_s']:.1f} | {1e3 * r['window_p95_s']:.1f} | "
            f"{1e3 * r['window_cpu_median_s']:.1f} | "
            f"{'met' if r['meets_targets'] else 'MISSED'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of generated slides")
    parser.add_argument("--windows", type=int, default=30, help="random windows per slide")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="SIDE",
        help="also measure peak RSS browsing a SIDE x SIDE synthetic slide (e.g. 100000)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sgnet-bench-io-") as tmp:
        report = run(args.size, args.windows, Path(tmp))
    if args.synthetic:
        from napari_sgnet.synthetic import generate_slide

        slide = generate_slide(width=args.synthetic, seed=0)
        report["synthetic_browse"] = {
            "side": args.synthetic,
            **bench_synthetic_browse(slide.image, n_windows=50),
        }
    print(json.dumps(report, indent=2))
    print()
    print(f"machine: {report['machine']}, 1-min load {report['load_average_1min']}")
    print(table(report))
    if "synthetic_browse" in report:
        sb = report["synthetic_browse"]
        print(
            f"synthetic {sb['side']} px: {sb['windows']} windows in {sb['seconds']:.1f} s, "
            f"peak RSS {sb['peak_rss_mb']:.0f} MB (+{sb['peak_delta_mb']:.0f} MB over baseline; "
            f"level 0 decoded would be {sb['decoded_level0_mb']:.0f} MB)"
        )
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0 if all(r["meets_targets"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
