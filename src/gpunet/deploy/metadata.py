"""What an exported file says about itself: the gpunet metadata keys, building them from a model, writing and reading.

Every ONNX file gpunet writes carries these keys in its `metadata_props`, an OpenVINO IR in its
rt_info, a TorchScript file in an extra file: the architecture, the preprocessing, the class
names (display names, and the class ids a `gpunet train` model records: its class folders),
the gpunet version, the precision. `gpunet.deploy.runtime.ExportedModel` runs a file from this
alone, so an exported file is self-describing.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

from gpunet._version import __version__
from gpunet.deploy.packages import import_onnx, read_openvino
from gpunet.errors import ExportError
from gpunet.labels import class_names
from gpunet.records import label_names_of
from gpunet.transforms import preprocess_config

# metadata_props keys written into every exported file
META_ARCHITECTURE = "gpunet.architecture"  # NVIDIA-format JSON list
META_PREPROCESS = "gpunet.preprocess"  # {"input_size", "crop_pct", "interpolation", "mean", "std"}
META_LABELS = "gpunet.labels"  # JSON list of class names, index order
META_LABEL_NAMES = "gpunet.label_names"  # JSON list of class ids (timm's label_names: training class folders)
META_VERSION = "gpunet.version"
META_MODEL = "gpunet.model"  # zoo name or "custom"
META_NUM_CLASSES = "gpunet.num_classes"
META_FUSED = "gpunet.fused"
META_PRECISION = "gpunet.precision"  # "fp32" | "fp16" | "int8"
META_QUANTIZATION = "gpunet.quantization"  # JSON: how an INT8 file was quantized (gpunet.deploy.quantize)
JSON_KEYS = (META_ARCHITECTURE, META_PREPROCESS, META_LABELS, META_LABEL_NAMES)
META_KEYS = (*JSON_KEYS, META_VERSION, META_MODEL, META_NUM_CLASSES, META_FUSED, META_PRECISION, META_QUANTIZATION)


def gpunet_version() -> str:
    """The gpunet version that wrote a file."""
    return __version__


def model_num_classes(model: nn.Module) -> int:
    """The class count of an exportable classifier; ExportError for feature extractors and headless models."""
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n <= 0:
        raise ExportError("only a classifier with num_classes > 0 can be exported (a GPUNet from "
                          "gpunet.create_model; feature extractors and headless models are not supported)")
    return n


def model_name(model: nn.Module) -> str:
    """The zoo name of the model's weights, or "custom"."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("name") or "custom")


def model_labels(model: nn.Module) -> list[str]:
    """Display names of the model's outputs: from the class names it records, else ImageNet's or `class_<i>`."""
    return class_names(model_num_classes(model), label_names=label_names_of(model))


def preprocess_metadata(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """`gpunet.transforms.preprocess_config` of the model as plain JSON values, at `img_size` when given."""
    cfg = preprocess_config(model)
    size = int(img_size or cfg["input_size"][-1])
    return {"input_size": [3, size, size], "crop_pct": float(cfg["crop_pct"]),
            "interpolation": str(cfg["interpolation"]), "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]]}


def model_metadata(model: nn.Module, img_size: int, *, fused: bool, precision: str) -> dict[str, str]:
    """The metadata entries (all strings, JSON where structured) of `model` exported at `img_size`."""
    arch = getattr(model, "arch", None)
    meta = {
        META_PREPROCESS: json.dumps(preprocess_metadata(model, img_size)),
        META_LABELS: json.dumps(model_labels(model)),
        META_VERSION: gpunet_version(),
        META_MODEL: model_name(model),
        META_NUM_CLASSES: str(model_num_classes(model)),
        META_FUSED: "true" if fused else "false",
        META_PRECISION: precision,
    }
    if arch is not None and hasattr(arch, "to_json"):
        meta[META_ARCHITECTURE] = json.dumps(arch.to_json())
    names = label_names_of(model)
    if names is not None:
        meta[META_LABEL_NAMES] = json.dumps(names)
    return meta


def set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """Replace (or add) `metadata_props` entries of an onnx.ModelProto."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for key, value in [*keep, *meta.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_metadata(path_or_proto: Any) -> dict[str, str]:
    """The raw `metadata_props` of an ONNX file or onnx.ModelProto (the weights are not read)."""
    if isinstance(path_or_proto, (str, os.PathLike)):
        proto = load_onnx(path_or_proto)
    else:
        proto = path_or_proto
    return {p.key: p.value for p in proto.metadata_props}


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """An ONNX file's ModelProto (external weights not read); ExportError naming the file if it is not ONNX."""
    from google.protobuf.message import DecodeError

    text = os.fspath(path)
    if os.path.isdir(text):
        raise ExportError(f"{text}: is a folder; expected an .onnx file")
    try:
        return import_onnx().load(text, load_external_data=False)
    except (DecodeError, ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{text}: not a readable ONNX model (truncated or corrupt: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); export it again") from None


def openvino_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The gpunet entries of an OpenVINO IR's rt_info (written by `export_openvino`)."""
    model = read_openvino(path)
    meta = {}
    for key in META_KEYS:
        where = key.split(".", 1)
        if model.has_rt_info(where):
            meta[key] = model.get_rt_info(where).astype(str)
    return meta


def read_metadata(path_or_proto: Any) -> dict[str, Any]:
    """The gpunet metadata of an exported ONNX or OpenVINO (.xml) file (JSON fields decoded; the rest as text)."""
    if isinstance(path_or_proto, (str, os.PathLike)) and os.fspath(path_or_proto).endswith(".xml"):
        return decode_metadata(openvino_metadata(path_or_proto), os.fspath(path_or_proto))
    return decode_metadata(onnx_metadata(path_or_proto), "ONNX")


def decode_metadata(meta: dict[str, str], source: str) -> dict[str, Any]:
    """`meta` with its JSON fields parsed; ExportError naming `source` for one that is not JSON."""
    out: dict[str, Any] = dict(meta)
    for key in JSON_KEYS:
        if key in meta:
            try:
                out[key] = json.loads(meta[key])
            except json.JSONDecodeError as exc:
                raise ExportError(f"{source} metadata {key} is not valid JSON: {exc}") from exc
    return out
