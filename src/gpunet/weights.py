"""Weights: read every checkpoint form NVIDIA and we publish, map NVIDIA's keys, load and save.

Readable forms: the NGC zip, a timm training checkpoint (`.pth.tar`, EMA weights preferred
exactly as NVIDIA's `load_checkpoint(use_ema=True)`), a bare state dict (NVIDIA's
P0/P1 files), our `.safetensors` (architecture JSON in its metadata), and http(s)/file
URLs of any of these. Pickles are read with `torch.load(weights_only=True)`; the only
extra class allowed is `argparse.Namespace` (the `args` entry of NVIDIA's files), read as a
plain `PickledNamespace`, so a checkpoint cannot run code.

NVIDIA's module names (`network.stage: 4 layer10.conv_pw`) are derived from the
architecture, per block kind, and mapped to ours (`stages.3.0.pw.conv`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import types
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from gpunet import hub
from gpunet._deprecation import moved
from gpunet._io import atomic_write_bytes, check_zip_sizes, extract_zip_member
from gpunet.arch import Architecture, HeadSpec, LayerSpec, TailSpec, loads_json
from gpunet.blocks import is_fused
from gpunet.builder import layer_module_paths
from gpunet.errors import SettingError, WeightsError
from gpunet.records import LABEL_NAMES, SAFETENSORS_LABELS_KEY, content_kind, label_names_of

log = logging.getLogger("gpunet")

CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".safetensors")
# NVIDIA's load_checkpoint(use_ema=True) order of preference
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
SAFETENSORS_ARCH_KEY = "gpunet.architecture"
MAX_LISTED = 5

Recognise = Callable[[Mapping[str, torch.Tensor]], str | None]

# Per block kind: NVIDIA's sub-module name -> ours, relative to the layer's module.
_NON_DISTILLED_SUBMODULES: dict[str, dict[str, str]] = {
    "head": {"net.0": "0.conv", "net.1": "0.bn"},
    "conv": {"conv": "conv", "bn1": "bn"},
    "fused_irb": {"conv_exp": "exp.conv", "bn1": "exp.bn", "se.conv_reduce": "se.conv_reduce",
                  "se.conv_expand": "se.conv_expand", "conv_pwl": "pwl.conv", "bn2": "pwl.bn"},
    "irb": {"conv_pw": "pw.conv", "bn1": "pw.bn", "conv_dw": "dw.conv", "bn2": "dw.bn",
            "se.conv_reduce": "se.conv_reduce", "se.conv_expand": "se.conv_expand", "conv_pwl": "pwl.conv",
            "bn3": "pwl.bn"},
    "tail": {"net.0": "head.conv", "net.1": "head.bn", "net.6": "classifier"},
}
_DISTILLED_SUBMODULES: dict[str, dict[str, str]] = {
    "head": {"net.0": "0.conv", "net.1": "0.bn"},
    "head_large": {"net.0": "0.conv", "net.1": "0.bn", "net.3": "1.conv", "net.4": "1.bn", "net.6": "2.conv",
                   "net.7": "2.bn"},
    "irb": {"body.0": "pw.conv", "body.1": "pw.bn", "body.3": "dw.conv", "body.4": "dw.bn", "body.6": "pwl.conv",
            "body.7": "pwl.bn"},
    "fused_irb": {"body.0": "exp.conv", "body.1": "exp.bn", "body.3": "pwl.conv", "body.4": "pwl.bn"},
    "tail": {"net.0": "head.conv", "net.1": "head.bn", "net.4": "head_proj", "net.8": "classifier"},
}



# ---------------------------------------------------------------------------- NVIDIA names

def nvidia_layer_name(layer: LayerSpec, n: int, distill: bool) -> str:
    """NVIDIA's child name in `network` for the layer at 1-based JSON position `n` (data = 1)."""
    if distill:
        if isinstance(layer, HeadSpec):
            return "head:"
        if isinstance(layer, TailSpec):
            return "tail:"
        return f"stage: {layer.stage} {layer.layer_type}{n}"
    if isinstance(layer, HeadSpec):
        return f"head: {n}"
    if isinstance(layer, TailSpec):
        return f" layer{n}"
    return f"stage: {layer.stage} layer{n}"


