"""The tables of `scripts/gpu_check.sh`, in Markdown, from its results files (benchmark JSONs, train JSON, steps).

    python scripts/gpu_report.py --models bench_models.json --d1 bench_d1.json --d1 bench_d1_auto.json \\
        --peers bench_peers.json --train train.json --steps steps.txt > summary.md

Tables: the seven GPUNets at the smallest batch (each backend's median ms, the best, NVIDIA's
published A100 TensorRT figure and the ratio to it), GPUNet-D1 per batch size (ms and images/s),
the timm peers, training images/s, and the issue's targets (met / not met / not measured). Only
numbers found in the files are printed; a missing or failed step reads "not measured".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

D1 = "gpunet_d1"
TARGET_D1_B1_MS = 0.50  # issue #11's targets (H200, fp16, medians of one `gpunet benchmark` run)
TARGET_VS_A100 = 0.6
TARGET_D1_B128_IMG_S = 10_000


def load_records(paths: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, headers) of every benchmark results.json among `paths` that exists and parses."""
    records, headers = [], []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        headers.append(data.get("header", {}))
        records += data.get("records", [])
    return records, headers


def _ran(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if not r.get("skipped") and r.get("median_ms")]


def best(records: list[dict[str, Any]], model: str, batch: int, precision: str = "fp16") -> dict[str, Any] | None:
    """The fastest record of `model` at `batch` and `precision` (None: none ran)."""
    rs = [r for r in _ran(records) if (r["model"], r["batch"], r["precision"]) == (model, batch, precision)]
    return min(rs, key=lambda r: r["median_ms"]) if rs else None


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _ms(r: dict[str, Any] | None) -> str:
    return f"{r['median_ms']:.3f}" if r else "not measured"


def models_table(records: list[dict[str, Any]], precision: str = "fp16") -> str:
    """The seven models at the smallest batch measured: each backend, the best, NVIDIA's A100 TRT figure."""
    from gpunet.zoo import get_pretrained_config, list_models

    ran = [r for r in _ran(records) if r["model"].startswith("gpunet_") and r["precision"] == precision]
    if not ran:
        return "(no GPUNet measurements)"
    batch = min(r["batch"] for r in ran)
    backends = sorted({r["backend"] for r in ran}, key=[r["backend"] for r in records].index)
    rows = []
    for model in list_models():
        by = {r["backend"]: r for r in ran if r["model"] == model and r["batch"] == batch}
        top = best(records, model, batch, precision)
        a100 = get_pretrained_config(model).latency_ms_a100
        ratio = f"{top['median_ms'] / a100:.2f}x" if top else "-"
        met = "-" if not top else ("met" if top["median_ms"] <= TARGET_VS_A100 * a100 else "not met")
        rows.append([model] + [_ms(by.get(b)) for b in backends]
                    + [f"{_ms(top)} ({top['backend']})" if top else "not measured", f"{a100:.2f}", ratio, met])
    head = ["model", *backends, "best", "NVIDIA A100 TRT", "best / A100", f"<= {TARGET_VS_A100} x A100"]
    return f"batch {batch}, {precision}, median ms\n\n" + _table(head, rows)


def batch_table(records: list[dict[str, Any]], model: str = D1, precision: str = "fp16") -> str:
    """One model per batch size and backend: median ms and images/s."""
    ran = [r for r in _ran(records) if r["model"] == model and r["precision"] == precision]
    if not ran:
        return f"(no {model} measurements)"
    batches = sorted({r["batch"] for r in ran})
    backends = sorted({r["backend"] for r in ran}, key=[r["backend"] for r in records].index)
    rows = []
    for backend in backends:
        by = {r["batch"]: r for r in ran if r["backend"] == backend}
        rows.append([backend] + [f"{by[b]['median_ms']:.3f} ms, {by[b]['images_per_s']:.0f} img/s" if b in by else "-"
                                 for b in batches])
    return f"{model}, {precision}\n\n" + _table(["backend"] + [f"batch {b}" for b in batches], rows)


def peers_table(records: list[dict[str, Any]], precision: str = "fp16") -> str:
    ran = [r for r in _ran(records) if r["precision"] == precision]
    rows = []
    for model in dict.fromkeys(r["model"] for r in ran):
        for batch in sorted({r["batch"] for r in ran if r["model"] == model}):
            top = best(records, model, batch, precision)
            if top:
                top1 = f"{top['top1']:.1f}" if top.get("top1") is not None else "-"
                rows.append([model, str(batch), top1, f"{top['median_ms']:.3f}", top["backend"],
                             f"{top['images_per_s']:.0f}"])
    return _table(["model", "batch", "top-1", "best ms", "backend", "img/s"], rows) if rows else "(no measurements)"


