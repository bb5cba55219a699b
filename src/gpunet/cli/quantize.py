"""`gpunet quantize`: export a model (or take an ONNX file), quantize it to INT8, compare both on --val."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

from gpunet.cli.common import CLIError, add_weights_arguments, check_options, check_output, err, progress

DESCRIPTION = (
    "Static INT8 quantization (QDQ, per-channel weights) calibrated on a folder of "
    "images; with --val, reports the top-1 difference and the speed-up vs fp32."
)
# gpunet.deploy.quantize's DEFAULT_NUM_IMAGES, ACTIVATION_TYPES, CALIBRATE_METHODS and the runtimes of
# gpunet.deploy.runtime (not imported here: `gpunet --help` stays light; a test checks they agree)
DEFAULT_NUM_IMAGES = 128
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
RUNTIMES = ("onnxruntime", "openvino")


def register(sub: Any) -> None:
    p = sub.add_parser("quantize", help="INT8 ONNX (ONNX Runtime static quantization, calibrated on images)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `gpunet quantize MODEL_OR_ONNX --calibration DIR [--val DIR] -o OUT`."""
    p.add_argument("model", metavar="MODEL_OR_ONNX",
                   help="a float32 .onnx exported by `gpunet export`, or a model (zoo name, JSON, .safetensors) "
                        "to export first")
    add_weights_arguments(p, weights_help="checkpoint for MODEL (not for .onnx)",
                          pretrained_help="NVIDIA's NGC checkpoint for MODEL",
                          random_help="quantize an untrained model (smoke tests only: accuracies are meaningless)")
    p.add_argument("--calibration", required=True, metavar="DIR",
                   help="folder of calibration images (searched recursively; a few hundred training images)")
    p.add_argument("--val", metavar="DIR", help="ImageFolder to compare top-1 and latency of fp32 and int8")
    p.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                   help=f"calibration images to use, spread over DIR (default {DEFAULT_NUM_IMAGES})")
    p.add_argument("--limit", type=int, help="--val: evaluate N images, spread evenly")
    p.add_argument("--img-size", type=int, help="input resolution when exporting MODEL (default: the model's)")
    p.add_argument("--activation-type", choices=ACTIVATION_TYPES, default="uint8",
                   help="activation type (default uint8: fastest with ONNX Runtime on x86)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default: per channel)")
    p.add_argument("--calibrate-method", choices=CALIBRATE_METHODS, default="minmax")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="--val: what runs both models (default onnxruntime; openvino runs the same INT8 file "
                        "with OpenVINO's kernels: pip install 'gpunet[openvino]')")
    p.add_argument("--threads", type=int, help="--val: CPU threads of the runtime (default: its own)")
    p.add_argument("--fp32-output", metavar="PATH", help="keep the float32 ONNX exported from MODEL here")
    p.add_argument("--output", "-o", required=True, metavar="OUT",
                   help="the INT8 .onnx to write (never MODEL_OR_ONNX itself)")


def run(args: argparse.Namespace) -> int:
    """Export (when given a model), quantize, and compare on --val."""
    from gpunet._checks import naming_errors
    from gpunet.deploy.metadata import META_QUANTIZATION, read_metadata
    from gpunet.deploy.quantize import compare_int8, format_report, quantize_onnx

    check_options(args)
    if not os.path.isdir(args.calibration):
        raise FileNotFoundError(f"{args.calibration}: no such calibration folder")
    if args.val is not None and not os.path.isdir(args.val):
        raise FileNotFoundError(f"{args.val}: no such validation folder")
    _check_outputs(args)
    is_onnx = args.model.endswith(".onnx")
    with tempfile.TemporaryDirectory(prefix="gpunet-quantize-") as tmp:
        fp32 = _given_onnx(args) if is_onnx else _export_fp32(args, tmp)
        with naming_errors(args.output):
            out = quantize_onnx(fp32, args.output, args.calibration, num_images=args.num_images,
                                per_channel=not args.per_tensor, img_size=args.img_size if is_onnx else None,
                                activation_type=args.activation_type, calibrate_method=args.calibrate_method)
        info = json.loads(read_metadata(out).get(META_QUANTIZATION) or "{}")
        print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB; INT8 QDQ, {info.get('weights')} weights, "
              f"{info.get('activations')} activations, {info.get('calibration_images')} calibration images"
              + (f", {info['calibration_skipped']} unreadable skipped" if info.get("calibration_skipped") else "")
              + ")")
        if args.val is not None:
            report = compare_int8(fp32, out, args.val, limit=args.limit, threads=args.threads, runtime=args.runtime)
            print(format_report(report))
            for line in report.failed:
                err(f"gpunet: skipped unreadable image {line}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """-o and --fp32-output: writable files, neither the input nor each other (checked before any work)."""
    check_output(args.output, "-o", inputs=(args.model, args.weights))
    if args.fp32_output:
        check_output(args.fp32_output, "--fp32-output", inputs=(args.model, args.weights))
        if os.path.abspath(args.fp32_output) == os.path.abspath(args.output):
            raise CLIError(f"--fp32-output {args.fp32_output} is also -o: the float32 and INT8 models need two files")


def _given_onnx(args: argparse.Namespace) -> str:
    """MODEL_OR_ONNX when it is an ONNX file (which carries its own weights)."""
    from gpunet.errors import QuantizeError

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"{args.model}: no such ONNX file")
    if args.weights or args.pretrained or args.random_weights:
        raise QuantizeError(f"{args.model} is an ONNX file with its weights; --weights/--pretrained/"
                            "--random-weights apply to a model name only")
    return str(args.model)


def _export_fp32(args: argparse.Namespace, tmp: str) -> str:
    """Load MODEL (its classes follow --val's folders) and export it to float32 ONNX; the file's path."""
    from gpunet.classify import load_model
    from gpunet.data import ImageFolder
    from gpunet.deploy.onnx import export_onnx

    num_classes = None
    if args.val is not None and args.random_weights:  # an untrained model gets --val's classes
        num_classes = ImageFolder(args.val).num_classes
    model = load_model(args.model, weights=args.weights, pretrained=args.pretrained, num_classes=num_classes,
                       random_weights=args.random_weights, progress=progress())
    if args.random_weights:
        err(f"gpunet: WARNING: --random-weights: {args.model} has untrained, random weights; accuracies "
            "are MEANINGLESS (smoke test only).")
    fp32 = args.fp32_output or os.path.join(tmp, "model.fp32.onnx")
    r = export_onnx(model, fp32, img_size=args.img_size)
    kept = f"wrote {fp32} " if args.fp32_output else "exported "
    print(f"{kept}float32 ONNX ({r.size_bytes / 1e6:.1f} MB, {r.img_size} px); ONNX Runtime vs PyTorch max "
          f"abs diff {r.max_abs_diff:.3g}")
    return str(fp32)