def nvidia_module_map(arch: Architecture) -> dict[str, str]:
    """NVIDIA module path -> our module path, for every module that holds tensors."""
    submodules = _DISTILLED_SUBMODULES if arch.distill else _NON_DISTILLED_SUBMODULES
    mapping: dict[str, str] = {}
    for j, (layer, ours) in enumerate(zip(arch.layers, layer_module_paths(arch), strict=True)):
        theirs = "network." + nvidia_layer_name(layer, j + 2, arch.distill)
        for their_sub, our_sub in submodules[layer.layer_type].items():
            if their_sub.startswith("se.") and not getattr(layer, "use_se", False):
                continue
            mapping[f"{theirs}.{their_sub}"] = f"{ours}.{our_sub}".lstrip(".")
    return mapping


def is_nvidia_layout(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("network.") for k in state_dict)


def _rename(state_dict: Mapping[str, torch.Tensor], module_map: Mapping[str, str]) -> tuple[
        OrderedDict[str, torch.Tensor], list[str]]:
    """Rename keys by module prefix; keys without a mapped module are returned as unknown."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module in module_map:
            out[f"{module_map[module]}.{leaf}"] = value
        else:
            unknown.append(key)
    return out, unknown


def from_nvidia(state_dict: Mapping[str, torch.Tensor], arch: Architecture) -> tuple[
        OrderedDict[str, torch.Tensor], list[str]]:
    """NVIDIA keys -> our keys; also returns the NVIDIA keys that do not belong to `arch`."""
    return _rename(state_dict, nvidia_module_map(arch))


def to_nvidia(state_dict: Mapping[str, torch.Tensor], arch: Architecture) -> OrderedDict[str, torch.Tensor]:
    """Our keys -> NVIDIA's keys (in NVIDIA's order), for files NVIDIA's own code loads."""
    inverse = {ours: theirs for theirs, ours in nvidia_module_map(arch).items()}
    renamed, unknown = _rename(state_dict, inverse)
    if unknown:
        raise WeightsError(f"cannot express in NVIDIA's layout: {_first(unknown)}")
    order = {m: i for i, m in enumerate(inverse.values())}
    return OrderedDict(sorted(renamed.items(), key=lambda kv: order[kv[0].rpartition(".")[0]]))


# ---------------------------------------------------------------------------- reading files

