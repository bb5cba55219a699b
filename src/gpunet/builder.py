"""Decode an `Architecture` into modules, following NVIDIA's two builder paths exactly.

This is the one place that knows NVIDIA's rules (spec: BatchNorm eps per path, hidden
widths, Squeeze-Excite rounding, the stride-2 fused-block padding quirk, the distilled
tail), the drop-path schedule, how layers group into stages and where the stage
outputs (feature points) are.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gpunet._checks import check_rate
from gpunet.arch import Architecture, BlockSpec, ConvSpec, FusedIRBSpec, HeadSpec, IRBSpec, LayerSpec, TailSpec
from gpunet.blocks import ConvBnAct, FusedInvertedResidual, InvertedResidual, Tail

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
    head_proj: nn.Module | None
    num_features: int  # channels of the head conv's output (the feature map before pooling)
    head_hidden_size: int  # width after pooling (and the distilled path's projection): the classifier's input
    feature_info: list[FeatureInfo]


@dataclass(frozen=True)
class LayerGeometry:
    """What the builder makes of one entry of `arch.layers`: sizes, padding, activation, eps and where it lives.

    `info` (the layer table) and the search's per-layer latency model read this instead of
    re-deriving NVIDIA's rules. Head and tail have no single kernel: their `kernel_size` is the
    stem's 3x3 and the tail's 1x1 conv; `padding` is the first conv's.
    """

    index: int  # position in arch.layers (0 = head; NVIDIA's JSON entry index - 1)
    spec: LayerSpec
    module_path: str  # in GPUNet: "stem", "stages.i.j"; "" for the tail (head, head_proj, classifier)
    in_resolution: int
    out_resolution: int
    kernel_size: int
    stride: int
    padding: int
    hidden_channels: int | None  # expanded width of IRB / Fused-IRB; the tail's pre-pool width
    se_channels: int | None  # Squeeze-Excite width, None without SE
    act: str | None  # the activation the builder uses (the distilled path is ReLU whatever the JSON says)
    eps: float  # BatchNorm eps


def _conv_out(resolution: int, kernel: int, stride: int, padding: int) -> int:
    return (resolution + 2 * padding - kernel) // stride + 1


def _block_geometry(spec: BlockSpec, distill: bool) -> tuple[int, int | None, int | None, str | None, float]:
    """(padding, hidden, se, act, eps) of a block entry: NVIDIA's per-path rules, in one place."""
    if isinstance(spec, ConvSpec):
        k, s = spec.kernel_size, spec.stride
        return ((s - 1) + (k - 1)) // 2, None, None, spec.act, EPS_NON_DISTILLED
    if isinstance(spec, (IRBSpec, FusedIRBSpec)):
        mid = hidden_channels(spec, distill)
        act = "relu" if distill else spec.act
        se = se_channels(spec, mid) or None
        if isinstance(spec, IRBSpec):
            return spec.kernel_size // 2, mid, se, act, EPS_DISTILLED if distill else EPS_NON_DISTILLED
        # Non-distilled: timm "same" padding, whose dynamic stride-2 padding NVIDIA drops -> 0 (VALID).
        padding = spec.kernel_size // 2 if (distill or spec.stride == 1) else 0
        return padding, mid, se, act, EPS_DISTILLED_FUSED if distill else EPS_NON_DISTILLED
    raise TypeError(f"not a block layer: {spec!r}")


def layer_geometry(arch: Architecture) -> list[LayerGeometry]:
    """`LayerGeometry` of every entry of `arch.layers` (head, blocks, tail) at `arch.img_resolution`."""
    paths = layer_module_paths(arch)
    eps = EPS_DISTILLED if arch.distill else EPS_NON_DISTILLED
    head = arch.head
    r = arch.img_resolution
    r_stem = _conv_out(r, 3, STEM_STRIDE, 1)  # head_large's extra 3x3 stride-1 convs keep the size
    out = [LayerGeometry(0, head, paths[0], r, r_stem, 3, STEM_STRIDE, 1, None, None, _stem_act(arch), eps)]
    r = r_stem
    for j, spec in enumerate(arch.blocks, start=1):
        padding, mid, se, act, block_eps = _block_geometry(spec, arch.distill)
        r_out = _conv_out(r, spec.kernel_size, spec.stride, padding)
        out.append(LayerGeometry(j, spec, paths[j], r, r_out, spec.kernel_size, spec.stride, padding, mid, se, act,
                                 block_eps))
        r = r_out
    tail = arch.tail
    out.append(LayerGeometry(len(arch.layers) - 1, tail, paths[-1], r, 1, 1, 1, 0, _tail_width(arch), None, "relu",
                             eps))
    return out


