"""Where a model's time goes, by kind of work: the profile that says what to speed up next (issue #11).

    python scripts/profile_kernels.py --model gpunet_d1 --device cuda --precision fp16 \\
        --backends fused,padded --batch-sizes 1,128 --output profile.md

For each backend and batch size it builds the runner `gpunet benchmark` times (same builder,
same input layout), warms it up, and records `--iters` calls with torch.profiler. Each top-level
operator of the forward pass is put in a category -- convolutions by their weight's shape
(depthwise k x k, pointwise 1x1, dense k x k, grouped), elementwise (activations, residual adds,
the squeeze-excitation gate), mean pooling (squeeze-excitation, head), the classifier -- and
its time is summed: on CUDA the time of the GPU kernels it launched, on CPU its own time. The
totals say how busy the GPU is: kernel time per call against wall time per call (far below
100 %: launch-bound, what CUDA graphs and fusion address), and the kernels launched per call.
On CUDA the ten most expensive kernels are listed by name (cuDNN's algorithm names say which
convolutions run on tensor cores); the `triton-dw` backend's depthwise kernels, launched by Triton
rather than an operator, get a category of their own. A backend that cannot run here is listed
as skipped, with the reason. Backends replaying a CUDA graph show no operators, so
profile the ones without (`fused`, `padded`): the graph replays the same kernels.

Prints Markdown; `--output` also writes it (atomically).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from gpunet.bench.backends import BackendRequest, Skip, build_runner
from gpunet.bench.models import resolve_models
from gpunet.device import PRECISIONS, cudnn_autotune, resolve_device, synchronize
from gpunet.timing import time_call

ELEMENTWISE = {"relu", "relu_", "silu", "silu_", "hardswish", "hardswish_", "sigmoid", "sigmoid_", "mul", "mul_",
               "add", "add_", "hardsigmoid", "hardsigmoid_", "gelu", "clamp", "clamp_"}
POOL = {"mean", "adaptive_avg_pool2d", "avg_pool2d"}
LINEAR = {"linear", "addmm", "matmul", "mm"}
TRITON_DEPTHWISE = "dw_conv_act"  # gpunet.deploy.depthwise's kernel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpunet_d1", help="zoo name or architecture JSON (default gpunet_d1)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--precision", default="fp16", choices=tuple(PRECISIONS), help="default fp16")
    p.add_argument("--backends", default="fused,padded", help="benchmark backends without CUDA graphs")
    p.add_argument("--batch-sizes", default="1,128", help="comma-separated (default 1,128)")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's resolution")
    p.add_argument("--iters", type=int, default=10, help="profiled calls (default 10)")
    p.add_argument("--output", default=None, help="also write the Markdown here")
    return p.parse_args(argv)


def conv_kind(in_channels: int, weight_shape: list[int]) -> str:
    """A convolution's category from its input channels and weight shape [out, in/groups, kh, kw]."""
    _, in_per_group, kh, kw = weight_shape
    if kh == kw == 1:
        return "conv pointwise 1x1"
    if in_per_group == 1 and in_channels > 1:
        return f"conv depthwise {kh}x{kw}"
    return f"conv {'dense' if in_per_group == in_channels else 'grouped'} {kh}x{kw}"


def category(name: str, shapes: list[list[int]]) -> str:
    """The category of a top-level operator `aten::NAME` called with inputs of `shapes`."""
    op = name.removeprefix("aten::")
    if op in ("conv2d", "convolution", "_convolution") and len(shapes) > 1 and len(shapes[0]) == len(shapes[1]) == 4:
        return conv_kind(shapes[0][1], shapes[1])
    if op in ELEMENTWISE:
        return "elementwise (activations, adds, SE gate)"
    if op in POOL:
        return "mean pooling (SE, head)"
    if op in LINEAR:
        return "classifier"
    return f"other ({op})"


def event_time_us(event: Any, on_cuda: bool) -> float:
    """Microseconds an operator event cost: its GPU kernels' time on CUDA, its own CPU time on CPU."""
    return float(event.device_time_total if on_cuda else event.cpu_time_total)