def read_checkpoint(path: str | os.PathLike[str]) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    """Read any supported checkpoint file -> (state dict, metadata); keys unchanged but `module.` stripped.

    A file in the download cache that cannot be read gets, in its error, the command that clears it.
    """
    path = os.fspath(path)
    try:
        return _read_checkpoint(path)
    except WeightsError as exc:
        hint = hub.cache_entry_hint(path)
        if not hint:
            raise
        raise WeightsError(f"{exc}. {hint}") from None


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Raise `WeightsError` unless `path` reads as a checkpoint (the download cache's loadability check)."""
    _read_checkpoint(os.fspath(path))


def _read_checkpoint(path: str) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    if not os.path.exists(path):
        raise WeightsError(f"{path}: file not found")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a directory; expected a checkpoint file (NGC .zip, .pth.tar, .pth, "
                           ".safetensors)")
    with open(path, "rb") as f:
        head = f.read(256)
    if not head:
        raise WeightsError(f"{path}: empty file (0 bytes), not a checkpoint; download or write it again")
    if _looks_like_safetensors(head):
        return _read_safetensors(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if kind := content_kind(head):  # an image, a document, text: say what it is instead of unpickling it
        raise WeightsError(f"{path}: not a checkpoint: it is {kind} (expected an NGC .zip, .pth.tar, .pth or "
                           ".safetensors file)")
    return _extract_state_dict(_torch_load(path, path), path), {}


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _read_zip(path: str) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    """torch's own zip format or an NGC archive; the sizes the archive declares are checked first."""
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_sizes(zf, path)
            if any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist()):
                member = None  # torch.save's format: torch reads it (stored members, bounded by the file)
            else:
                member = _ngc_member(zf, path)
                data = extract_zip_member(zf, member, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:
        raise WeightsError(f"{path}: corrupt or truncated zip archive ({exc}); download it again") from None
    if member is None:
        return _extract_state_dict(_torch_load(path, path), path), {}
    with data:
        return _read_ngc_member(data, f"{path}!{member.filename}")


def _ngc_member(zf: zipfile.ZipFile, path: str) -> zipfile.ZipInfo:
    """An NGC archive holds exactly one checkpoint member, whatever its name."""
    members = [i for i in zf.infolist() if not i.is_dir() and i.filename.endswith(CHECKPOINT_SUFFIXES)]
    if len(members) != 1:
        names = [i.filename for i in zf.infolist()]
        raise WeightsError(f"{path}: expected one checkpoint (.pth.tar/.pth/.pt/.safetensors) in the "
                           f"zip, found {len(members)}; members: {_first(names)}")
    return members[0]


def _read_ngc_member(data: IO[bytes], member: str) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    if member.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors_bytes

        try:
            return OrderedDict(load_safetensors_bytes(data.read())), {}
        except (SafetensorError, ValueError) as exc:
            raise WeightsError(f"{member}: corrupt or truncated .safetensors file ({exc})") from None
    return _extract_state_dict(_torch_load(data, member), member), {}


def _read_safetensors(path: str, tensors: bool = True) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    """Tensors (unless `tensors=False`: metadata only, nothing else read) and metadata of a .safetensors file."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state_dict = OrderedDict((k, f.get_tensor(k)) for k in f.keys()) if tensors else OrderedDict()
        return state_dict, metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt or truncated .safetensors file ({exc})") from None


class PickledNamespace(types.SimpleNamespace):
    """Stands in for the `argparse.Namespace` NVIDIA's checkpoints pickle as `args` (its fields, no argparse)."""


def _torch_load(f: str | IO[bytes], name: str) -> Any:
    try:
        with torch.serialization.safe_globals([(PickledNamespace, "argparse.Namespace")]):
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch prefixes every weights-only failure with the same text; only a refused GLOBAL
        # (a class or function the pickle would import and call) is a security refusal
        if "global" in str(exc).lower():
            raise WeightsError(
                f"{name}: refused to load: the checkpoint contains pickled code or objects other than tensors, "
                "containers and argparse.Namespace, and loading it could run arbitrary code. If you trust it, "
                "re-save its state dict with plain torch.save(state_dict) and pass that file."
                f" (detail: {_detail(exc, 'global')})") from None
        raise WeightsError(f"{name}: corrupt, truncated or not a PyTorch checkpoint ({_detail(exc)})") from None
    except Exception as exc:  # noqa: BLE001 (unpickling arbitrary bytes fails with any error type)
        raise WeightsError(f"{name}: corrupt, truncated or not a PyTorch checkpoint ({_detail(exc)})") from None


def _detail(exc: BaseException, prefer: str = "unpickler error") -> str:
    """A one-line summary of `exc`: its line mentioning `prefer` if any, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = next((x for x in lines if prefer in x.lower()), lines[0])
    return f"{type(exc).__name__}: {line[:200]}"


def _extract_state_dict(obj: Any, name: str) -> OrderedDict[str, torch.Tensor]:
    """The weights inside a loaded checkpoint: EMA first (NVIDIA's choice), `module.` stripped."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping) and obj[key]:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f"{name}: no state dict found (expected a dict of tensors or one of the entries "
                           f"{', '.join(STATE_DICT_KEYS)}); top level: {keys}")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in obj.items())


def read_safetensors_architecture(path: str | os.PathLike[str]) -> Architecture:
    """The architecture recorded in one of our .safetensors files (reads the header only)."""
    _, metadata = _read_safetensors(os.fspath(path), tensors=False)
    return _recorded_architecture(os.fspath(path), metadata)


def _recorded_architecture(path: str, metadata: Mapping[str, str]) -> Architecture:
    if SAFETENSORS_ARCH_KEY not in metadata:
        raise WeightsError(f"{os.fspath(path)}: no '{SAFETENSORS_ARCH_KEY}' metadata; this .safetensors file was "
                           "not written by gpunet: name the model, e.g. create_model('gpunet_d1', weights=PATH)")
    return loads_json(metadata[SAFETENSORS_ARCH_KEY], source=f"{os.fspath(path)} (metadata)")


# ---------------------------------------------------------------------------- loading into a model

def resolve_weights_path(source: str | os.PathLike[str], progress: bool = True) -> str:
    """A local path for `source`, downloading URLs into the cache."""
    text = os.fspath(source)
    if hub.is_url(text):
        return os.fspath(hub.download(text, progress=progress, hint=OFFLINE_HINT, verify=verify_checkpoint))
    return text


OFFLINE_HINT = ("Without network access, download the checkpoint elsewhere and pass it as a local file "
                 "(weights=PATH or --weights PATH), or point GPUNET_NGC_MIRROR at a folder or server that holds "
                 "the NGC zips.")


def checkpoint_num_classes(state_dict: Mapping[str, torch.Tensor], arch: Architecture) -> int | None:
    """The class count of a checkpoint's classifier (either naming), None if it has none."""
    ours = from_nvidia(state_dict, arch)[0] if is_nvidia_layout(state_dict) else state_dict
    weight = ours.get("classifier.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str, *, name: str | None = None,
                    recognise: Recognise | None = None) -> nn.Module:
    """Load tensors read from `path` (NVIDIA's or our names) into `model`, with specific errors.

    `name` is the model's name for messages; `recognise` (the zoo's `guess_model`) names the
    released model a misfit checkpoint belongs to, so the error can say which model to create.
    """
    original = state_dict
    arch: Architecture = model.arch  # type: ignore[assignment]
    unknown: list[str] = []
    ours = OrderedDict(state_dict)
    if is_nvidia_layout(state_dict):
        ours, unknown = from_nvidia(state_dict, arch)
    target = model.state_dict()
    if not hasattr(model, "classifier"):  # a feature backbone: drop what only the full classifier has
        full = meta_state_dict(arch)
        ours = OrderedDict((k, v) for k, v in ours.items() if k in target or k not in full)
    _adapt_classifier(model, ours, path)
    missing = [k for k in target if k not in ours]
    unexpected = unknown + [k for k in ours if k not in target]
    misshaped = [k for k in ours if k in target and ours[k].shape != target[k].shape]
    if missing or unexpected or misshaped:
        guess = recognise(original) if recognise is not None else None
        raise WeightsError(_mismatch_message(path, name, guess, ours, target, missing, unexpected, misshaped))
    model.load_state_dict(ours)
    return model


def meta_state_dict(arch: Architecture) -> dict[str, torch.Tensor]:
    """Names and shapes of a full classifier's tensors (meta device: nothing allocated)."""
    from gpunet.model import GPUNet

    with torch.device("meta"):
        return GPUNet(arch).state_dict()


def _adapt_classifier(model: nn.Module, state_dict: OrderedDict[str, torch.Tensor], path: str) -> None:
    """A checkpoint with another class count: keep the backbone and the model's fresh classifier."""
    weight = state_dict.get("classifier.weight")
    classifier = getattr(model, "classifier", None)
    if weight is None or classifier is None:
        return
    current = {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    if current and (weight.shape == current["classifier.weight"].shape
                    or weight.shape[1] != current["classifier.weight"].shape[1]):
        return  # same head, or another model altogether (reported as mis-shaped)
    state_dict.pop("classifier.weight")
    state_dict.pop("classifier.bias", None)
    state_dict.update(current)
    log.warning("gpunet: %s has %d classes, the model %d: loaded the backbone, the classifier is newly "
                "initialised", path, weight.shape[0], model.num_classes)


def _mismatch_message(path: str, name: str | None, guess: str | None, got: Mapping[str, torch.Tensor],
                      target: Mapping[str, torch.Tensor], missing: list[str], unexpected: list[str],
                      misshaped: list[str]) -> str:
    """`got`: the checkpoint's tensors renamed for the model; `guess`: the released model they look like."""
    name = name or "the given architecture"
    lines = [f"{path}: checkpoint does not fit {name}."]
    if guess and guess != name:
        lines.append(f"It looks like a checkpoint of {guess}: create the model with that name instead.")
    if missing:
        lines.append(f"{len(missing)} missing: " + _first([f"{k} {tuple(target[k].shape)}" for k in missing]))
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected: " + _first(
            [f"{k} {tuple(got[k].shape)}" if k in got else k for k in unexpected]))
    if misshaped:
        lines.append(f"{len(misshaped)} with another shape: " + _first(
            [f"{k} checkpoint {tuple(got[k].shape)} vs model {tuple(target[k].shape)}" for k in misshaped]))
    return "\n  ".join(lines)


