"""The readable report of ``napari-sgnet evaluate``: figures, pooled, per slide, per class,
confusion matrices (from the JSON-able results :func:`evaluate_models` returns)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]


def _pm(mean: Any, sd: Any, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f}±{sd:.{digits}f}"


def _grid_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return lines


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The readable report: the figures table, pooled figures, per-slide, per-class IoU and
    the confusion matrices (rows truth, columns prediction, row-normalised %)."""
    first = next(iter(results.values()))
    n = first["n_slides"]
    tol_um, tol_px = first["boundary_tolerance_um"], first["boundary_tolerance_px"]
    out = [
        f"mean±sd over {n} slide{'s' if n != 1 else ''} (sample sd; '-' sd with one slide); "
        f"boundary F tolerance {tol_um:g} µm = {tol_px:g} px",
        "",
    ]

    def ms(row: dict[str, Any], key: str) -> str:
        return _pm(row["mean"].get(key), row["sd"].get(key))

    header = [
        "",
        "tissue mIoU",
        "all-pixel mIoU",
        "tissue acc",
        "boundary F",
        "seam",
        "seam truth",
        "seam tile-const",
        "seam pos",
    ]
    rows = [
        [
            name,
            ms(r, "tissue_miou"),
            ms(r, "all_miou"),
            ms(r, "tissue_pixel_accuracy"),
            ms(r, "boundary_f1"),
            ms(r, "seam_border_rate"),
            ms(r, "seam_truth_border_rate"),
            ms(r, "seam_oracle_border_rate"),
            ms(r, "seam_position"),
        ]
        for name, r in results.items()
    ]
    out += _grid_table(header, rows)
    out.append(
        "seam = border disagreement rate on the tile grid; seam pos: 0 = like the truth, "
        "1 = like a tile-constant output"
    )

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    out += ["", "pooled over slides"]
    header = [
        "",
        "tissue mIoU",
        "all-pixel mIoU",
        "tissue acc",
        "all-pixel acc",
        "boundary F",
        "seam",
        "seam ratio",
        "tile / tiler",
    ]
    rows = []
    for name, r in results.items():
        p = r["pooled"]
        rows.append(
            [
                name,
                fmt(p["tissue"]["miou"]),
                fmt(p["all_pixels"]["miou"]),
                fmt(p["tissue"]["pixel_accuracy"]),
                fmt(p["all_pixels"]["pixel_accuracy"]),
                fmt(p["boundary"]["f1"]),
                fmt(p["seams"]["border_rate"]),
                fmt(p["seams"]["ratio"]),
                f"{r['tile']} / {r['tiler']}",
            ]
        )
    out += _grid_table(header, rows)

    slides = [p["slide"] for p in first["per_slide"]]
    out += ["", "tissue mIoU per slide"]
    rows = [[name, *(fmt(p["tissue_miou"]) for p in r["per_slide"])] for name, r in results.items()]
    out += _grid_table(["", *slides], rows)

    classes = list(first["mean"]["iou"])
    out += ["", "tissue IoU per class (mean±sd over slides)"]
    rows = [
        [name, *(_pm(r["mean"]["iou"][c], r["sd"]["iou"][c]) for c in classes)]
        for name, r in results.items()
    ]
    out += _grid_table(["", *classes], rows)

    for name, r in results.items():
        if r["kind"] != "model":
            continue
        conf = r["pooled"]["tissue"]["confusion"]
        labels, counts = conf["labels"], conf["counts"]
        cols = list(range(1, len(labels)))
        if any(row[0] for row in counts[1:]):
            cols = [0, *cols]
        out += [
            "",
            f"{name}: confusion on tissue, pooled (rows truth, columns prediction, % of row)",
        ]
        rows = []
        for t in range(1, len(labels)):
            total = sum(counts[t])
            rows.append(
                [labels[t], *(f"{100 * counts[t][c] / total:.1f}" if total else "-" for c in cols)]
            )
        out += _grid_table(["truth \\ prediction", *(labels[c] for c in cols)], rows)
        for note in r.get("ablation_notes", []):
            out.append(f"{name}: ablations {note}")
    return "\n".join(out)