def profile_runner(call: Any, device: torch.device, iters: int) -> dict[str, Any]:
    """Profile `iters` calls: time per category and per kernel (us per call), wall and kernel time per call."""
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    wall_ms = sum(time_call(call, device) for _ in range(iters)) * 1e3 / iters  # outside the profiler
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(iters):
            call()
        synchronize(device)
    per_cat: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    n_kernels = 0
    for e in prof.events():
        if on_cuda and e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] += e.device_time_total / iters
            n_kernels += 1
            if e.name.startswith(TRITON_DEPTHWISE):  # launched by Triton, not under an aten operator
                per_cat["conv depthwise + bias + act (Triton)"] += e.device_time_total / iters
        elif e.device_type == torch.autograd.DeviceType.CPU and e.cpu_parent is None and e.name.startswith("aten::"):
            per_cat[category(e.name, e.input_shapes or [])] += event_time_us(e, on_cuda) / iters
    busy_ms = (sum(kernels.values()) if on_cuda else sum(per_cat.values())) / 1e3
    return {"wall_ms": wall_ms, "busy_ms": busy_ms, "kernels_per_call": n_kernels / iters,
            "categories": dict(per_cat), "kernels": dict(kernels)}


def section(title: str, result: dict[str, Any], on_cuda: bool) -> str:
    """One backend and batch size as Markdown: totals, the categories, and (CUDA) the top kernels."""
    busy, wall = result["busy_ms"], result["wall_ms"]
    what = "GPU kernel time" if on_cuda else "operator CPU time"
    lines = [f"### {title}", "",
             f"wall {wall:.3f} ms/call; {what} {busy:.3f} ms/call ({100 * busy / wall if wall else 0:.0f} % of wall)"
             + (f"; {result['kernels_per_call']:.0f} kernels/call" if on_cuda else ""), "",
             "| category | ms/call | share |", "|---|---|---|"]
    total = sum(result["categories"].values()) or 1.0
    for cat, us in sorted(result["categories"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cat} | {us / 1e3:.3f} | {100 * us / total:.1f} % |")
    if on_cuda:
        lines += ["", "| top kernels | ms/call | share |", "|---|---|---|"]
        k_total = sum(result["kernels"].values()) or 1.0
        for name, us in sorted(result["kernels"].items(), key=lambda kv: -kv[1])[:10]:
            short = name if len(name) <= 90 else name[:87] + "..."
            lines.append(f"| `{short.replace('|', '/')}` | {us / 1e3:.3f} | {100 * us / k_total:.1f} % |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> str:
    """Profile every backend and batch size; the Markdown report."""
    device = resolve_device(args.device)
    (spec,) = resolve_models(args.model, (), args.img_size)
    model = spec.build().eval()
    dtype = PRECISIONS[args.precision]
    out = [f"## Profile: {spec.name}, {spec.img_size} px, {args.precision}, {device}"
           + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), ""]
    with tempfile.TemporaryDirectory(prefix="gpunet-profile-") as tmp, torch.inference_mode(), cudnn_autotune():
        for batch in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
            x = torch.randn(batch, 3, spec.img_size, spec.img_size, device=device, dtype=dtype)
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                try:
                    built = build_runner(backend, BackendRequest(spec, model, args.precision, device, x, Path(tmp)))
                except Skip as e:
                    out.append(f"### {backend}, batch {batch}\n\nskipped: {e}\n")
                    continue
                xb = x.contiguous(memory_format=torch.channels_last) if built.channels_last else x
                for _ in range(3):  # warm-up: autotuning, allocator
                    built.run(xb)
                result = profile_runner(functools.partial(built.run, xb), device, args.iters)
                out.append(section(f"{backend}, batch {batch} ({built.note})", result, device.type == "cuda"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = run(args)
    print(text, flush=True)
    if args.output:
        from gpunet._io import atomic_write_bytes

        atomic_write_bytes(args.output, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
