"""What a checkpoint records beside its tensors (architecture, class names), and what an unfit model file is.

`gpunet train` checkpoints carry the architecture they were trained with (`gpunet.architecture`
entry) and the class names of their outputs (`label_names`, the class folder names in output
order); gpunet `.safetensors` files carry them in their metadata. `read_records` reads them
without loading any tensor (a torch checkpoint is memory-mapped, a .safetensors header is read).

On a model the class names live where timm keeps them: `model.pretrained_cfg["label_names"]`.

`file_kind` says what a file given where an architecture was expected really is (a TorchScript
module, an ONNX model, a checkpoint), so the error can say so instead of "not valid JSON".
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gpunet.errors import WeightsError

LABEL_NAMES = "label_names"  # timm's pretrained_cfg key; also the entry of a training checkpoint
SAFETENSORS_LABELS_KEY = "gpunet.label_names"  # .safetensors metadata: JSON list
_SAFETENSORS_ARCH_KEY = "gpunet.architecture"  # gpunet.weights.SAFETENSORS_ARCH_KEY


@dataclass(frozen=True)
class Records:
    """What a checkpoint file says about its model: the architecture (NVIDIA-format JSON text) and class names."""

    architecture: str | None = None
    label_names: list[str] | None = None


def read_records(path: str | os.PathLike[str]) -> Records:
    """The architecture and class names a gpunet checkpoint records (`Records()` for files that record none).

    Reads no tensors. A recorded class-name list that is not a list of strings is a WeightsError.
    """
    path = os.fspath(path)
    entries = _safetensors_entries(path) if path.endswith(".safetensors") else _torch_entries(path)
    names = entries.get(LABEL_NAMES)
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise WeightsError(f"{path}: its recorded class names ({LABEL_NAMES}) are not a list of strings")
    arch = entries.get(_SAFETENSORS_ARCH_KEY)
    return Records(architecture=arch if isinstance(arch, str) else None, label_names=names)


def _safetensors_entries(path: str) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}
    out: dict[str, Any] = {_SAFETENSORS_ARCH_KEY: meta.get(_SAFETENSORS_ARCH_KEY)}
    if SAFETENSORS_LABELS_KEY in meta:
        try:
            out[LABEL_NAMES] = json.loads(meta[SAFETENSORS_LABELS_KEY])
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: metadata {SAFETENSORS_LABELS_KEY} is not valid JSON") from None
    return out


def _torch_entries(path: str) -> dict[str, Any]:
    """The class names and architecture of a torch zip checkpoint written by `gpunet train` ({} for others)."""
    if not _is_torch_zip(path):
        return {}
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, OSError, ValueError, EOFError):
        return {}  # e.g. NVIDIA's files (a pickled argparse.Namespace): they record nothing of ours
    if not isinstance(ckpt, dict):
        return {}
    entry = ckpt.get("gpunet")
    arch = entry.get("architecture") if isinstance(entry, dict) else None
    return {LABEL_NAMES: ckpt.get(LABEL_NAMES), _SAFETENSORS_ARCH_KEY: arch}


def _zip_names(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _is_torch_zip(path: str) -> bool:
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in _zip_names(path))


# ---------------------------------------------------------------------------- class names on a model

def label_names_of(model: Any) -> list[str] | None:
    """The class names recorded on `model` (`pretrained_cfg["label_names"]`), if they fit its outputs."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get(LABEL_NAMES)
    n = getattr(model, "num_classes", None)
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(v) for v in names]
    return None


def set_label_names(model: nn.Module, names: Sequence[str] | None) -> nn.Module:
    """Record `names` as the model's class names (timm's `pretrained_cfg["label_names"]`); ignored when None
    or when they do not fit its outputs (a new classifier for another class count)."""
    if names is None or len(names) != getattr(model, "num_classes", None):
        return model
    cfg = dict(getattr(model, "pretrained_cfg", None) or _custom_config(model))
    cfg[LABEL_NAMES] = [str(v) for v in names]
    setattr(model, "pretrained_cfg", cfg)  # noqa: B010 (an nn.Module attribute, as timm's models have)
    return model


def _custom_config(model: nn.Module) -> dict[str, Any]:
    """A custom architecture's evaluation defaults, those `gpunet.transforms.preprocess_config` gives a model
    without a pretrained config (its resolution, crop 1.0, bicubic, ImageNet mean/std), so that adding the class
    names keeps its preprocessing. (Not imported from there: this module stays below zoo and weights.)"""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    arch = getattr(model, "arch", None)
    if arch is None:
        return {}
    res = int(arch.img_resolution)
    return {"input_size": (3, res, res), "crop_pct": 1.0, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD}


# ---------------------------------------------------------------------------- what a file is

def file_kind(path: str | os.PathLike[str]) -> str | None:
    """What an existing file that is not an architecture JSON or .safetensors is, in words; None if unknown."""
    text = os.fspath(path)
    if not os.path.isfile(text):
        return None
    lower = text.lower()
    if lower.endswith(".onnx"):
        return "an exported ONNX model"
    if lower.endswith(".xml"):
        return "an exported OpenVINO model"
    names = _zip_names(text)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "a TorchScript module"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a PyTorch checkpoint"
    if names:
        return "a zip archive (an NGC checkpoint download?)"
    with open(text, "rb") as f:
        head = f.read(256)
    if head[:1] == b"\x80":  # a pickle protocol marker: torch's legacy checkpoint format
        return "a PyTorch checkpoint"
    return content_kind(head)


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
               (b"\x1f\x8b", "a gzip-compressed file"))


def content_kind(head: bytes) -> str | None:
    """What the first bytes of a file say it is (an image, a document, text), in words; None if unknown."""
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head and b"\0" not in head:
        try:
            text = head.decode("utf-8").lstrip()
        except UnicodeDecodeError:
            return None
        if text[:1] == "<":
            return "an HTML or XML file"
        return "a JSON file" if text[:1] in "{[" else "a text file"
    return None
