"""INT8 post-training quantization of an exported ONNX GPUNet with ONNX Runtime, and its accuracy/speed check.

    from gpunet.quantize import quantize_onnx, compare_int8
    quantize_onnx("gpunet_0.onnx", "gpunet_0.int8.onnx", "calib_images/", num_images=128)
    report = compare_int8("gpunet_0.onnx", "gpunet_0.int8.onnx", "imagenet/val", limit=5000)
    print(report.top1_delta, report.speedup)

Static quantization in QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime
fuses into integer kernels, and that TensorRT also reads): int8 weights, per output channel,
symmetric; uint8 activations, per tensor, from MinMax calibration over a folder of images.
uint8 activations x int8 weights ("U8S8") is the combination ONNX Runtime's x86 integer
kernels (MLAS, VPMADDUBSW / AVX512-VNNI / AMX) are built around: an int8-activation model
("S8S8") runs through extra conversions on x86 and is not faster there. `activation_type="int8"`
is available (ARM CPUs and TensorRT prefer symmetric int8 activations).

Calibration images are preprocessed exactly like evaluation (the ONNX file's `gpunet.preprocess`
metadata, written by `gpunet.export.export_onnx`), so quantization ranges match what the model sees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gpunet._io import atomic_write_bytes
from gpunet.export import (
    INPUT_NAME,
    META_PRECISION,
    ExportError,
    _import_onnx,
    read_metadata,
    set_metadata,
)
from gpunet.runtime import RUNTIMES, exported_runner

META_QUANTIZATION = "gpunet.quantization"
DEFAULT_NUM_IMAGES = 128
CALIBRATION_BATCH = 8
ACTIVATION_TYPES = ("uint8", "int8")

Preprocess = Callable[[Image.Image], torch.Tensor]


class QuantizeError(ExportError):
    """Quantization could not run (bad input model, no calibration images, ...)."""


@dataclass
class QuantReport:
    """float32 vs INT8 ONNX models on the same validation images, and their batch-1 latency."""

    top1_fp32: float  # %
    top1_int8: float  # %
    top1_delta: float  # int8 - fp32, percentage points
    latency_ms_fp32: float  # median batch-1 latency in `runtime`
    latency_ms_int8: float
    speedup: float  # latency_ms_fp32 / latency_ms_int8
    images: int
    agreement: float = 0.0  # % of images where both models predict the same class
    threads: int | None = None
    latency_batch: int = 1
    size_bytes_fp32: int = 0
    size_bytes_int8: int = 0
    data_dir: str = ""
    failed: list[str] = field(default_factory=list)
    runtime: str = "onnxruntime"  # what ran both models (RUNTIMES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- input description

@dataclass(frozen=True)
class _InputSpec:
    name: str
    batch: int | None  # fixed batch, or None when dynamic
    height: int | None
    width: int | None
    classes: int | None  # the (N, classes) output's class count, when fixed


def _input_spec(path: str | os.PathLike[str]) -> _InputSpec:
    onnx = _import_onnx()
    proto = onnx.load(os.fspath(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {len(inputs)}: "
                            f"{', '.join(i.name for i in inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise QuantizeError(f"{path}: the input {inputs[0].name!r} has rank {len(dims)}; an (N, 3, H, W) image "
                            "input is expected")

    def fixed(d: Any) -> int | None:
        return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None

    out = proto.graph.output[0].type.tensor_type.shape.dim
    classes = fixed(out[1]) if len(out) == 2 else None
    return _InputSpec(inputs[0].name, fixed(dims[0]), fixed(dims[2]), fixed(dims[3]), classes)


def onnx_preprocess(path: str | os.PathLike[str], img_size: int | None = None) -> Preprocess:
    """The evaluation transform of an exported ONNX model (its `gpunet.preprocess` metadata).

    Files without gpunet metadata get ImageNet mean/std, bicubic resize, crop_pct 1.0, at the
    input's fixed size or `img_size`.
    """
    from gpunet.export import META_PREPROCESS
    from gpunet.transforms import eval_transform
    from gpunet.zoo import IMAGENET_MEAN, IMAGENET_STD

    spec = _input_spec(path)
    meta = read_metadata(path)
    cfg = meta.get(META_PREPROCESS)
    if not isinstance(cfg, dict):
        cfg = {"input_size": [3, spec.height or img_size or 224, spec.width or img_size or 224], "crop_pct": 1.0,
               "interpolation": "bicubic", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    size = _resolve_size(path, spec, img_size, int(cfg["input_size"][-1]))
    return eval_transform(types.SimpleNamespace(pretrained_cfg=cfg), img_size=size)


def _resolve_size(path: str | os.PathLike[str], spec: _InputSpec, img_size: int | None, default: int) -> int:
    if spec.height is not None and spec.width is not None:
        if spec.height != spec.width:
            raise QuantizeError(f"{path}: non-square input {spec.height}x{spec.width} is not supported")
        if img_size is not None and img_size != spec.height:
            raise QuantizeError(f"{path}: the model takes {spec.height} px inputs; img_size {img_size} does not fit "
                                "(re-export with --img-size to change it)")
        return spec.height
    return int(img_size or default)


# ---------------------------------------------------------------------------- calibration

def calibration_images(folder: str | os.PathLike[str], num_images: int) -> list[str]:
    """Up to `num_images` image paths under `folder` (recursive), spread evenly over the sorted list."""
    from gpunet.data import expand_inputs

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{os.fspath(folder)}: no such calibration folder")
    paths, errors = expand_inputs([folder])
    if not paths:
        raise QuantizeError(f"{os.fspath(folder)}: no calibration images"
                            + (f" ({errors[0].message})" if errors else ""))
    if num_images < 1:
        raise QuantizeError(f"num_images must be at least 1, got {num_images}")
    if num_images < len(paths):
        paths = [paths[(i * len(paths)) // num_images] for i in range(num_images)]
    return paths


class ImageCalibrationReader:
    """ONNX Runtime CalibrationDataReader over image files, preprocessed like evaluation.

    Duck-typed (`get_next`), which onnxruntime.quantization.CalibrationDataReader accepts as a
    subclass, so importing this module does not import ONNX Runtime.
    """

    def __init__(self, paths: list[str], preprocess: Preprocess, input_name: str = INPUT_NAME,
                 batch: int | None = None, batch_size: int = CALIBRATION_BATCH) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.input_name = input_name
        self.batch = batch  # a fixed model batch size, or None for dynamic
        self.batch_size = batch or batch_size
        self.failed: list[str] = []
        self.used = 0
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from gpunet.data import load_image

        pending: list[np.ndarray] = []
        for p in self.paths:
            image, error = load_image(p)
            if image is None:
                self.failed.append(f"{p}: {error}")
                continue
            pending.append(self.preprocess(image).numpy().astype(np.float32))
            self.used += 1
            if len(pending) == self.batch_size:
                yield {self.input_name: np.stack(pending)}
                pending = []
        if pending:
            if self.batch is not None:  # a fixed-batch model: repeat images to fill the batch
                pending += [pending[i % len(pending)] for i in range(self.batch - len(pending))]
            yield {self.input_name: np.stack(pending)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._batches()

    def rewind(self) -> None:
        self._iter = None
        self.failed, self.used = [], 0


def _activation_quant_type(activation_type: str) -> Any:
    from onnxruntime.quantization import QuantType

    if activation_type not in ACTIVATION_TYPES:
        raise QuantizeError(f"activation_type must be one of {', '.join(ACTIVATION_TYPES)}, got {activation_type!r}")
    return QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8


def quantize_onnx(fp32_onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                  calibration_dir: str | os.PathLike[str], *, num_images: int = DEFAULT_NUM_IMAGES,
                  per_channel: bool = True, img_size: int | None = None, preprocess: Preprocess | None = None,
                  activation_type: str = "uint8", calibrate_method: str = "minmax") -> Path:
    """Static INT8 quantization (QDQ) of a float32 ONNX classifier, calibrated on images in `calibration_dir`.

    Runs `quant_pre_process` (symbolic shape inference + ORT graph optimization) first, then
    `quantize_static` with int8 per-channel weights and `activation_type` activations (see the
    module docstring). `preprocess` defaults to the model's evaluation transform from its ONNX
    metadata. The gpunet metadata is carried over to the INT8 file. Returns `out_path`.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx = _import_onnx()
    src = os.fspath(fp32_onnx_path)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such ONNX file")
    meta = read_metadata(src)
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise QuantizeError(f"{src} is a {meta[META_PRECISION]} export; quantize a float32 export (gpunet export "
                            "without --fp16)")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise QuantizeError(f"calibrate_method must be one of {', '.join(methods)}, got {calibrate_method!r}")
    act_type = _activation_quant_type(activation_type)
    spec = _input_spec(src)
    paths = calibration_images(calibration_dir, num_images)
    transform = preprocess or onnx_preprocess(src, img_size)
    reader = ImageCalibrationReader(paths, transform, spec.name, spec.batch)
    with tempfile.TemporaryDirectory(prefix="gpunet-quant-") as tmp:
        pre = os.path.join(tmp, "model.pre.onnx")
        quant = os.path.join(tmp, "model.int8.onnx")
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=False)
        except Exception as exc:  # shape inference fails on some graphs; optimize-only still helps
            try:
                quant_pre_process(src, pre, skip_symbolic_shape=True)
            except Exception:
                raise QuantizeError(f"{src}: ONNX Runtime's quantization pre-processing failed: {exc}") from exc
        try:
            quantize_static(pre, quant, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=False, activation_type=act_type, weight_type=QuantType.QInt8,
                            calibrate_method=methods[calibrate_method],
                            extra_options={"ActivationSymmetric": activation_type == "int8",
                                           "WeightSymmetric": True})
        except (QuantizeError, FileNotFoundError):
            raise
        except Exception as exc:  # onnxruntime's own error types
            if reader.used == 0:
                raise QuantizeError(f"{os.fspath(calibration_dir)}: none of the {len(paths)} calibration images "
                                    "could be read: " + "; ".join(reader.failed[:3])) from exc
            raise QuantizeError(f"{src}: ONNX Runtime's quantize_static failed: {type(exc).__name__}: {exc}") \
                from exc
        if reader.used == 0:
            raise QuantizeError(f"{os.fspath(calibration_dir)}: none of the {len(paths)} calibration images could be "
                                "read: " + "; ".join(reader.failed[:3]))
        proto = onnx.load(quant)
    details = {"format": "QDQ", "weights": "int8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
               "activations": f"{activation_type} per-tensor", "calibration": calibrate_method,
               "calibration_images": reader.used, "calibration_dir": os.path.abspath(calibration_dir)}
    src_meta = {p.key: p.value for p in onnx.load(src, load_external_data=False).metadata_props}
    set_metadata(proto, {**src_meta, META_PRECISION: "int8", META_QUANTIZATION: json.dumps(details)})
    atomic_write_bytes(out_path, proto.SerializeToString())
    return Path(out_path)