def _first(items: list[str]) -> str:
    more = f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


# ---------------------------------------------------------------------------- writing files

def _check_not_fused(model: nn.Module) -> None:
    if is_fused(model):
        raise WeightsError("this model is fused (deploy mode): its BatchNorms are folded into the convolutions, "
                           "so no checkpoint layout applies; save the weights before calling fuse()")


def save_safetensors_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Our format: clean names, the architecture JSON (and class count) in the metadata."""
    _check_not_fused(model)
    arch: Architecture = model.arch  # type: ignore[assignment]
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {SAFETENSORS_ARCH_KEY: json.dumps(arch.to_json()), "format": "pt"}
    names = label_names_of(model)
    if names is not None:
        metadata[SAFETENSORS_LABELS_KEY] = json.dumps(names)
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata=metadata))


def save_nvidia_checkpoint(model: nn.Module, path: str | os.PathLike[str], layout: str = "timm") -> None:
    """NVIDIA's key names in NVIDIA's file layout, loadable by NVIDIA's own code.

    layout "timm": the timm CheckpointSaver dict (`state_dict` and `state_dict_ema`, both these
    weights; GPUNet-0/1/2/D1/D2); "raw_state_dict": a bare state dict (GPUNet-P0/P1).
    """
    _check_not_fused(model)
    sd = to_nvidia(model.state_dict(), model.arch)  # type: ignore[arg-type]
    sd = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in sd.items())
    if layout == "timm":
        obj: Any = {"epoch": 0, "arch": getattr(model, "pretrained_cfg", {}).get("name", "gpunet"),
                    "state_dict": sd, "optimizer": {}, "version": 2, "state_dict_ema": sd}
        names = label_names_of(model)
        if names is not None:
            obj[LABEL_NAMES] = names
    elif layout == "raw_state_dict":
        obj = sd
    else:
        raise SettingError(f"layout must be 'timm' or 'raw_state_dict', got {layout!r}")
    buf = io.BytesIO()  # serialised first: a full disk is then one error naming `path`, old file kept
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


__getattr__ = moved(__name__, {"convert": "gpunet.conversion", "load_weights": "gpunet.zoo",
                               "download_pretrained": "gpunet.zoo", "guess_model": "gpunet.zoo"})
