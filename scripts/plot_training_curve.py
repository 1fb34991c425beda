"""Plot the training curves of one or more training runs (loss and held-out mIoU per step).

    python scripts/plot_training_curve.py runs/bundled/sgnet runs/bundled/baseline ... \
        --out docs/images/training_curve.svg [--json docs/training_curve.json]

Each RUN is a ``napari-sgnet train --out`` folder; the curve is read from the history in its
``last/trainer_state.json`` (the training loss EMA at every logged step, the held-out mIoU at
every validation step) and its wall time. The JSON holds the same numbers for the docs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def read_run(run: Path) -> dict[str, Any]:
    """The history, step count and wall time of a training run folder."""
    state_path = run / "last" / "trainer_state.json"
    if not state_path.is_file():
        raise SystemExit(f"{run}: no last/trainer_state.json (is this a training run folder?)")
    state = json.loads(state_path.read_text())
    history = state.get("history", [])
    loss = [(h["step"], h["loss_ema"]) for h in history if "loss_ema" in h]
    val = [
        (h["step"], h["val"]["miou"])
        for h in history
        if isinstance(h.get("val"), dict) and h["val"].get("miou") is not None
    ]
    return {
        "name": run.name,
        "steps": state.get("step"),
        "wall_time_s": state.get("wall_time_s"),
        "loss": loss,
        "val_miou": val,
        "best_score": state.get("best_score"),
    }


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _panel(
    series: list[tuple[str, list[tuple[int, float]]]],
    x0: float,
    title: str,
    ylabel: str,
    width: float = 420.0,
    height: float = 240.0,
) -> list[str]:
    """SVG elements of one line-chart panel at horizontal offset ``x0``."""
    points = [pt for _, s in series for pt in s]
    if not points:
        return []
    xmax = max(p[0] for p in points) or 1
    ylo, yhi = min(p[1] for p in points), max(p[1] for p in points)
    if yhi - ylo < 1e-9:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = ylo - pad, yhi + pad
    left, top = x0 + 55.0, 30.0

    def sx(v: float) -> float:
        return left + v / xmax * width

    def sy(v: float) -> float:
        return top + (1 - (v - ylo) / (yhi - ylo)) * height

    out = [
        f'<text x="{left + width / 2:.0f}" y="18" text-anchor="middle" font-size="13">'
        f"{title}</text>",
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>',
        f'<text x="{left + width / 2:.0f}" y="{top + height + 32:.0f}" text-anchor="middle" '
        'font-size="11">step</text>',
        f'<text x="{x0 + 12:.0f}" y="{top + height / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 12:.0f} {top + height / 2:.0f})">{ylabel}</text>',
    ]
    for i in range(5):
        v = ylo + (yhi - ylo) * i / 4
        out.append(
            f'<text x="{left - 4}" y="{sy(v) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{v:.3g}</text>"
        )
        s = xmax * i / 4
        out.append(
            f'<text x="{sx(s):.1f}" y="{top + height + 14:.0f}" font-size="10" '
            f'text-anchor="middle">{s:.0f}</text>'
        )
    for k, (_, s) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        path = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in s)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        out.extend(
            f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="2.5" fill="{colour}"/>' for a, b in s
        )
    return out


def render_svg(runs: list[dict[str, Any]]) -> str:
    """A two-panel SVG (training loss, held-out mIoU) of the runs, with a legend."""
    loss = [(r["name"], r["loss"]) for r in runs]
    val = [(r["name"], r["val_miou"]) for r in runs]
    body = _panel(loss, 0.0, "training loss (EMA)", "loss")
    body += _panel(val, 500.0, "held-out mIoU (validation seeds)", "mIoU")
    for k, r in enumerate(runs):
        minutes = (r["wall_time_s"] or 0) / 60
        y = 310 + 16 * k
        colour = _COLOURS[k % len(_COLOURS)]
        body.append(f'<rect x="60" y="{y - 9}" width="12" height="4" fill="{colour}"/>')
        body.append(
            f'<text x="78" y="{y - 4}" font-size="11">{r["name"]}: {r["steps"]} steps, '
            f"{minutes:.0f} min</text>"
        )
    h = 320 + 16 * len(runs)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="990" height="{h}" '
        'font-family="sans-serif">'
    )
    return "\n".join([head, '<rect width="100%" height="100%" fill="white"/>', *body, "</svg>"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="SVG to write")
    p.add_argument("--json", type=Path, default=None, help="also write the curves as JSON")
    args = p.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_svg(runs))
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