def train_table(path: str | None) -> str:
    try:
        recs = json.loads(Path(path).read_text()) if path else []
    except (OSError, ValueError):
        recs = []
    if not recs:
        return "(no training measurements)"
    rows = [[r["model"], f"{r['batch_size']}x{r['world_size']}", str(r["img_size"]), r["amp"],
             str(r["channels_last"]), str(r["compile"]), str(r["ddp"]), f"{r['images_per_s']:.1f}",
             f"{r['warmup_loss']:.3f} -> {r['train_loss']:.3f}", "yes" if r["loss_finite_and_falling"] else "NO"]
            for r in recs]
    return _table(["model", "batch", "px", "amp", "channels_last", "compile", "DDP", "img/s", "loss (warm-up -> timed)",
                   "finite, falling"], rows)


def targets(records: list[dict[str, Any]]) -> str:
    """The issue's targets, each met / not met / not measured, from the numbers in the files."""
    from gpunet.zoo import get_pretrained_config, list_models

    d1 = best(records, D1, 1)
    lines = [f"- D1 batch 1 <= {TARGET_D1_B1_MS} ms: "
             + (f"{'met' if d1['median_ms'] <= TARGET_D1_B1_MS else 'not met'} ({d1['median_ms']:.3f} ms, "
                f"{d1['backend']})" if d1 else "not measured")]
    misses, measured = [], 0
    for model in list_models():
        top = best(records, model, 1)
        if top:
            measured += 1
            if top["median_ms"] > TARGET_VS_A100 * get_pretrained_config(model).latency_ms_a100:
                misses.append(model)
    lines.append(f"- all seven at batch 1 <= {TARGET_VS_A100} x NVIDIA's A100 TRT: "
                 + ("not measured" if not measured else
                    f"{'met' if not misses and measured == 7 else 'not met'} ({measured} measured"
                    + (f"; over: {', '.join(misses)}" if misses else "") + ")"))
    d128 = best(records, D1, 128)
    lines.append(f"- D1 batch 128 >= {TARGET_D1_B128_IMG_S:,} img/s: "
                 + (f"{'met' if d128['images_per_s'] >= TARGET_D1_B128_IMG_S else 'not met'} "
                    f"({d128['images_per_s']:.0f} img/s, {d128['backend']})" if d128 else "not measured"))
    failed = [f"{r['model']} {r['backend']} b{r['batch']}: {r['reason']}" for r in records
              if r.get("skipped") and str(r.get("reason", "")).startswith("failed")]
    lines.append("- no crash in any backend combination: " + ("no backend failed" if not failed else
                                                                "FAILED: " + "; ".join(failed[:10])))
    return "\n".join(lines)


def _text(path: str | None, missing: str) -> str:
    """The file's text, or `missing` when there is none."""
    return Path(path).read_text().strip() if path and Path(path).is_file() else missing


def report(args: argparse.Namespace) -> str:
    models, headers = load_records(args.models)
    d1, _ = load_records(args.d1)
    peers, _ = load_records(args.peers)
    machine: dict[str, Any] = next((h["machine"] for h in headers if h.get("machine")), {})
    steps = _text(args.steps, "(no step log)")
    prec = args.precision
    parts = [
        "# gpu_check summary",
        f"machine: {machine.get('gpu') or machine.get('cpu', '?')}, torch {machine.get('torch', '?')}, "
        f"CUDA {machine.get('cuda', '-')}",
        "## Steps (name, exit status, seconds)", "```\n" + steps.rstrip() + "\n```",
        "## Targets", targets(models + d1),
        "## The seven GPUNets", models_table(models, prec),
        "## GPUNet-D1 by batch size", batch_table(d1, D1, prec),
        "## timm peers (same harness)", peers_table(peers, prec),
        "## Training (gpunet train's loop on generated batches)", train_table(args.train),
        "## Where D1's time goes (scripts/profile_kernels.py)", _text(args.profile, "(no profile)"),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", action="append", default=[], help="benchmark results.json of the seven models")
    p.add_argument("--d1", action="append", default=[], help="benchmark results.json of the D1 batch sweep")
    p.add_argument("--peers", action="append", default=[], help="benchmark results.json of the timm peers")
    p.add_argument("--train", default=None, help="train_speed.py's JSON")
    p.add_argument("--steps", default=None, help="gpu_check.sh's step log")
    p.add_argument("--profile", default=None, help="profile_kernels.py's Markdown")
    p.add_argument("--precision", default="fp16", help="the precision of the tables (default fp16; targets: fp16)")
    sys.stdout.write(report(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