def _stem_act(arch: Architecture) -> str:
    return "relu" if arch.distill else (arch.head.act or "swish")


def _tail_width(arch: Architecture) -> int:
    """Channels of the tail's 1x1 conv: NVIDIA's hard-coded 1152 on the distilled path."""
    return DISTILLED_TAIL_WIDTH if arch.distill else arch.tail.out_channels


def build_stem(arch: Architecture) -> nn.Sequential:
    """conv 3x3 stride 2 -> BN -> act, plus two conv 3x3 stride 1 for `head_large`."""
    head = arch.head
    eps = EPS_DISTILLED if arch.distill else EPS_NON_DISTILLED
    act = _stem_act(arch)
    c = head.out_channels
    layers = [ConvBnAct(head.in_channels, c, 3, stride=STEM_STRIDE, padding=1, act=act, eps=eps)]
    if head.large:
        layers += [ConvBnAct(c, c, 3, padding=1, act=act, eps=eps) for _ in range(2)]
    return nn.Sequential(*layers)


def build_block(spec: BlockSpec, distill: bool, drop_path: float) -> nn.Module:
    """One JSON block entry -> module."""
    padding, mid, se, act, eps = _block_geometry(spec, distill)
    k, s = spec.kernel_size, spec.stride
    if isinstance(spec, ConvSpec):
        return ConvBnAct(spec.in_channels, spec.out_channels, k, stride=s, padding=padding, act=act, eps=eps)
    assert mid is not None and act is not None  # validated: IRB / Fused-IRB entries always name their act
    if isinstance(spec, IRBSpec):
        return InvertedResidual(spec.in_channels, mid, spec.out_channels, k, stride=s, act=act, eps=eps,
                                se_channels=se or 0, expand_groups=spec.groups or 1, drop_path=drop_path)
    return FusedInvertedResidual(spec.in_channels, mid, spec.out_channels, k, stride=s, padding=padding, act=act,
                                 eps=eps, se_channels=se or 0, drop_path=drop_path)


def build_tail(arch: Architecture, num_classes: int | None = None) -> Tail:
    """The tail: 1x1 conv-BN-ReLU (1152 wide when distilled) -> pool -> [1x1 projection + ReLU] -> classifier."""
    tail = arch.tail
    width = _tail_width(arch)
    head = ConvBnAct(tail.in_channels, width, 1, act="relu",  # ReLU in both paths, even in SiLU models
                     eps=EPS_DISTILLED if arch.distill else EPS_NON_DISTILLED)
    head_proj = nn.Conv2d(width, tail.out_channels, 1, bias=False) if arch.distill else None
    classes = tail.num_classes if num_classes is None else num_classes
    classifier = nn.Linear(tail.out_channels, classes) if classes > 0 else nn.Identity()
    return Tail(head, head_proj, classifier)


def build_layer(arch: Architecture, index: int) -> nn.Module:
    """The module the builder makes for `arch.layers[index]` alone (drop path off): stem, block or `Tail`."""
    spec = arch.layers[index]
    if isinstance(spec, HeadSpec):
        return build_stem(arch)
    if isinstance(spec, TailSpec):
        return build_tail(arch)
    return build_block(spec, arch.distill, 0.0)


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
    rate = default_drop_path_rate(arch) if drop_path_rate is None else check_rate(drop_path_rate, "drop_path_rate")
    schedule = drop_path_schedule(arch, rate)
    stages: list[list[nn.Module]] = []
    for j, (spec, (stage, _)) in enumerate(zip(arch.blocks, stage_layout(arch), strict=True)):
        if stage == len(stages):
            stages.append([])
        stages[stage].append(build_block(spec, arch.distill, schedule[j]))

    tail = build_tail(arch, 0)
    return Network(build_stem(arch), nn.Sequential(*(nn.Sequential(*s) for s in stages)), tail.head,
                   tail.head_proj, _tail_width(arch), arch.tail.out_channels, stage_feature_info(arch))


def stage_feature_info(arch: Architecture) -> list[FeatureInfo]:
    """Each stage's output (its last block's): channels, total stride and module name."""
    layout = stage_layout(arch)
    feature_info: list[FeatureInfo] = []
    reduction = STEM_STRIDE
    for j, (spec, (stage, _)) in enumerate(zip(arch.blocks, layout, strict=True)):
        reduction *= spec.stride
        if j + 1 == len(layout) or layout[j + 1][0] != stage:
            feature_info.append(FeatureInfo(spec.out_channels, reduction, f"stages.{stage}"))
    return feature_info
