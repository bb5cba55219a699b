"""`gpunet export`: load a model, write it in one deployment format, print what was written and its parity check."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpunet.cli.common import add_weights_arguments, check_options, check_output, err, progress

if TYPE_CHECKING:
    from torch import nn

    from gpunet.deploy.common import ExportReport

DESCRIPTION = (
    "Export a GPUNet (BatchNorm folded) and check it against PyTorch: ONNX is run in "
    "ONNX Runtime and the max abs difference printed."
)
FORMATS = ("onnx", "openvino", "torchscript", "tensorrt", "triton")
DEFAULT_OPSET = 18  # gpunet.deploy.onnx.DEFAULT_OPSET (not imported here: `gpunet --help` stays light)
MIN_IMG_SIZE = 32  # gpunet.deploy.common.MIN_IMG_SIZE
ENGINES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "torchscript": "TorchScript"}  # what ran the check


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export to ONNX, TorchScript, a Triton repository or a TensorRT engine",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `gpunet export MODEL ... -o OUT`."""
    p.add_argument("model", metavar="MODEL",
                   help="zoo name (see `gpunet list`), NVIDIA-format JSON or gpunet .safetensors")
    add_weights_arguments(p, pretrained_help="NVIDIA's NGC checkpoint (downloaded once)",
                          random_help="export an untrained model (smoke tests only: its outputs are meaningless)")
    p.add_argument("--format", "-f", choices=FORMATS, default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin; the fastest CPU runtime), torchscript, tensorrt "
                        "(engine; needs TensorRT and a GPU), or triton (a model repository entry: OUT is the "
                        "repository folder)")
    p.add_argument("--output", "-o", required=True, metavar="OUT",
                   help="output file (.onnx, .xml, .pt, .plan/.engine), or the repository folder for --format triton")
    p.add_argument("--batch", default="dynamic",
                   help="'dynamic' (default) or a fixed batch size N; for tensorrt the largest batch (default 1)")
    p.add_argument("--fp16", action="store_true",
                   help="float16 compute (ONNX/Triton: inputs and outputs stay float32; TensorRT: FP16 engine; "
                        "OpenVINO: float16 weights, computed in the runtime's precision)")
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--img-size", type=int, help=f"input resolution, {MIN_IMG_SIZE} px or more (default: the model's)")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (default: folded into the convs)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime / OpenVINO / TorchScript parity check")
    p.add_argument("--name", help="Triton model name (default: the zoo name)")
    p.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size (default 32)")
    p.add_argument("--tensorrt-accelerator", action="store_true",
                   help="Triton: run the ONNX model through TensorRT inside the onnxruntime backend")


def run(args: argparse.Namespace) -> int:
    """Build the model, write the chosen format, print what was written."""
    from gpunet._checks import naming_errors
    from gpunet.classify import load_model

    check_options(args)
    check_output(args.output, "-o", inputs=(args.model, args.weights), folder=args.format == "triton")
    _check_packages(args.format)  # fail before loading weights
    model = load_model(args.model, weights=args.weights, pretrained=args.pretrained,
                       random_weights=args.random_weights, progress=progress())
    if args.random_weights:
        err(f"gpunet: WARNING: --random-weights: {args.model} has untrained, random weights; the exported "
            "model's outputs are MEANINGLESS (smoke test only).")
    with naming_errors(args.output):
        _WRITERS[args.format](model, args)
    return 0


def _check_packages(fmt: str) -> None:
    """The optional package a format needs, imported now (its error says what to install)."""
    if fmt == "tensorrt":
        from gpunet.deploy.tensorrt import import_tensorrt

        import_tensorrt()
    elif fmt == "openvino":
        from gpunet.deploy.packages import import_openvino

        import_openvino()


def _onnx(model: nn.Module, args: argparse.Namespace) -> None:
    from gpunet.deploy.onnx import export_onnx

    print_report(export_onnx(model, args.output, img_size=args.img_size, batch=args.batch, opset=args.opset,
                             fp16=args.fp16, fuse=not args.no_fuse, check=not args.no_check))


def _openvino(model: nn.Module, args: argparse.Namespace) -> None:
    from gpunet.deploy.openvino import export_openvino

    print_report(export_openvino(model, args.output, img_size=args.img_size, batch=args.batch, opset=args.opset,
                                 fp16=args.fp16, fuse=not args.no_fuse, check=not args.no_check))


def _torchscript(model: nn.Module, args: argparse.Namespace) -> None:
    from gpunet.deploy.torchscript import export_torchscript

    if args.batch != "dynamic" or args.fp16 or args.opset:
        err("gpunet: note: --batch, --fp16 and --opset do not apply to --format torchscript (ignored)")
    print_report(export_torchscript(model, args.output, img_size=args.img_size, fuse=not args.no_fuse,
                                    check=not args.no_check))


def _triton(model: nn.Module, args: argparse.Namespace) -> None:
    from gpunet.deploy.triton import export_triton_report
    from gpunet.errors import ExportError

    if args.batch != "dynamic":
        raise ExportError("--format triton always exports a dynamic batch axis; set --max-batch-size instead "
                          "of --batch")
    folder, report = export_triton_report(
        model, args.output, name=args.name, max_batch_size=args.max_batch_size, fp16=args.fp16,
        tensorrt_accelerator=args.tensorrt_accelerator, img_size=args.img_size, fuse=not args.no_fuse,
        check=not args.no_check, opset=args.opset)
    print_report(report)
    print(f"serve with: tritonserver --model-repository {os.path.abspath(args.output)}  (model {folder.name!r})")


def _tensorrt(model: nn.Module, args: argparse.Namespace) -> None:
    from gpunet.deploy.common import parse_batch
    from gpunet.deploy.tensorrt import export_tensorrt

    batch = parse_batch(args.batch) or 1  # 'dynamic': an engine for batch 1
    print_report(export_tensorrt(model, args.output, img_size=args.img_size, fp16=args.fp16, batch=batch,
                                 opset=args.opset))


_WRITERS: dict[str, Callable[[nn.Module, argparse.Namespace], None]] = {
    "onnx": _onnx, "openvino": _openvino, "torchscript": _torchscript, "triton": _triton, "tensorrt": _tensorrt,
}


def _human(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def print_report(r: ExportReport) -> None:
    """What an ExportReport says, as `gpunet export` prints it."""
    desc = f"{r.format}, {r.img_size} px, batch {r.batch}"
    if r.opset is not None and r.format in ("onnx", "openvino"):
        desc += f", opset {r.opset}"
    if r.fp16:
        desc += ", fp16"
    if not r.fused:
        desc += ", unfused"
    print(f"wrote {r.path} ({_human(r.size_bytes)}; {desc})")
    for extra in r.extra_files:
        print(f"wrote {extra}")
    if r.max_abs_diff is not None:
        print(f"{ENGINES[r.format]} vs PyTorch: max abs diff {r.max_abs_diff:.3g} (tolerance {r.tolerance:.3g}, "
              f"batch sizes {', '.join(str(b) for b in r.batch_sizes)})")
