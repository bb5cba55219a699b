"""Benchmark results on disk and on screen: results.json, results.csv, PNG plots and a plain-text summary.

Plots are drawn on their own `matplotlib.figure.Figure` objects (no pyplot, no backend
switch), so writing them changes nothing in the caller's matplotlib state.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpunet._io import atomic_write, atomic_write_bytes
from gpunet._optional import MissingDependencyError
from gpunet.bench.records import CSV_FIELDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Results = dict[str, Any]
PLOTS_NEED_MATPLOTLIB = ("the PNG plots need matplotlib: pip install 'gpunet[benchmark]', or pass --no-plots "
                         "(the JSON and CSV results were written)")


def write_outputs(results: Results, output: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """results.json, results.csv and (optionally) perf_latency.png, perf_throughput.png, perf_pareto.png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.csv"]
    atomic_write_bytes(written[0], (json.dumps(results, indent=2) + "\n").encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in results["records"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    atomic_write_bytes(written[1], buf.getvalue().encode())
    if plots:
        written += plot_results(results, out)
    return written


def plot_results(results: Results, out: Path) -> list[Path]:
    """perf_latency.png, perf_throughput.png (vs batch size) and perf_pareto.png (top-1 vs latency) in `out`."""
    recs = [r for r in results["records"] if not r["skipped"]]
    machine = results["header"]["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['threads']} threads"
    figures = {
        "perf_latency.png": _batch_plot(recs, "median_ms", "median latency (ms)", f"Latency vs batch size ({where})"),
        "perf_throughput.png": _batch_plot(recs, "images_per_s", "images / s",
                                           f"Throughput vs batch size ({where})"),
        "perf_pareto.png": _pareto_plot(recs, f"Top-1 vs latency ({where})"),
    }
    return [save_png(fig, out / name) for name, fig in figures.items()]


def new_figure() -> Figure:
    """An 8x5 inch figure of its own (not registered with pyplot); a missing matplotlib is a GPUNetError."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(PLOTS_NEED_MATPLOTLIB) from None
    return Figure(figsize=(8, 5))


def _batch_plot(recs: list[dict[str, Any]], key: str, ylabel: str, title: str) -> Figure:
    """`key` against batch size, one line per (model, backend, precision)."""
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in recs:
        series.setdefault((r["model"], r["backend"], r["precision"]), []).append(r)
    fig = new_figure()
    ax = fig.add_subplot()
    for (model, backend, precision), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in rs], [r[key] for r in rs], marker="o", label=f"{model} {backend} {precision}")
    ax.set_xscale("log", base=2)
    if key == "median_ms":
        ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return fig


def _pareto_plot(recs: list[dict[str, Any]], title: str) -> Figure:
    """Published top-1 against latency at the smallest batch (NVIDIA's figure), one curve per backend/precision."""
    batch = min((r["batch"] for r in recs), default=1)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in recs:
        if r["batch"] == batch and r["top1"] is not None:
            kind = "timm" if r["model"].startswith("timm:") else "GPUNet"
            groups.setdefault((f"{kind} {r['backend']}", r["precision"]), []).append(r)
    fig = new_figure()
    ax = fig.add_subplot()
    for (label, precision), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["median_ms"])
        ax.plot([r["median_ms"] for r in rs], [r["top1"] for r in rs], marker="o", label=f"{label} {precision}")
        for r in rs:
            ax.annotate(_short_name(r["model"]), (r["median_ms"], r["top1"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(f"median latency at batch {batch} (ms)")
    ax.set_ylabel("published ImageNet top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    return fig


def _short_name(model: str) -> str:
    """gpunet_d1 -> D1, timm:resnet50 -> resnet50."""
    if model.startswith("gpunet_"):
        return model.replace("gpunet_", "").upper()
    return model[5:] if model.startswith("timm:") else model


def save_png(fig: Figure, path: Path) -> Path:
    """Write `fig` to `path` as PNG, atomically."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


def format_summary(results: Results) -> str:
    """A plain-text table of the records (ratios vs eager of the same model/precision/batch)."""
    from gpunet.info import format_table

    recs = results["records"]
    eager = {(r["model"], r["precision"], r["batch"]): r["median_ms"] for r in recs
             if r["backend"] == "eager" and not r["skipped"]}
    rows = []
    for r in recs:
        if r["skipped"]:
            rows.append([r["model"], r["backend"], r["precision"], r["batch"], "-", "-", "-", "-", "-",
                         "skipped: " + r["reason"]])
            continue
        base = eager.get((r["model"], r["precision"], r["batch"]))
        rows.append([r["model"], r["backend"], r["precision"], r["batch"], f"{r['median_ms']:.2f}",
                     f"{r['p90_ms']:.2f}", f"{r['images_per_s']:.1f}", f"{r['gflops']:.1f}",
                     f"{100 * r['peak_share']:.0f}%" if r["peak_share"] is not None else "-",
                     f"{base / r['median_ms']:.2f}x vs eager" if base else ""])
    peaks = ", ".join(f"{p}: {v['peak_gflops']:.1f} GFLOP/s" for p, v in results["header"]["peak"].items())
    table = format_table(["model", "backend", "prec", "batch", "median ms", "p90 ms", "img/s", "GFLOP/s",
                          "of peak", ""], rows)
    return f"{table}\npeak (2048^3 matmul, same run): {peaks}"
