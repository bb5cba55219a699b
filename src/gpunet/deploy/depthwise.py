"""Depthwise k x k convolutions of a fused GPUNet as one Triton kernel each, bias and activation included.

In a fused GPUNet every inverted-residual block has a depthwise convolution (3x3 to 7x7, one
filter per channel) followed by its folded BatchNorm bias and a ReLU or SiLU. In eager PyTorch
that is a cuDNN convolution plus a separate activation kernel that reads and writes the whole
tensor again; depthwise convolutions do little arithmetic per byte, so the extra pass costs
about as much as the convolution. `TritonDepthwise` does all three in one pass over a
channels_last (NHWC) tensor: each program takes a tile of output pixels x channels (channels
are contiguous, so loads are coalesced), accumulates the k x k taps in fp32, adds the bias,
applies the activation and stores in the input's dtype.

`use_triton_depthwise(model)` swaps every fused depthwise `ConvBnAct` for a `TritonDepthwise`
(after channel padding, if any). Outputs equal the PyTorch layers' up to fp32 summation order
(tests: `tests/test_depthwise.py`, with Triton's interpreter on CPU). The kernel runs on CUDA
tensors, and on CPU tensors when `TRITON_INTERPRET=1` is set (slow; exact; for tests); anywhere
else the layer computes the same function with `F.conv2d`. Plain Triton launches are captured
by CUDA graphs; torch.compile is not combined with them (inductor writes its own fused kernels).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpunet._optional import importable
from gpunet.blocks import ConvBnAct
from gpunet.errors import SettingError

ACTIVATIONS = {nn.Identity: 0, nn.ReLU: 1, nn.SiLU: 2}  # the kernel's ACT codes
BLOCK_PIXELS = 64


def interpreting() -> bool:
    """Triton's interpreter is on (`TRITON_INTERPRET=1`): kernels run on CPU tensors, in Python."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def _triton_installed() -> bool:
    return importable("triton")


def kernel_can_run(device: torch.device) -> str | None:
    """None when the Triton kernel can run on `device`; else why not."""
    if not _triton_installed():
        return "Triton is not installed"
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return None
    return f"Triton kernels run on CUDA devices (or on CPU under TRITON_INTERPRET=1), not on {device}"


_JITTED: dict[bool, Any] = {}


def _kernel() -> Any:
    """The jitted kernel for the current mode (Triton decides compiled or interpreted when it wraps it)."""
    mode = interpreting()
    if mode not in _JITTED:
        import triton

        from gpunet.deploy._depthwise_kernel import dw_conv_act

        _JITTED[mode] = triton.jit(dw_conv_act)
    return _JITTED[mode]


def _block_channels(channels: int) -> int:
    """Channels per program: a power of two, 16 to 64 (a 64 x 64 fp32 tile stays in registers)."""
    return max(16, min(64, 1 << (channels - 1).bit_length()))


def depthwise_conv_act(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, kernel_size: int,
                       stride: int, padding: int, act: int) -> torch.Tensor:
    """act(depthwise_conv(x) + bias) by the Triton kernel; `weight_taps` is [k*k, C], `x` any layout.

    The output is channels_last, in `x`'s dtype.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    oh, ow = (h + 2 * padding - kernel_size) // stride + 1, (w + 2 * padding - kernel_size) // stride + 1
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    block_c = _block_channels(c)
    grid = (-(-n * oh * ow // BLOCK_PIXELS), -(-c // block_c))
    _kernel()[grid](x, weight_taps, bias, y, n * oh * ow, h, w, c, oh, ow, stride, padding,
                    K=kernel_size, ACT=act, BLOCK_P=BLOCK_PIXELS, BLOCK_C=block_c)
    return y


class TritonDepthwise(nn.Module):
    """A fused depthwise `ConvBnAct` (conv with its folded bias, then ReLU, SiLU or nothing) as one kernel.

    Holds the filters tap-major (`weight_taps`, [k*k, C]) and the bias as parameters, so `.to()`
    moves and casts them with the model. Where the kernel cannot run (`kernel_can_run`), the
    same function runs as `F.conv2d` + activation.
    """

    def __init__(self, layer: ConvBnAct) -> None:
        super().__init__()
        conv = layer.conv
        if not is_depthwise(layer):
            raise SettingError(f"TritonDepthwise: expected a fused depthwise ConvBnAct with ReLU, SiLU or no "
                               f"activation, got {conv} -> {layer.bn} -> {layer.act}")
        c, k = conv.out_channels, conv.kernel_size[0]
        self.kernel_size, self.stride, self.padding = k, conv.stride[0], int(conv.padding[0])  # type: ignore[index]
        self.act = ACTIVATIONS[type(layer.act)]
        self.weight_taps = nn.Parameter(conv.weight.detach().reshape(c, k * k).t().contiguous(), requires_grad=False)
        assert conv.bias is not None  # is_depthwise checked it
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def extra_repr(self) -> str:
        act = {v: k.__name__ for k, v in ACTIVATIONS.items()}[self.act]
        return (f"{self.bias.numel()}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"act={act}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernel_can_run(x.device) is None:
            return depthwise_conv_act(x, self.weight_taps, self.bias, self.kernel_size, self.stride, self.padding,
                                      self.act)
        c, k = self.bias.numel(), self.kernel_size
        weight = self.weight_taps.t().reshape(c, 1, k, k)
        y = F.conv2d(x, weight, self.bias, self.stride, self.padding, groups=c)
        return F.relu(y) if self.act == 1 else F.silu(y) if self.act == 2 else y


def is_depthwise(layer: nn.Module) -> bool:
    """A fused depthwise k x k `ConvBnAct` (square kernel > 1, symmetric padding, no dilation) with a
    ReLU, SiLU or no activation: what `TritonDepthwise` computes."""
    if not isinstance(layer, ConvBnAct) or not isinstance(layer.bn, nn.Identity):
        return False
    conv = layer.conv
    k = conv.kernel_size
    return (conv.groups == conv.in_channels == conv.out_channels and conv.bias is not None and k[0] == k[1] > 1
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and conv.stride[0] == conv.stride[1] and conv.dilation == (1, 1)
            and type(layer.act) in ACTIVATIONS)


def use_triton_depthwise(model: nn.Module) -> int:
    """Replace every fused depthwise `ConvBnAct` of `model` by a `TritonDepthwise`, in place; how many.

    Fold BatchNorm first (`gpunet.model.fuse`, done by `optimize_for_inference`); pad channels
    before, not after, since padding rebuilds `ConvBnAct` layers.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_depthwise(child):
                setattr(parent, name, TritonDepthwise(child))  # type: ignore[arg-type]
                swapped += 1
    return swapped
