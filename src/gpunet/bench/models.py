"""The models a benchmark measures: zoo GPUNets and timm peers, with their input size, MACs and top-1."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gpunet.bench.config import split_list
from gpunet.errors import BenchmarkError, GPUNetError


@dataclass
class ModelSpec:
    """One model to benchmark: `build()` makes a fresh fp32 CPU instance (random or zoo weights)."""

    name: str
    img_size: int
    macs: int
    top1: float | None
    build: Callable[[], nn.Module]
    is_gpunet: bool


def resolve_models(models: str | Sequence[str], peers: str | Sequence[str], img_size: int | None) -> list[ModelSpec]:
    """Zoo names or NVIDIA-format architecture JSONs (or "all") and timm peers ("timm:NAME", also accepted
    among `models`) -> specs, in order."""
    from gpunet.info import count_macs
    from gpunet.zoo import create_model, get_pretrained_config, list_models, resolve_architecture

    names = split_list(models)
    names = tuple(list_models()) if names == ("all",) else names
    peer_names = split_list(peers) + tuple(n for n in names if n.startswith("timm:"))
    specs: list[ModelSpec] = []
    for name in names:
        if name.startswith("timm:"):
            continue
        try:  # a zoo name or an NVIDIA-format architecture JSON
            arch, zoo_name = resolve_architecture(name)
        except GPUNetError as e:
            raise BenchmarkError(str(e)) from None
        size = img_size or arch.img_resolution
        top1 = get_pretrained_config(zoo_name).top1 if zoo_name == name else None
        specs.append(ModelSpec(name, size, count_macs(arch, size), top1, functools.partial(create_model, arch), True))
    for peer in peer_names:
        if not peer.startswith("timm:"):
            raise BenchmarkError(f"peer {peer!r}: expected timm:NAME, e.g. timm:efficientnet_b3")
        specs.append(_timm_spec(peer[len("timm:"):], img_size))
    if not specs:
        raise BenchmarkError("no models to benchmark")
    return specs


def _timm_spec(name: str, img_size: int | None) -> ModelSpec:
    import timm

    from gpunet.info import count_macs

    try:
        with torch.device("meta"):
            meta = timm.create_model(name, pretrained=False).eval()
    except Exception as e:  # noqa: BLE001  (timm's error for an unknown name -> a one-line usage error)
        raise BenchmarkError(f"peer timm:{name}: {e}") from None
    cfg = dict(getattr(meta, "pretrained_cfg", None) or {})
    size = img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    top1 = cfg.get("top1")
    return ModelSpec(f"timm:{name}", size, count_macs(meta, size),
                     float(top1) if isinstance(top1, (int, float)) else None,
                     lambda: timm.create_model(name, pretrained=False).eval(), False)
