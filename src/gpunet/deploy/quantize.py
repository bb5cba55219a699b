"""INT8 post-training quantization of an exported ONNX GPUNet with ONNX Runtime, and its accuracy/speed check.

    from gpunet.deploy import quantize_onnx, compare_int8
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
metadata, written by `gpunet.deploy.export_onnx`), so quantization ranges match what the model sees.
Unreadable calibration images are skipped, logged (which, and why) and counted in the INT8
file's `gpunet.quantization` metadata. The INT8 file never replaces the float32 one it is made from.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gpunet._io import atomic_write_bytes
from gpunet.data import ImageFolder, collate, expand_inputs, load_image
from gpunet.deploy.common import INPUT_NAME, check_export_path
from gpunet.deploy.metadata import (
    META_LABEL_NAMES,
    META_PRECISION,
    META_PREPROCESS,
    META_QUANTIZATION,
    read_metadata,
    set_metadata,
)
from gpunet.deploy.packages import import_onnx
from gpunet.deploy.runtime import RUNTIMES, Runner, open_runner, run_padded
from gpunet.errors import QuantizeError
from gpunet.metrics import correct_topk
from gpunet.timing import median_time
from gpunet.transforms import eval_transform
from gpunet.zoo import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("gpunet")

DEFAULT_NUM_IMAGES = 128
CALIBRATION_BATCH = 8
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")

Preprocess = Callable[[Image.Image], torch.Tensor]


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


def _fixed(dim: Any) -> int | None:
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _input_spec(path: str | os.PathLike[str]) -> _InputSpec:
    """The image input (name, fixed sizes) and the class count of an ONNX classifier, from one parse."""
    proto = import_onnx().load(os.fspath(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {len(inputs)}: "
                            f"{', '.join(i.name for i in inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise QuantizeError(f"{path}: the input {inputs[0].name!r} has rank {len(dims)}; an (N, 3, H, W) image "
                            "input is expected")
    out = proto.graph.output[0].type.tensor_type.shape.dim
    classes = _fixed(out[1]) if len(out) == 2 else None
    return _InputSpec(inputs[0].name, _fixed(dims[0]), _fixed(dims[2]), _fixed(dims[3]), classes)


def onnx_preprocess(path: str | os.PathLike[str], img_size: int | None = None) -> Preprocess:
    """The evaluation transform of an exported ONNX model (its `gpunet.preprocess` metadata).

    Files without gpunet metadata get ImageNet mean/std, bicubic resize, crop_pct 1.0, at the
    input's fixed size or `img_size`.
    """
    spec = _input_spec(path)
    cfg = read_metadata(path).get(META_PREPROCESS)
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

    def none_read(self, folder: str | os.PathLike[str]) -> QuantizeError:
        """The error for a calibration run in which no image could be read."""
        return QuantizeError(f"{os.fspath(folder)}: none of the {len(self.paths)} calibration images could be "
                             "read: " + "; ".join(self.failed[:3]))


# ---------------------------------------------------------------------------- quantization

def _check_paths(src: str, out: str) -> None:
    """The source is a float32 ONNX file; the output is a file path that is not the source."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such ONNX file")
    if os.path.isdir(out):
        raise QuantizeError(f"{out}: is a folder; expected the path of the INT8 .onnx file to write")
    if os.path.exists(out) and os.path.samefile(src, out):
        raise QuantizeError(f"{out} is the float32 model being quantized; write the INT8 model to another file "
                            "(quantizing never replaces its input)")
    check_export_path(out, error=QuantizeError)
    meta = read_metadata(src)
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise QuantizeError(f"{src} is a {meta[META_PRECISION]} export; quantize a float32 export (gpunet export "
                            "without --fp16)")


