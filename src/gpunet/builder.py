"""Decode an `Architecture` into modules, following NVIDIA's two builder paths exactly.

This is the one place that knows NVIDIA's rules (spec: BatchNorm eps per path, hidden
widths, Squeeze-Excite rounding, the stride-2 fused-block padding quirk, the distilled
tail), the drop-path schedule, how layers group into stages and where the stage
outputs (feature points) are.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gpunet.arch import Architecture, ConvSpec, FusedIRBSpec, IRBSpec, LayerSpec
from gpunet.blocks import ConvBnAct, FusedInvertedResidual, InvertedResidual

EPS_NON_DISTILLED = 1e-3
EPS_DISTILLED = 1e-5
EPS_DISTILLED_FUSED = 1e-3  # NVIDIA's distilled Fused_IRB keeps timm's 1e-3
DISTILLED_TAIL_WIDTH = 1152  # hard-coded in NVIDIA's distilled epilogue
STEM_STRIDE = 2


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm/TF channel rounding used by NVIDIA's non-distilled blocks."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def hidden_channels(spec: IRBSpec | FusedIRBSpec, distill: bool) -> int:
    """Expanded width: exact product on the distilled path, make_divisible otherwise."""
    if distill:
        return int(spec.in_channels * spec.expansion)
    return make_divisible(spec.in_channels * spec.expansion)


def se_channels(spec: IRBSpec | FusedIRBSpec, mid: int) -> int:
    """NVIDIA's SE width: round(mid * 0.25 / expansion) (= in_channels / 4 for the released models)."""
    return round(mid * 0.25 / spec.expansion) if spec.use_se else 0


def default_drop_path_rate(arch: Architecture) -> float:
    """NVIDIA trains the non-distilled family with drop path up to 0.2, the distilled one without."""
    return 0.0 if arch.distill else 0.2


def drop_path_schedule(arch: Architecture, rate: float) -> list[float]:
    """Drop-path rate of each block: rate * i / (len(json) - 1) for JSON entry i (data = 0, head = 1)."""
    n = len(arch.layers)  # == len(json) - 1
    return [rate * (j + 2) / n for j in range(len(arch.blocks))]


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: its channels, total stride and module name."""

    num_chs: int
    reduction: int
    module: str

    def as_dict(self) -> dict[str, int | str]:
        return {"num_chs": self.num_chs, "reduction": self.reduction, "module": self.module}


@dataclass
class Network:
    """The modules of a GPUNet, before they are assembled into a model."""

    stem: nn.Sequential
    stages: nn.Sequential
    head: ConvBnAct
    head_proj: nn.Conv2d | None
    num_features: int
    feature_info: list[FeatureInfo]


def build_stem(arch: Architecture) -> nn.Sequential:
    """conv 3x3 stride 2 -> BN -> act, plus two conv 3x3 stride 1 for `head_large`."""
    head = arch.head
    eps = EPS_DISTILLED if arch.distill else EPS_NON_DISTILLED
    act = "relu" if arch.distill else (head.act or "swish")
    c = head.out_channels
    layers = [ConvBnAct(head.in_channels, c, 3, stride=STEM_STRIDE, padding=1, act=act, eps=eps)]
    if head.large:
        layers += [ConvBnAct(c, c, 3, padding=1, act=act, eps=eps) for _ in range(2)]
    return nn.Sequential(*layers)


def build_block(spec: LayerSpec, distill: bool, drop_path: float) -> nn.Module:
    """One JSON block entry -> module."""
    if isinstance(spec, ConvSpec):
        k, s = spec.kernel_size, spec.stride
        return ConvBnAct(spec.in_channels, spec.out_channels, k, stride=s, padding=((s - 1) + (k - 1)) // 2,
                         act=spec.act, eps=EPS_NON_DISTILLED)
    if isinstance(spec, IRBSpec):
        mid = hidden_channels(spec, distill)
        return InvertedResidual(
            spec.in_channels, mid, spec.out_channels, spec.kernel_size, stride=spec.stride,
            act="relu" if distill else spec.act,  # type: ignore[arg-type]
            eps=EPS_DISTILLED if distill else EPS_NON_DISTILLED, se_channels=se_channels(spec, mid),
            expand_groups=spec.groups or 1, drop_path=drop_path)
    if isinstance(spec, FusedIRBSpec):
        mid = hidden_channels(spec, distill)
        k, s = spec.kernel_size, spec.stride
        # Non-distilled: timm "same" padding, whose dynamic stride-2 padding NVIDIA drops -> 0 (VALID).
        padding = k // 2 if (distill or s == 1) else 0
        return FusedInvertedResidual(
            spec.in_channels, mid, spec.out_channels, k, stride=s, padding=padding,
            act="relu" if distill else spec.act,  # type: ignore[arg-type]
            eps=EPS_DISTILLED_FUSED if distill else EPS_NON_DISTILLED, se_channels=se_channels(spec, mid),
            drop_path=drop_path)
    raise TypeError(f"not a block layer: {spec!r}")


def stage_layout(arch: Architecture) -> list[tuple[int, int]]:
    """(stage index, index within stage) of every block: stages are runs of equal JSON `stage`."""
    layout: list[tuple[int, int]] = []
    for j, spec in enumerate(arch.blocks):
        if j == 0:
            layout.append((0, 0))
        elif spec.stage == arch.blocks[j - 1].stage:
            layout.append((layout[-1][0], layout[-1][1] + 1))
        else:
            layout.append((layout[-1][0] + 1, 0))
    return layout


def layer_module_paths(arch: Architecture) -> list[str]:
    """Module path of each of `arch.layers` in our model: `stem`, `stages.i.j`, and the root for the tail."""
    return ["stem"] + [f"stages.{i}.{j}" for i, j in stage_layout(arch)] + [""]


def build_network(arch: Architecture, drop_path_rate: float | None = None) -> Network:
    """All modules of `arch`, with blocks grouped into stages (`stage_layout`)."""
    rate = default_drop_path_rate(arch) if drop_path_rate is None else drop_path_rate
    schedule = drop_path_schedule(arch, rate)
    layout = stage_layout(arch)
    stages: list[list[nn.Module]] = []
    feature_info: list[FeatureInfo] = []
    reduction = STEM_STRIDE
    for j, (spec, (stage, _)) in enumerate(zip(arch.blocks, layout, strict=True)):
        if stage == len(stages):
            stages.append([])
        stages[stage].append(build_block(spec, arch.distill, schedule[j]))
        reduction *= spec.stride
        if j + 1 == len(layout) or layout[j + 1][0] != stage:
            feature_info.append(FeatureInfo(spec.out_channels, reduction, f"stages.{stage}"))

    tail = arch.tail
    width = DISTILLED_TAIL_WIDTH if arch.distill else tail.out_channels
    head = ConvBnAct(tail.in_channels, width, 1, act="relu",  # ReLU in both paths, even in SiLU models
                     eps=EPS_DISTILLED if arch.distill else EPS_NON_DISTILLED)
    head_proj = nn.Conv2d(width, tail.out_channels, 1, bias=False) if arch.distill else None
    return Network(build_stem(arch), nn.Sequential(*(nn.Sequential(*s) for s in stages)), head, head_proj,
                   tail.out_channels, feature_info)
