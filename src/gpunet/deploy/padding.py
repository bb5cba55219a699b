"""Channel padding: widen a fused GPUNet's channel counts to multiples of 8 with zero weights, outputs unchanged.

Tensor-core convolution kernels (cuDNN, and the Triton templates of inductor) want channel
counts that are multiples of 8 in fp16/bf16; GPUNet-D1 has 33, 44, 67, 99, 134, 190, 268, ...
`pad_channels(model, 8)` rebuilds every convolution of the stem, the stages and the head's input
with extra channels whose weights and biases are zero, so that

* a padded output channel computes conv(x) = 0 (zero weights, zero bias) and its activation
  act(0) = 0 (ReLU, SiLU); depthwise convolutions get one zero filter per extra channel
  (`groups` follows the channel count);
* every real output reads the padded channels through zero weights only, so nothing a padded
  channel holds can reach a real channel; a residual add sums two padded tensors (both branches
  are padded alike: the block's input and output widths are equal exactly when the real ones are);
* squeeze-excite: the mean of a zero channel is 0, the reduce conv reads it through zero weights,
  its padded reduced channels are 0, and the padded gate sigmoid(0) = 0.5 multiplies a zero
  channel;
* the head conv's output, the projection and the classifier keep their real sizes, so
  `forward`, `forward_features` and `forward_head` return exactly the shapes they did.

The real channels' values are the same sums as before plus exact zeros, so outputs equal the
unpadded model's up to the summation order a kernel picks for the new shapes (tests: <= 1e-6
relative on CPU). Stage outputs inside the network (`forward_intermediates`) carry the extra
zero channels.
"""

from __future__ import annotations

import torch
from torch import nn

from gpunet.blocks import ConvBnAct, FusedInvertedResidual, InvertedResidual, SqueezeExcite
from gpunet.errors import SettingError
from gpunet.model import GPUNet, fuse


def round_up(channels: int, multiple: int) -> int:
    """`channels` rounded up to a multiple of `multiple` (33 -> 40 for 8)."""
    return -(-channels // multiple) * multiple


def pad_channels(model: nn.Module, multiple: int = 8) -> nn.Module:
    """Fold BatchNorm (`fuse`), then pad every internal channel count to a multiple of `multiple`, in place.

    Outputs are unchanged (see the module docstring); the image channels and the output widths
    stay as they are. For the GPUNet classifier (`create_model(name)`); a `features_only`
    backbone returns its stage maps, whose widths would change, and is refused.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise SettingError(f"pad_channels: expected a positive channel multiple such as 8, got {multiple!r}")
    if not isinstance(model, GPUNet):
        raise SettingError(f"pad_channels: expected a GPUNet classifier, got {type(model).__name__} (features_only "
                           "backbones return their stage maps at their real widths: not padded)")
    if not isinstance(model.head, ConvBnAct):
        raise SettingError("pad_channels: this GPUNet has no head conv (pruned by prune_intermediate_layers): its "
                           "last stage is its output and keeps its width")
    fuse(model)
    width = model.in_chans  # the image: never padded
    for name, layer in model.stem.named_children():
        width = _pad_layer(layer, width, multiple, f"stem.{name}")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.children()):
            width = _pad_layer(block, width, multiple, f"stages.{i}.{j}")
    _pad_conv_bn_act(model.head, width, model.head.conv.out_channels)  # the features keep their width
    return model


def _pad_layer(layer: nn.Module, width: int, multiple: int, where: str) -> int:
    """Pad one stem layer or block whose input now has `width` channels; its padded output width."""
    if isinstance(layer, ConvBnAct):
        return _pad_conv_bn_act(layer, width, round_up(layer.conv.out_channels, multiple))
    if isinstance(layer, InvertedResidual):
        mid = round_up(layer.pw.conv.out_channels, multiple)
        _pad_conv_bn_act(layer.pw, width, mid)
        _pad_conv_bn_act(layer.dw, mid, mid)
    elif isinstance(layer, FusedInvertedResidual):
        mid = round_up(layer.exp.conv.out_channels, multiple)
        _pad_conv_bn_act(layer.exp, width, mid)
    else:
        raise SettingError(f"pad_channels: {where} is a {type(layer).__name__}, which channel padding does not know")
    if isinstance(layer.se, SqueezeExcite):
        reduced = round_up(layer.se.conv_reduce.out_channels, multiple)
        layer.se.conv_reduce = padded_conv(layer.se.conv_reduce, mid, reduced)
        layer.se.conv_expand = padded_conv(layer.se.conv_expand, reduced, mid)
    out = _pad_conv_bn_act(layer.pwl, mid, round_up(layer.pwl.conv.out_channels, multiple))
    if layer.has_skip and out != width:  # cannot happen: equal real widths round up alike
        raise SettingError(f"pad_channels: {where}: residual widths differ after padding ({width} vs {out})")
    return out


def _pad_conv_bn_act(layer: ConvBnAct, in_channels: int, out_channels: int) -> int:
    if not isinstance(layer.bn, nn.Identity):
        raise SettingError("pad_channels: BatchNorm must be folded first (gpunet.fuse)")
    layer.conv = padded_conv(layer.conv, in_channels, out_channels)
    return out_channels


def padded_conv(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A copy of `conv` with `in_channels` inputs and `out_channels` outputs: the new weights and biases are 0.

    A depthwise conv (groups == channels) stays depthwise (groups = the new channel count);
    other grouped convolutions are refused. The weights keep their memory format, device,
    dtype and requires_grad.
    """
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if conv.groups > 1 and not depthwise:
        raise SettingError(f"pad_channels: a grouped convolution ({conv.in_channels} -> {conv.out_channels} channels, "
                           f"groups={conv.groups}) cannot be padded")
    if depthwise and in_channels != out_channels:
        raise SettingError(f"pad_channels: a depthwise convolution needs as many inputs as outputs, "
                           f"got {in_channels} -> {out_channels}")
    if in_channels < conv.in_channels or out_channels < conv.out_channels:
        raise SettingError(f"pad_channels: cannot shrink a {conv.in_channels} -> {conv.out_channels} convolution to "
                           f"{in_channels} -> {out_channels}")
    w = conv.weight
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                    conv.dilation, groups=out_channels if depthwise else 1, bias=True,  # type: ignore[arg-type]
                    padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[tuple(slice(0, n) for n in w.shape)] = w
        new.bias.zero_()  # type: ignore[union-attr]
        if conv.bias is not None:
            new.bias[: conv.out_channels] = conv.bias  # type: ignore[index]
    if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
        new.weight.data = new.weight.data.contiguous(memory_format=torch.channels_last)
    new.weight.requires_grad_(w.requires_grad)
    new.bias.requires_grad_(w.requires_grad)  # type: ignore[union-attr]
    new.train(conv.training)
    return new
