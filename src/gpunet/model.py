"""The GPUNet classifier and its feature-extraction backbone, with timm's model interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import DropPath
from timm.models import FeatureInfo as TimmFeatureInfo
from torch import nn

from gpunet.arch import Architecture
from gpunet.blocks import ConvBnAct, pool_and_classify
from gpunet.builder import build_network
from gpunet.errors import SettingError

DEFAULT_DROP_RATE = 0.2  # NVIDIA's Dropout(0.2) before the classifier, both paths


class GPUNet(nn.Module):
    """stem -> stages -> head (1x1 conv-BN-ReLU) -> pool -> [head_proj 1x1 + ReLU] -> dropout -> classifier.

    `head_proj` exists on the distilled path only (NVIDIA's 1152 -> 1984 conv after pooling).
    """

    def __init__(self, arch: Architecture, num_classes: int | None = None, *,
                 drop_rate: float = DEFAULT_DROP_RATE, drop_path_rate: float | None = None) -> None:
        super().__init__()
        net = build_network(arch, drop_path_rate)
        self.arch = arch
        self.num_classes = arch.num_classes if num_classes is None else num_classes
        self.num_features = self.head_hidden_size = net.num_features
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.feature_info = [f.as_dict() for f in net.feature_info]
        self.pretrained_cfg: dict[str, Any] = {}
        self.stem = net.stem
        self.stages = net.stages
        self.head = net.head
        self.head_proj = net.head_proj
        self.classifier: nn.Module = self._make_classifier(self.num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier (freshly initialised; 0 removes it)."""
        if global_pool != "avg":
            raise SettingError(f"GPUNet supports only average pooling, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map, before pooling: (N, C_head, H/32, W/32) for most models."""
        return self.head(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, project (distilled path), dropout and classify; `pre_logits` stops before the classifier."""
        return pool_and_classify(x, self.head_proj, self.classifier, drop_rate=self.drop_rate,
                                 training=self.training, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def fuse(self) -> GPUNet:
        """Deploy mode, in place: BatchNorm folded into the convolutions (see `fuse`)."""
        return fuse(self)  # type: ignore[return-value]


class GPUNetFeatures(nn.Module):
    """Backbone that returns the outputs of the selected stages (for detection/segmentation).

    Parameter names are the classifier's (`stem`, `stages.*`), so classifier checkpoints load.
    """

    def __init__(self, arch: Architecture, out_indices: Sequence[int] | None = None, *,
                 drop_path_rate: float | None = None) -> None:
        super().__init__()
        net = build_network(arch, drop_path_rate)
        infos = [f.as_dict() for f in net.feature_info]
        if out_indices is None:
            out_indices = default_out_indices(infos)
        n = len(infos)
        resolved = sorted({i % n if -n <= i < n else _bad_index(i, n) for i in out_indices})
        if not resolved:
            raise SettingError(f"out_indices: give at least one stage index (0..{n - 1})")
        self.arch = arch
        self.out_indices = tuple(resolved)
        self.stem = net.stem
        self.stages = nn.Sequential(*list(net.stages)[: resolved[-1] + 1])
        self.feature_info = TimmFeatureInfo([infos[i] for i in resolved], tuple(range(len(resolved))))
        self.pretrained_cfg: dict[str, Any] = {}

    def fuse(self) -> GPUNetFeatures:
        """Deploy mode, in place: BatchNorm folded into the convolutions (see `fuse`)."""
        return fuse(self)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
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