# ---------------------------------------------------------------------------- comparison

def _median_latency_ms(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def compare_int8(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str],
                 val_dir: str | os.PathLike[str], *, limit: int | None = None, threads: int | None = None,
                 batch_size: int = 16, warmup: int = 5, runs: int = 30,
                 preprocess: Preprocess | None = None, runtime: str = "onnxruntime") -> QuantReport:
    """Top-1 of both models on an ImageFolder (`val_dir/<class>/<image>`), and their median batch-1 latency.

    Class mapping as `gpunet.data.ImageFolder` (ImageNet synset folders -> the 1000 ImageNet
    indices; other names sorted, 0..K-1, which needs a K-class model). Both models run in
    `runtime` ("onnxruntime" or "openvino", which runs the same QDQ file with its own INT8
    kernels) on the CPU with `threads` threads (the runtime's default when None). Latency: one
    image, `warmup` untimed runs then the median of `runs`.
    """
    from gpunet.data import ImageFolder, collate

    fp32_path, int8_path = os.fspath(fp32_path), os.fspath(int8_path)
    transform = preprocess or onnx_preprocess(fp32_path)
    dataset = ImageFolder(val_dir, transform, limit=limit)
    if runtime not in RUNTIMES:
        raise QuantizeError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    spec = _input_spec(fp32_path)
    needed = 1000 if dataset.imagenet else dataset.num_classes
    if spec.classes is not None and spec.classes != needed:
        kind = "ImageNet synset folders" if dataset.imagenet else f"{dataset.num_classes} class folders"
        raise QuantizeError(f"{dataset.root}: {kind} need a model with {needed} classes, but {fp32_path} has "
                            f"{spec.classes}")
    runners = {key: exported_runner(path, runtime, threads, cpu=True)[0]
               for key, path in (("fp32", fp32_path), ("int8", int8_path))}
    bs = spec.batch or max(1, batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=False, num_workers=0, collate_fn=collate)
    correct = {"fp32": 0, "int8": 0}
    agree = count = 0
    failed: list[str] = []
    first: np.ndarray | None = None
    for batch in loader:
        failed += [f"{dataset.samples[i][0]}: {m}" for i, m in batch["errors"]]
        if batch["input"] is None:
            continue
        x = batch["input"].numpy().astype(np.float32)
        n = x.shape[0]
        if first is None:
            first = x[:1]
        if spec.batch is not None and n < spec.batch:
            x = np.concatenate([x, np.repeat(x[-1:], spec.batch - n, axis=0)])
        target = batch["target"].numpy()
        preds = {}
        for key, run in runners.items():
            logits = run(x)[:n]
            preds[key] = logits.argmax(axis=1)
            correct[key] += int((preds[key] == target).sum())
        agree += int((preds["fp32"] == preds["int8"]).sum())
        count += n
    if count == 0 or first is None:
        raise QuantizeError(f"{dataset.root}: none of the {len(dataset)} images could be read: "
                            + "; ".join(failed[:3]))
    lat_x = first if spec.batch is None else np.repeat(first, spec.batch, axis=0)
    lat = {k: _median_latency_ms(run, lat_x, warmup, runs) for k, run in runners.items()}
    top1 = {k: 100.0 * v / count for k, v in correct.items()}
    return QuantReport(top1_fp32=top1["fp32"], top1_int8=top1["int8"], top1_delta=top1["int8"] - top1["fp32"],
                       latency_ms_fp32=lat["fp32"], latency_ms_int8=lat["int8"],
                       speedup=lat["fp32"] / lat["int8"] if lat["int8"] > 0 else float("inf"), images=count,
                       agreement=100.0 * agree / count, threads=threads, latency_batch=int(lat_x.shape[0]),
                       size_bytes_fp32=os.path.getsize(fp32_path), size_bytes_int8=os.path.getsize(int8_path),
                       data_dir=dataset.root, failed=failed, runtime=runtime)


