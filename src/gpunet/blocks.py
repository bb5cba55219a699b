"""The building blocks of GPUNet: small plain modules with explicit, already-resolved sizes.

Every rule about *which* sizes, paddings and BatchNorm eps a layer gets lives in
`builder.py`; the blocks only compute. All convolutions are `ConvBnAct` (conv -> BN ->
optional activation), which keeps parameter names short and makes BN folding local.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU}


def make_activation(name: str | None) -> nn.Module:
    """`relu` -> ReLU, `swish`/`silu` -> SiLU, None -> Identity."""
    if name is None:
        return nn.Identity()
    return _ACTIVATIONS[name](inplace=True)


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, groups: int = 1, act: str | None = "relu", eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the (eval-mode) BatchNorm into the convolution: conv gets a bias, bn becomes Identity."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
            return
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        self.bn = nn.Identity()


def is_fused(model: nn.Module) -> bool:
    """Whether `model` is in deploy mode: some ConvBnAct has its BatchNorm folded into the convolution."""
    return any(isinstance(m, ConvBnAct) and not isinstance(m.bn, nn.BatchNorm2d) for m in model.modules())


class SqueezeExcite(nn.Module):
    """Channel gating: x * sigmoid(expand(act(reduce(mean(x)))))."""

    def __init__(self, channels: int, reduced: int, act: str) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(act)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.conv_expand(self.act(self.conv_reduce(s))))


class _Residual(nn.Module):
    """Adds the input back (through drop path) when shapes allow: stride 1 and in == out."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidual(_Residual):
    """MBConv: 1x1 expand -> depthwise kxk -> [SE] -> 1x1 project (no activation)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int, act: str, eps: float, se_channels: int = 0, expand_groups: int = 1,
                 drop_path: float = 0.0) -> None:
        super().__init__(in_channels, out_channels, stride, drop_path)
        self.pw = ConvBnAct(in_channels, mid_channels, 1, groups=expand_groups, act=act, eps=eps)
        self.dw = ConvBnAct(mid_channels, mid_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                            groups=mid_channels, act=act, eps=eps)
        self.se = SqueezeExcite(mid_channels, se_channels, act) if se_channels else nn.Identity()
        self.pwl = ConvBnAct(mid_channels, out_channels, 1, act=None, eps=eps)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwl(self.se(self.dw(self.pw(x))))


class FusedInvertedResidual(_Residual):
    """FusedMBConv (EdgeResidual): kxk expand -> [SE] -> 1x1 project (no activation)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int, padding: int, act: str, eps: float, se_channels: int = 0,
                 drop_path: float = 0.0) -> None:
        super().__init__(in_channels, out_channels, stride, drop_path)
        self.exp = ConvBnAct(in_channels, mid_channels, kernel_size, stride=stride, padding=padding, act=act,
                             eps=eps)
        self.se = SqueezeExcite(mid_channels, se_channels, act) if se_channels else nn.Identity()
        self.pwl = ConvBnAct(mid_channels, out_channels, 1, act=None, eps=eps)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwl(self.se(self.exp(x)))


class PooledHead(nn.Module):
    """What follows the head conv: global average pool -> [1x1 projection + ReLU (distilled path)] -> flatten
    -> dropout -> classifier, as a method (`forward_head`) that TorchScript and torch.fx compile.

    Subclasses set `head_proj` (a 1x1 conv, or None), `classifier`, `drop_rate` and `global_pool`
    ("avg", or "" for no pooling: projection and classifier then run at every position, the output
    stays a (N, C, H, W) map).
    """

    if TYPE_CHECKING:  # set by subclasses; not class annotations, which TorchScript would read
        head_proj: nn.Module | None
        classifier: nn.Module
        drop_rate: float
        global_pool: str

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3), keepdim=True)
        if self.head_proj is not None:
            x = F.relu(self.head_proj(x))
        if self.global_pool == "avg":
            x = x.flatten(1)
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if self.global_pool == "avg":
            return self.classifier(x)
        return self.classifier(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # unpooled: classify every position


class Tail(PooledHead):
    """The tail on its own (for per-layer measurements): head conv -> `PooledHead.forward_head`.

    GPUNet holds the same three modules at its root (`head`, `head_proj`, `classifier`: NVIDIA's
    checkpoint names) and runs them through the same method.
    """

    def __init__(self, head: ConvBnAct, head_proj: nn.Conv2d | None, classifier: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.head_proj = head_proj
        self.classifier = classifier
        self.drop_rate = 0.0
        self.global_pool = "avg"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.head(x))
