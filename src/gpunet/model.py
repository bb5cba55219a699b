"""The GPUNet classifier and its feature-extraction backbone, with timm's whole model interface.

No `from __future__ import annotations` in this module: torch.fx copies `forward`'s
annotations into the code it generates, and TorchScript must then read them as types
(postponed, string annotations came out as `_torch_Tensor_`).
"""

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from timm.layers import DropPath
from timm.models import FeatureInfo as TimmFeatureInfo
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpunet._checks import check_rate
from gpunet.arch import Architecture
from gpunet.blocks import ConvBnAct, PooledHead
from gpunet.builder import build_network
from gpunet.errors import SettingError
from gpunet.limits import check_num_classes

DEFAULT_DROP_RATE = 0.2  # NVIDIA's Dropout(0.2) before the classifier, both paths
FIRST_CONV = "stem.0.conv"  # the convolution that sees the image (timm's `first_conv`)
POOL_TYPES = ("avg", "")  # global average pooling, or none ("": unpooled features out, timm's convention)


class _TimmConfig:
    """`default_cfg`: timm's old name of `pretrained_cfg`, kept as one object."""

    __jit_unused_properties__ = ["default_cfg"]  # TorchScript compiles properties unless told
    if TYPE_CHECKING:
        pretrained_cfg: dict[str, Any]

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg


