"""Checkpoint files for the weights/download tests, in NVIDIA's exact layouts.

Released-model files come from the reference's `golden/weights.py` (NVIDIA's layouts,
deterministic weights: EMA = seed 1, decoy `state_dict` = seed 2); they are written
once per test session and shared. Format tests use `TINY`, a small architecture that
has every non-distilled block kind, so they stay fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import pytest
import torch

from gpunet import GPUNet
from gpunet.arch import Architecture, from_table
from gpunet.weights import to_nvidia
from gpunet.zoo import get_pretrained_config

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

TINY_TABLE = """
# stage  type        n  k  s  e  out  act    se   groups
-        head        1  -  -  -  8    swish  -    -
1        conv        1  3  1  -  8    relu   -    -
2        fused_irb   1  3  2  2  16   swish  yes  -
3        irb         2  3  2  3  16   relu   yes  -
-        tail        1  -  -  -  32   -      -    -
"""
TINY_CLASSES = 10


def tiny_arch() -> Architecture:
    return from_table(TINY_TABLE, img_resolution=64, distill=False, num_classes=TINY_CLASSES)


def tiny_model(seed: int) -> GPUNet:
    """A tiny GPUNet whose every tensor (BN statistics included) is drawn from `seed`."""
    model = GPUNet(tiny_arch())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                values = torch.randn(t.shape, generator=g) * 0.3
                t.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()


def tiny_nvidia(seed: int) -> OrderedDict[str, torch.Tensor]:
    """The tiny model's weights under NVIDIA's key names."""
    return to_nvidia(tiny_model(seed).state_dict(), tiny_arch())


def tiny_input() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- released models (golden)

def golden() -> ModuleType:
    """The reference's golden/weights.py, or skip when the reference folder is absent."""
    path = REFERENCE / "golden" / "weights.py"
    if not path.is_file():
        pytest.skip(f"reference material not found at {REFERENCE}")
    name = "_gpunet_reference_golden_weights"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def listing(model_id: str) -> Path:
    return REFERENCE / "state_dict" / f"{model_id}.tsv"


def listing_keys(model_id: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, s) for k, s, _ in golden().read_listing(str(listing(model_id)))]


def expected_weights(model_id: str, seed: int = 1) -> OrderedDict[str, torch.Tensor]:
    return golden().make_state_dict(str(listing(model_id)), seed)


_CACHE: dict[tuple[str, str], Path] = {}


def golden_file(folder: Path, model_id: str, kind: str) -> Path:
    """NVIDIA's checkpoint of `model_id` written once per session into `folder`.

    kind "pth": the bare file (timm layout with `args` Namespace and decoy for 0/1/2/D1/D2,
    bare state dict for P0/P1), named `<latency key>.pth.tar`; "zip": it wrapped like
    NGC's download, named like `PretrainedConfig.filename`.
    """
    if (model_id, kind) in _CACHE:
        return _CACHE[model_id, kind]
    cfg = get_pretrained_config(model_id)
    folder = folder / model_id
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "pth":
        path = folder / f"{cfg.nvidia_key}.pth.tar"
        fmt = cfg.checkpoint_format
        golden().write_golden_checkpoint(str(listing(model_id)), str(path), fmt, arch=model_id,
                                         realistic=fmt == "timm")
    elif kind == "zip":
        path = folder / cfg.filename
        golden().make_ngc_zip(str(golden_file(folder.parent, model_id, "pth")), str(path), cfg.nvidia_key)
    else:
        raise ValueError(kind)
    _CACHE[model_id, kind] = path
    return path
