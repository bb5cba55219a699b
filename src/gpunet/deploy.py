"""Deploy mode: the same function, fewer operations (BatchNorm folded, no training-only modules)."""

from __future__ import annotations

import torch
from torch import nn

from gpunet.blocks import ConvBnAct


def fuse(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into its convolution and drop dropout/drop-path, in place (eval mode).

    Load weights before fusing: a fused model has conv biases instead of BatchNorm tensors,
    so NVIDIA's and our checkpoint layouts no longer apply to it.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBnAct):
            module.fuse()
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "DropPath":
            _set_submodule(model, name, nn.Identity())
    if hasattr(model, "drop_rate"):
        model.drop_rate = 0.0
    model.is_fused = True
    return model


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool = False,
                           dtype: torch.dtype | None = None) -> nn.Module:
    """Fuse, then optionally convert to channels_last memory format / another dtype and torch.compile.

    Feed channels_last inputs (`x.to(memory_format=torch.channels_last)`) to a channels_last model.
    """
    model = fuse(model)
    if dtype is not None:
        model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
