"""App latency: from "Run on view" to the first tile shown and to the whole view shown.

Runs a real napari window (use a display, or ``xvfb-run -a python bench/bench_app.py``)
with the SGNet dock and the bundled model, and for each scenario clicks "Run on view"
on a fresh label store, timing on the main thread:

- ``first_tile_s``: until the prediction layer has been refreshed with the first tiles;
- ``view_s``: until the whole view is predicted and shown;
- ``max_stall_ms``: the longest the Qt event loop went without running (a 10 ms timer's
  largest gap), i.e. how long the UI froze during the run.

The model is loaded once before timing (as the dock does when it opens); ``cold`` reports
one run that includes loading it. Prints JSON, then a table.
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
from pathlib import Path


def _scenarios(quick: bool) -> list[dict]:
    from napari_sgnet._napari.samples import sample_data_dir, synthetic_sample

    return [
        {
            "name": "synthetic 16k slide",
            "layers": lambda: synthetic_sample()[:1],
            "center": (9000, 7000), "zoom": 0.3, "canvas": (720, 720),
        },
        {
            "name": "CMU-1 sample SVS",
            "path": sample_data_dir() / "CMU-1-Small-Region.svs",
            "center": (1000, 1100), "zoom": 0.5, "canvas": (700, 700),
        },
    ][: 1 if quick else None]


class _Stall:
    """Largest gap between ticks of a 10 ms timer on the main thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer(interval=10)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last, self.worst = time.perf_counter(), 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


def _wait(app, cond, timeout: float = 600.0) -> None:
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the run did not finish")


def _one_run(app, scenario: dict, model, device: str, store_dir: Path) -> dict:
    """One "Run on view" in a fresh napari window on a fresh label store."""
    import napari

    from napari_sgnet._napari.session import camera_of
    from napari_sgnet._qt.widget import SGNetWidget

    viewer = napari.Viewer(title="napari-sgnet app bench")
    if "path" in scenario:
        viewer.open(str(scenario["path"]), plugin="napari-sgnet")
    else:
        for data, kwargs, kind in scenario["layers"]():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SGNetWidget(viewer, model=model, store_dir=store_dir)
    widget.device_combo.setCurrentText(device)
    c = widget.controller
    c.follow_view = False
    h, w = scenario["canvas"]
    viewer.window._qt_window.resize(w + 700, h + 150)
    for _ in range(20):
        app.processEvents()
    mpp = c.slide.mpp or 1.0
    camera = camera_of(viewer)
    camera.center = (scenario["center"][0] * mpp, scenario["center"][1] * mpp)
    camera.zoom = scenario["zoom"] / mpp
    # let napari load and draw the slide itself first: that is not the plugin's latency
    settle = time.perf_counter()
    while time.perf_counter() - settle < 1.0 or not all(lay.loaded for lay in viewer.layers):
        app.processEvents()
        time.sleep(0.005)
    first = _timed_run(app, c)  # a fresh store: the labels layer is created on the way
    # pan down by half a view: new tiles, the layers already exist (the steady state)
    box = c.view_box()
    camera.center = (camera.center[0] + box.h * 0.5 * mpp, camera.center[1])
    for _ in range(5):
        app.processEvents()
    pan = _timed_run(app, c)
    viewer.window.add_dock_widget(widget)  # so closing the window tidies it up
    viewer.close()
    for _ in range(10):
        app.processEvents()
    return {"first": first, "pan": pan}


def _timed_run(app, c) -> dict:
    """Click "Run on view" and time it (main thread)."""
    marks: dict[str, float] = {}

    def on_shown(ev) -> None:
        now = time.perf_counter()
        if ev.tiles_done > 0:
            marks.setdefault("first", now)
        if ev.finished:
            marks["all"] = now
            marks["tiles"] = ev.tiles_total

    c.shown.connect(on_shown)
    stall = _Stall()
    stall.start()
    t0 = time.perf_counter()
    if not c.run_on_view(force=True):
        raise RuntimeError("run on view did not start")
    _wait(app, lambda: "all" in marks and not c.running)
    worst = stall.stop()
    c.shown.disconnect(on_shown)
    box = c.view_box()
    return {
        "first_tile_s": marks.get("first", marks["all"]) - t0,  # all cached: no tile events
        "view_s": marks["all"] - t0,
        "tiles": marks["tiles"],
        "view_px": [box.w, box.h],
        "max_stall_ms": worst * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: bundled)")
    parser.add_argument("--quick", action="store_true", help="one scenario, one repeat")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    args = parser.parse_args(argv)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("needs a display: run it as  xvfb-run -a python bench/bench_app.py", file=sys.stderr)
        return 2

    from napari.qt import get_qapp

    from napari_sgnet.app.models import choose_model, warm_up

    app = get_qapp()
    model = Path(args.model) if args.model else None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cold = _one_run(app, _scenarios(True)[0], model, args.device, Path(tmp) / "cold")
        cold = {**cold["first"], "includes_model_load": True}
        load_s = time.perf_counter() - t
        warm_up(choose_model(model), args.device)  # the dock warms the model up when it opens
        repeats = 1 if args.quick else args.repeats
        for scenario in _scenarios(args.quick and not args.only):
            if args.only not in scenario["name"]:
                continue
            runs = [
                _one_run(app, scenario, model, args.device, Path(tmp) / f"r{i}")
                for i in range(repeats)
            ]
            for kind, label in (("first", "first view"), ("pan", "pan (half new)")):
                rs = [r[kind] for r in runs]
                results.append({
                    "scenario": f"{scenario['name']}, {label}",
                    "tiles": rs[0]["tiles"],
                    "view_px": rs[0]["view_px"],
                    "first_tile_s": statistics.median(r["first_tile_s"] for r in rs),
                    "view_s": statistics.median(r["view_s"] for r in rs),
                    "max_stall_ms": max(r["max_stall_ms"] for r in rs),
                    "repeats": repeats,
                })
    import torch

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "model": str(model or "bundled sgnet"),
        "cold_first_run": {**cold, "wall_s": load_s},
        "results": results,
    }
    print(json.dumps(report, indent=2))
    head = f"{'view (px)':>11} {'tiles':>5} {'first tile':>11} {'whole view':>11} {'max stall':>10}"
    print(f"\n{'scenario':<40} {head}")
    for r in results:
        view = "x".join(str(v) for v in r["view_px"])
        print(f"{r['scenario']:<40} {view:>11} {r['tiles']:>5} {r['first_tile_s']:>10.2f}s "
              f"{r['view_s']:>10.2f}s {r['max_stall_ms']:>8.0f}ms")
    view = "x".join(str(v) for v in cold["view_px"])
    print(f"{'cold (first run, loads the model)':<40} {view:>11} {cold['tiles']:>5} "
          f"{cold['first_tile_s']:>10.2f}s {cold['view_s']:>10.2f}s "
          f"{cold['max_stall_ms']:>8.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