def _static_options(activation_type: str, calibrate_method: str) -> tuple[Any, Any]:
    """(ONNX Runtime's activation QuantType, its CalibrationMethod) for our names; QuantizeError for others."""
    from onnxruntime.quantization import CalibrationMethod, QuantType

    if calibrate_method not in CALIBRATE_METHODS:
        raise QuantizeError(f"calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}, got {calibrate_method!r}")
    if activation_type not in ACTIVATION_TYPES:
        raise QuantizeError(f"activation_type must be one of {', '.join(ACTIVATION_TYPES)}, got {activation_type!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    return (QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8), methods[calibrate_method]


def _pre_process(src: str, out: str) -> None:
    """ORT's quant_pre_process (symbolic shape inference + graph optimization); optimize-only if shapes fail."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, out, skip_symbolic_shape=False)
    except Exception as exc:  # shape inference fails on some graphs; optimize-only still helps
        try:
            quant_pre_process(src, out, skip_symbolic_shape=True)
        except Exception:
            raise QuantizeError(f"{src}: ONNX Runtime's quantization pre-processing failed: {exc}") from exc


def _quantize_static(src: str, pre: str, out: str, reader: ImageCalibrationReader, calibration_dir: str, *,
                     per_channel: bool, activation_type: str, calibrate_method: str) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    act_type, method = _static_options(activation_type, calibrate_method)
    try:
        quantize_static(pre, out, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=False, activation_type=act_type, weight_type=QuantType.QInt8,
                        calibrate_method=method,
                        extra_options={"ActivationSymmetric": activation_type == "int8", "WeightSymmetric": True})
    except (QuantizeError, FileNotFoundError):
        raise
    except Exception as exc:  # onnxruntime's own error types
        if reader.used == 0:
            raise reader.none_read(calibration_dir) from exc
        raise QuantizeError(f"{src}: ONNX Runtime's quantize_static failed: {type(exc).__name__}: {exc}") from exc
    if reader.used == 0:
        raise reader.none_read(calibration_dir)


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
    onnx = import_onnx()
    src = os.fspath(fp32_onnx_path)
    _check_paths(src, os.fspath(out_path))
    _static_options(activation_type, calibrate_method)  # bad names fail before any work
    spec = _input_spec(src)
    paths = calibration_images(calibration_dir, num_images)
    reader = ImageCalibrationReader(paths, preprocess or onnx_preprocess(src, img_size), spec.name, spec.batch)
    with tempfile.TemporaryDirectory(prefix="gpunet-quant-") as tmp:
        pre, quant = os.path.join(tmp, "model.pre.onnx"), os.path.join(tmp, "model.int8.onnx")
        _pre_process(src, pre)
        _quantize_static(src, pre, quant, reader, os.fspath(calibration_dir), per_channel=per_channel,
                         activation_type=activation_type, calibrate_method=calibrate_method)
        proto = onnx.load(quant)
    details = {"format": "QDQ", "weights": "int8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
               "activations": f"{activation_type} per-tensor", "calibration": calibrate_method,
               "calibration_images": reader.used, "calibration_skipped": len(reader.failed),
               "calibration_dir": os.path.abspath(calibration_dir)}
    _log_skipped(reader)
    src_meta = {p.key: p.value for p in onnx.load(src, load_external_data=False).metadata_props}
    set_metadata(proto, {**src_meta, META_PRECISION: "int8", META_QUANTIZATION: json.dumps(details)})
    atomic_write_bytes(out_path, proto.SerializeToString())
    return Path(out_path)


def _log_skipped(reader: ImageCalibrationReader) -> None:
    """Say how many calibration images could not be read, and which."""
    if reader.failed:
        log.warning("gpunet: %d of %d calibration images could not be read and were skipped:\n  %s",
                    len(reader.failed), len(reader.paths), "\n  ".join(reader.failed))


# ---------------------------------------------------------------------------- comparison

@dataclass
class _Tally:
    """Running counts of `_score`."""

    correct: dict[str, int] = field(default_factory=dict)
    agree: int = 0
    count: int = 0
    failed: list[str] = field(default_factory=list)
    first: np.ndarray | None = None  # the first readable image, (1, 3, R, R): the latency input


def _score(runners: dict[str, Runner], dataset: ImageFolder, batch_size: int) -> _Tally:
    """Top-1 hits of the "fp32" and "int8" runners and how often they agree, over `dataset`."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate)
    tally = _Tally(correct=dict.fromkeys(runners, 0))
    for batch in loader:
        tally.failed += [f"{dataset.samples[i][0]}: {m}" for i, m in batch["errors"]]
        if batch["input"] is None:
            continue
        x = batch["input"].numpy().astype(np.float32)
        if tally.first is None:
            tally.first = x[:1]
        preds = {}
        for key, runner in runners.items():
            logits = torch.from_numpy(np.asarray(run_padded(runner, x, runner.fixed_batch), dtype=np.float32))
            tally.correct[key] += correct_topk(logits, batch["target"], ks=(1,))[0]
            preds[key] = logits.argmax(dim=1)
        tally.agree += int((preds["fp32"] == preds["int8"]).sum())
        tally.count += x.shape[0]
    return tally


def _latency_ms(runner: Runner, x: np.ndarray, warmup: int, runs: int) -> float:
    return 1000.0 * median_time(lambda: runner(x), warmup=warmup, repeats=runs)


def _number_classes(dataset: ImageFolder, spec: _InputSpec, path: str) -> None:
    """Number the folders as the model's outputs (its recorded class names, else as ImageFolder does); check it."""
    names = read_metadata(path).get(META_LABEL_NAMES)
    if isinstance(names, list):
        dataset.map_classes([str(n) for n in names])
    needed = dataset.num_classes
    if spec.classes is not None and spec.classes != needed:
        kind = "ImageNet synset folders" if dataset.imagenet else f"{dataset.num_classes} class folders"
        raise QuantizeError(f"{dataset.root}: {kind} need a model with {needed} classes, but {path} has "
                            f"{spec.classes}")


def compare_int8(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str],
                 val_dir: str | os.PathLike[str], *, limit: int | None = None, threads: int | None = None,
                 batch_size: int = 16, warmup: int = 5, runs: int = 30,
                 preprocess: Preprocess | None = None, runtime: str = "onnxruntime") -> QuantReport:
    """Top-1 of both models on an ImageFolder (`val_dir/<class>/<image>`), and their median batch-1 latency.

    Class mapping as `gpunet.data.ImageFolder`: by the class names the fp32 file records (a model
    trained with `gpunet train`), else ImageNet synset folders -> the 1000 ImageNet indices, else
    names sorted, 0..K-1, which needs a K-class model. Both models run in
    `runtime` ("onnxruntime" or "openvino", which runs the same QDQ file with its own INT8
    kernels) on the CPU with `threads` threads (the runtime's default when None). Latency: one
    image (the fixed batch of a fixed-batch file), `warmup` untimed runs then the median of `runs`.
    """
    fp32_path, int8_path = os.fspath(fp32_path), os.fspath(int8_path)
    dataset = ImageFolder(val_dir, preprocess or onnx_preprocess(fp32_path), limit=limit)
    if runtime not in RUNTIMES:
        raise QuantizeError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    spec = _input_spec(fp32_path)
    _number_classes(dataset, spec, fp32_path)
    runners = {key: open_runner(path, runtime, threads=threads, device="cpu")
               for key, path in (("fp32", fp32_path), ("int8", int8_path))}
    tally = _score(runners, dataset, spec.batch or max(1, batch_size))
    if tally.count == 0 or tally.first is None:
        raise QuantizeError(f"{dataset.root}: none of the {len(dataset)} images could be read: "
                            + "; ".join(tally.failed[:3]))
    lat_x = tally.first if spec.batch is None else np.repeat(tally.first, spec.batch, axis=0)
    lat = {key: _latency_ms(runner, lat_x, warmup, runs) for key, runner in runners.items()}
    top1 = {key: 100.0 * hits / tally.count for key, hits in tally.correct.items()}
    return QuantReport(top1_fp32=top1["fp32"], top1_int8=top1["int8"], top1_delta=top1["int8"] - top1["fp32"],
                       latency_ms_fp32=lat["fp32"], latency_ms_int8=lat["int8"],
                       speedup=lat["fp32"] / lat["int8"] if lat["int8"] > 0 else float("inf"), images=tally.count,
                       agreement=100.0 * tally.agree / tally.count, threads=threads,
                       latency_batch=int(lat_x.shape[0]), size_bytes_fp32=os.path.getsize(fp32_path),
                       size_bytes_int8=os.path.getsize(int8_path), data_dir=dataset.root, failed=tally.failed,
                       runtime=runtime)


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