class GPUNet(_TimmConfig, PooledHead):
    """stem -> stages -> head (1x1 conv-BN-ReLU) -> pool -> [head_proj 1x1 + ReLU] -> dropout -> classifier.

    `head_proj` exists on the distilled path only (NVIDIA's 1152 -> 1984 conv after pooling), so
    `num_features` (the channels of `forward_features`: 1152 for D1/D2) and `head_hidden_size`
    (the classifier's input width: 1984 for D1/D2) differ there, as timm defines them.
    """

    if TYPE_CHECKING:  # what prune_intermediate_layers may replace them with
        head: nn.Module

    def __init__(self, arch: Architecture, num_classes: int | None = None, *, in_chans: int | None = None,
                 global_pool: str = "avg", drop_rate: float = DEFAULT_DROP_RATE,
                 drop_path_rate: float | None = None) -> None:
        super().__init__()
        check_rate(drop_rate, "drop_rate")  # here, not in the first training step's dropout
        arch = with_in_chans(arch, in_chans)
        net = build_network(arch, drop_path_rate)
        self.arch = arch
        self.in_chans = arch.head.in_channels
        self.num_classes = arch.num_classes if num_classes is None else num_classes
        self.num_features = net.num_features
        self.head_hidden_size = net.head_hidden_size
        self.global_pool = _checked_pool(global_pool)
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False
        self.feature_info = [f.as_dict() for f in net.feature_info]
        self.pretrained_cfg = {}
        self.stem = net.stem
        self.stages = net.stages
        self.head = net.head
        self.head_proj = net.head_proj
        self.classifier = self._make_classifier(self.num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier on the model's device and dtype (nn.Identity for 0 classes)."""
        check_num_classes(num_classes)  # before allocating: 10**9 classes is a clear error, not a MemoryError
        if num_classes <= 0:
            return nn.Identity()
        ref = next(self.parameters())  # the stem's first weight
        return nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for `num_classes` (freshly initialised; 0 removes it); `global_pool`
        "avg" or "" (no pooling: a (N, C, H, W) map out); None keeps the current pooling."""
        pool = self.global_pool if global_pool is None else global_pool
        self.global_pool = _checked_pool(pool)
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes)
        self.classifier.train(self.training)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (`checkpointed`)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (layer-wise lr decay), as timm's EfficientNet: the stem, each block (each
        stage if `coarse`) with the head conv and projection joining the last one, then the classifier."""
        blocks = r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"
        return {"stem": r"^stem\.", "blocks": [(blocks, None), (r"^head", (99999,))]}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters to exempt from weight decay beyond timm's rule (biases and BatchNorm, every 1-D tensor,
        are already exempt; NVIDIA trains with exactly that): none."""
        return set()

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str) -> None:
        """timm's hook for weights in a format of their own (our pretrained cfgs say `custom_load`, so timm's
        loader never reads NVIDIA's zip as a state dict): gpunet reads them, so say how."""
        raise SettingError(f"{checkpoint_path}: GPUNet weights load through gpunet: "
                           "timm.create_model(name, pretrained=True) or gpunet.load_weights(model, path)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map, before pooling: (N, num_features, H/32, W/32) for most models."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpointed(_blocks(self.stages), x)
        else:
            x = self.stages(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The outputs of the stages `indices` select (`feature_info` order; an int n: the last n; None: all),
        and unless `intermediates_only` the final features (`forward_features`), as timm's EfficientNet.

        `stop_early` skips the stages after the last selected one; `norm` has nothing to apply
        (GPUNet has no final norm) and is accepted for timm's callers.
        """
        if output_fmt != "NCHW":
            raise SettingError(f"output_fmt: GPUNet returns NCHW feature maps, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        stages = list(self.stages)[: max_index + 1] if stop_early else list(self.stages)
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = checkpointed(list(stage.children()), x) if self.grad_checkpointing else stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.feature_info):
            x = self.head(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of `indices` and, with `prune_head`/`prune_norm` or when stages go,
        the head conv, projection and classifier (the model then ends at that stage, unpooled)."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = prune_norm or prune_head or max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.head = nn.Identity()
            self.head_proj = None
            self.num_features = self.head_hidden_size = int(self.feature_info[max_index]["num_chs"])
            self.reset_classifier(0, "")
        return take

    def fuse(self) -> "GPUNet":
        """Deploy mode, in place: BatchNorm folded into the convolutions (see `fuse`)."""
        return fuse(self)  # type: ignore[return-value]


class GPUNetFeatures(_TimmConfig, nn.Module):
    """Backbone that returns the outputs of the selected stages (for detection/segmentation).

    Parameter names are the classifier's (`stem`, `stages.*`), so classifier checkpoints load.
    """

    def __init__(self, arch: Architecture, out_indices: Sequence[int] | None = None, *, in_chans: int | None = None,
                 drop_path_rate: float | None = None) -> None:
        super().__init__()
        arch = with_in_chans(arch, in_chans)
        net = build_network(arch, drop_path_rate)
        infos = [f.as_dict() for f in net.feature_info]
        if out_indices is None:
            out_indices = default_out_indices(infos)
        n = len(infos)
        resolved = sorted({i % n if -n <= i < n else _bad_index(i, n) for i in out_indices})
        if not resolved:
            raise SettingError(f"out_indices: give at least one stage index (0..{n - 1})")
        self.arch = arch
        self.in_chans = arch.head.in_channels
        self.out_indices = tuple(resolved)
        self.grad_checkpointing = False
        self.stem = net.stem
        self.stages = nn.Sequential(*list(net.stages)[: resolved[-1] + 1])
        self.feature_info = TimmFeatureInfo([infos[i] for i in resolved], tuple(range(len(resolved))))
        self.pretrained_cfg = {}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (`checkpointed`)."""
        self.grad_checkpointing = enable

    def fuse(self) -> "GPUNetFeatures":
        """Deploy mode, in place: BatchNorm folded into the convolutions (see `fuse`)."""
        return fuse(self)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpointed(list(stage.children()), x)
            else:
                x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def default_out_indices(feature_info: list[dict[str, Any]]) -> tuple[int, ...]:
    """The last stage at each output stride, like timm's efficientnet feature points."""
    last: dict[int, int] = {}
    for i, info in enumerate(feature_info):
        last[info["reduction"]] = i
    return tuple(sorted(last.values()))


def _bad_index(i: int, n: int) -> int:
    raise SettingError(f"out_indices: stage index {i} is out of range; this model has {n} stages (0..{n - 1})")


def _checked_pool(global_pool: str) -> str:
    if global_pool not in POOL_TYPES:
        raise SettingError(f"global_pool: GPUNet pools by average ('avg') or not at all (''), got {global_pool!r}")
    return global_pool


def with_in_chans(arch: Architecture, in_chans: int | None) -> Architecture:
    """`arch` with a stem for `in_chans`-channel images (None: unchanged)."""
    if in_chans is None or in_chans == arch.head.in_channels:
        return arch
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise SettingError(f"in_chans: expected a positive number of image channels, got {in_chans!r}")
    head = dataclasses.replace(arch.head, in_channels=in_chans)
    return dataclasses.replace(arch, layers=(head, *arch.layers[1:]))


# ---------------------------------------------------------------------------- gradient checkpointing

def _blocks(stages: nn.Sequential) -> list[nn.Module]:
    return [block for stage in stages for block in stage.children()]


def checkpointed(blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run `blocks` in turn, each under `torch.utils.checkpoint`: only its input is kept for the backward
    pass, which recomputes the rest. BatchNorm running statistics are put back after that recompute,
    so a training step updates them once, exactly as without checkpointing (timm's `checkpoint_seq`
    updates them twice)."""
    for block in blocks:
        contexts = functools.partial(_recompute_contexts, block)
        x = checkpoint(block, x, use_reentrant=False, context_fn=contexts)  # type: ignore[assignment]
    return x


def _recompute_contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager[None],
                                                   contextlib.AbstractContextManager[None]]:
    return contextlib.nullcontext(), _restored_running_stats(block)


@contextlib.contextmanager
def _restored_running_stats(block: nn.Module) -> Iterator[None]:
    saved = [(buf, buf.clone()) for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


# ---------------------------------------------------------------------------- deploy mode

def fuse(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into its convolution and drop dropout/drop-path, in place (eval mode).

    Load weights before fusing: a fused model has conv biases instead of BatchNorm tensors,
    so NVIDIA's and our checkpoint layouts no longer apply to it (`gpunet.blocks.is_fused`
    tells, and the checkpoint writers refuse such a model).
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBnAct):
            module.fuse()
    for name, module in list(model.named_modules()):
        if isinstance(module, (DropPath, nn.Dropout)):
            _set_submodule(model, name, nn.Identity())
    if hasattr(model, "drop_rate"):
        setattr(model, "drop_rate", 0.0)  # noqa: B010  (an attribute of GPUNet, not of nn.Module)
    return model


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