def format_report(r: QuantReport) -> str:
    """Human-readable lines for a QuantReport."""
    mb = 1e6
    runtime = RUNTIMES.get(r.runtime, r.runtime)
    threads = "runtime default" if r.threads is None else str(r.threads)
    return "\n".join([
        f"INT8 vs FP32 on {r.data_dir}: {r.images} images",
        f"  top1        fp32 {r.top1_fp32:.2f} %   int8 {r.top1_int8:.2f} %   delta {r.top1_delta:+.2f} points",
        f"  agreement   {r.agreement:.2f} % of images get the same top-1 class",
        f"  latency     fp32 {r.latency_ms_fp32:.2f} ms   int8 {r.latency_ms_int8:.2f} ms   "
        f"speed-up x{r.speedup:.2f}   (batch {r.latency_batch}, median, {runtime} CPU, threads {threads})",
        f"  size        fp32 {r.size_bytes_fp32 / mb:.1f} MB   int8 {r.size_bytes_int8 / mb:.1f} MB",
    ])


# ---------------------------------------------------------------------------- CLI

def add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `gpunet quantize MODEL_OR_ONNX --calibration DIR [--val DIR] -o OUT` (see `run_quantize`)."""
    p.add_argument("model", metavar="MODEL_OR_ONNX",
                   help="a float32 .onnx exported by `gpunet export`, or a model (zoo name, JSON, .safetensors) "
                        "to export first")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", "-w", metavar="PATH_OR_URL", help="checkpoint for MODEL (not for .onnx)")
    w.add_argument("--pretrained", action="store_true", help="NVIDIA's NGC checkpoint for MODEL")
    w.add_argument("--random-weights", action="store_true",
                   help="quantize an untrained model (smoke tests only: accuracies are meaningless)")
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
    p.add_argument("--calibrate-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--runtime", choices=tuple(RUNTIMES), default="onnxruntime",
                   help="--val: what runs both models (default onnxruntime; openvino runs the same INT8 file "
                        "with OpenVINO's kernels: pip install 'gpunet[openvino]')")
    p.add_argument("--threads", type=int, help="--val: CPU threads of the runtime (default: its own)")
    p.add_argument("--fp32-output", metavar="PATH", help="keep the float32 ONNX exported from MODEL here")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="the INT8 .onnx to write")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_quantize(args: argparse.Namespace) -> int:
    """`gpunet quantize`: export (when given a model), quantize, and compare on --val."""
    from gpunet.export import export_onnx

    if not os.path.isdir(args.calibration):
        raise FileNotFoundError(f"{args.calibration}: no such calibration folder")
    if args.val is not None and not os.path.isdir(args.val):
        raise FileNotFoundError(f"{args.val}: no such validation folder")
    is_onnx = args.model.endswith(".onnx")
    with tempfile.TemporaryDirectory(prefix="gpunet-quantize-") as tmp:
        if is_onnx:
            if not os.path.isfile(args.model):
                raise FileNotFoundError(f"{args.model}: no such ONNX file")
            if args.weights or args.pretrained or args.random_weights:
                raise QuantizeError(f"{args.model} is an ONNX file with its weights; --weights/--pretrained/"
                                    "--random-weights apply to a model name only")
            fp32 = args.model
        else:
            from gpunet.classify import load_model
            from gpunet.data import ImageFolder

            num_classes = None
            if args.val is not None:
                val = ImageFolder(args.val)
                num_classes = None if val.imagenet else val.num_classes
            model = load_model(args.model, weights=args.weights, pretrained=args.pretrained,
                               num_classes=num_classes, random_weights=args.random_weights,
                               progress=sys.stderr.isatty())
            if args.random_weights and args.weights is None and not args.pretrained:
                _err(f"gpunet: WARNING: --random-weights: {args.model} has untrained, random weights; accuracies "
                     "are MEANINGLESS (smoke test only).")
            fp32 = args.fp32_output or os.path.join(tmp, "model.fp32.onnx")
            r = export_onnx(model, fp32, img_size=args.img_size)
            kept = f"wrote {fp32} " if args.fp32_output else "exported "
            print(f"{kept}float32 ONNX ({r.size_bytes / 1e6:.1f} MB, {r.img_size} px); ONNX Runtime vs PyTorch max "
                  f"abs diff {r.max_abs_diff:.3g}")
        out = quantize_onnx(fp32, args.output, args.calibration, num_images=args.num_images,
                            per_channel=not args.per_tensor, img_size=args.img_size if is_onnx else None,
                            activation_type=args.activation_type, calibrate_method=args.calibrate_method)
        info = json.loads(read_metadata(out).get(META_QUANTIZATION) or "{}")
        print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB; INT8 QDQ, {info.get('weights')} weights, "
              f"{info.get('activations')} activations, {info.get('calibration_images')} calibration images)")
        if args.val is not None:
            report = compare_int8(fp32, out, args.val, limit=args.limit, threads=args.threads, runtime=args.runtime)
            print(format_report(report))
            for line in report.failed:
                _err(f"gpunet: skipped unreadable image {line}")
    return 0
