"""A finished search's files: front/*.json, front.csv, summary.json, summary.md and search_plot.png.

The plot is drawn on its own `matplotlib.figure.Figure` (no pyplot, no backend switch).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from gpunet._io import atomic_write_bytes
from gpunet.arch import read_json

FRONT_COLUMNS = ("rank", "key", "accuracy", "top5", "measured_ms", "predicted_ms", "img_resolution", "params",
                 "layers", "trial", "json")


def write_front(out: str, front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """front/NN_KEY.json per member (replacing an older front) and front.csv; returns the CSV rows."""
    from gpunet.model import GPUNet

    front_dir = os.path.join(out, "front")
    shutil.rmtree(front_dir, ignore_errors=True)
    os.makedirs(front_dir)
    rows = []
    for rank, r in enumerate(front):
        arch = read_json(r["arch"])
        name = f"{rank:02d}_{r['key']}.json"
        arch.save(os.path.join(front_dir, name))
        params = sum(p.numel() for p in GPUNet(arch).parameters())
        rows.append({"rank": rank, "key": r["key"], "accuracy": r["accuracy"], "top5": r.get("top5"),
                     "measured_ms": r["measured_ms"], "predicted_ms": r["predicted_ms"],
                     "img_resolution": arch.img_resolution, "params": params, "layers": len(arch.layers),
                     "trial": r["trial"], "json": os.path.join("front", name)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FRONT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(os.path.join(out, "front.csv"), buf.getvalue().encode())
    return rows


def write_summary(out: str, summary: dict[str, Any]) -> None:
    """summary.json and its Markdown rendering summary.md."""
    atomic_write_bytes(os.path.join(out, "summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(os.path.join(out, "summary.md"), format_summary(summary).encode())


def format_summary(s: dict[str, Any]) -> str:
    """summary.json as Markdown: the setting, the predictor's quality and the front as a table."""
    p = s["predictor"]
    lines = [
        "# GPUNet architecture search", "",
        f"- latency: {s['latency_context']}; budget {s['budget_ms']:g} ms",
        f"- space: {s['space']}; {s['trials_evaluated']} candidates trained ({s['epochs_per_trial']} epoch(s) each, "
        f"{s['generations']} generation(s), seed {s['seed']}) on {s['data']}",
        f"- latency predictor (layer table, {s['layer_table_entries']} entries, corrected "
        f"{p['a']:.3f} * sum + {p['b']:.3f} ms on {p['calib_n']} models): held-out n={p['n']}, "
        f"Spearman rho {p['spearman']:.3f}, MAPE {p['mape']:.1f} %",
        f"- wall time: {s['wall_seconds'] / 60:.1f} min", "",
        "| rank | key | val top-1 % | measured ms | predicted ms | res | params | JSON |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in s["front"]:
        lines.append(f"| {r['rank']} | {r['key']} | {r['accuracy']:.2f} | {r['measured_ms']:.3f} | "
                     f"{r['predicted_ms']:.3f} | {r['img_resolution']} | {r['params']:,} | {r['json']} |")
    if not s["front"]:
        lines.append("| - | no candidate within the budget | | | | | | |")
    if s["references_ms"]:
        lines += ["", "Released GPUNets measured in the same setting (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in s["references_ms"].items())]
    return "\n".join(lines) + "\n"


def plot_search(cands: list[dict[str, Any]], front: list[dict[str, Any]], refs: dict[str, float], budget_ms: float,
                title: str, path: str) -> None:
    """Accuracy vs latency of every candidate, the front, the budget and the released GPUNets, as a PNG.

    Raises ImportError without matplotlib.
    """
    from matplotlib.figure import Figure

    from gpunet.bench.report import save_png

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    xs = [c["measured_ms"] or c["predicted_ms"] for c in cands]
    ax.scatter(xs, [c["accuracy"] for c in cands], s=18, color="tab:gray", alpha=0.6,
               label="candidates (latency: measured if on the front, else predicted)")
    if front:
        ax.plot([r["measured_ms"] for r in front], [r["accuracy"] for r in front], "o-", color="tab:green",
                label="Pareto front (measured latency)")
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    for name, ms in refs.items():
        ax.axvline(ms, color="tab:blue", ls=":", lw=1)
        ax.annotate(f"{name} {ms:.3g} ms", (ms, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, color="tab:blue", ha="right", va="top")
    xs += [*refs.values(), budget_ms]
    if xs and max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)  —  dotted: released GPUNets measured here")
    ax.set_ylabel("validation top-1 (%) after the short training budget")
    ax.set_title(f"gpunet search: {title}", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    save_png(fig, Path(path))
