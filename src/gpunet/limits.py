"""Every resource limit in one place, and the checks that apply them before anything is allocated.

An architecture JSON asking for 10^9 channels or classes, a kernel of 10001 or an expansion
of 10^6, an input size of 100000 px or a zip that inflates to GiBs is refused with the value
and the limit, instead of torch (or zlib) running out of memory. The limits are far above
the released models (at most 1984 channels, expansion 8, kernel 7, 1000 classes, 528 px,
40 M parameters, checkpoints of about 100 MB). Messages name each limit as
`gpunet.limits.NAME`, so a user who really needs more knows what to raise.

`gpunet.arch` calls `layer_limit_problem` and `check_architecture_size` when an
`Architecture` is made; `check_image_size` and `check_num_classes` are for requested sizes
(`--img-size`, `num_classes=`); `gpunet._io` applies the zip limits.
"""

from __future__ import annotations

import math
from typing import Any

from gpunet.errors import ArchitectureError, SettingError

MAX_CHANNELS = 16384  # input, output and hidden (expanded) width of any layer
MAX_EXPANSION = 32
MAX_KERNEL_SIZE = 31
MAX_CLASSES = 100_000
MAX_IMAGE_SIZE = 4096  # an architecture's img_resolution, and any requested input size
MIN_IMAGE_SIZE = 32  # smallest requested input size: GPUNets downsample by 32
MAX_PARAMETERS = 250_000_000  # estimated from the layer specs (1 GB in fp32)
MAX_ACTIVATION = 1 << 30  # elements of the largest feature map of one image at img_resolution (4 GiB in fp32)

IMAGE_URL_MAX_BYTES = 64 << 20  # the most an image fetched by URL (predict URL) may be
ZIP_MAX_BYTES = 4 << 30  # the most the compressed members of one zip may inflate to, together
ZIP_MAX_RATIO = 100  # the highest inflation ratio accepted for a compressed member ...
ZIP_RATIO_FLOOR = 16 << 20  # ... that inflates to more than this (small members may compress well)

DISTILLED_TAIL_WIDTH = 1152  # gpunet.builder's (NVIDIA's hard-coded distilled tail), for the estimate

# layer attribute, NVIDIA's JSON field, limit
_FIELD_LIMITS = (("in_channels", "num_in_channels", "MAX_CHANNELS"),
                 ("out_channels", "num_out_channels", "MAX_CHANNELS"),
                 ("expansion", "expansion", "MAX_EXPANSION"), ("kernel_size", "kernel_size", "MAX_KERNEL_SIZE"),
                 ("num_classes", "num_classes", "MAX_CLASSES"))


def over(value: Any, limit_name: str, what: str = "") -> str:
    """'<what><value> is over the limit of <limit> (gpunet.limits.<limit_name>)'."""
    return f"{what}{value!r} is over the limit of {globals()[limit_name]:,} (gpunet.limits.{limit_name})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def layer_limit_problem(layer: Any) -> tuple[str, str] | None:
    """(message, JSON field) for the first field of a layer spec over its limit, else None.

    Also the hidden width `num_in_channels * expansion` of expanding blocks, against MAX_CHANNELS.
    """
    for attr, key, limit_name in _FIELD_LIMITS:
        value = getattr(layer, attr, None)
        if _is_number(value) and value > globals()[limit_name]:
            return over(value, limit_name), key
    expansion: Any = getattr(layer, "expansion", None)
    cin: Any = getattr(layer, "in_channels", None)
    if not (_is_number(expansion) and _is_number(cin)):
        return None
    hidden = math.ceil(cin * expansion)
    if hidden > MAX_CHANNELS:
        return over(hidden, "MAX_CHANNELS", "num_in_channels * expansion = hidden width "), "expansion"
    return None


def check_image_size(size: Any, *, setting: str = "--img-size") -> int:
    """`size` if it is a usable input size (MIN_IMAGE_SIZE..MAX_IMAGE_SIZE px), else `SettingError`.

    `setting` names the argument in the message (e.g. "--img-size" or "img_size").
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise SettingError(f"{setting} must be a whole number of pixels, got {size!r}")
    if size < MIN_IMAGE_SIZE:
        raise SettingError(f"{setting} {size} is below the minimum of {MIN_IMAGE_SIZE} px "
                           "(gpunet.limits.MIN_IMAGE_SIZE: GPUNets downsample by 32)")
    if size > MAX_IMAGE_SIZE:
        raise SettingError(f"{setting} {size} is over the limit of {MAX_IMAGE_SIZE:,} px "
                           "(gpunet.limits.MAX_IMAGE_SIZE)")
    return size


def check_num_classes(num_classes: Any, *, setting: str = "num_classes") -> int:
    """`num_classes` if it is 0 (no classifier) .. MAX_CLASSES, else `SettingError`."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise SettingError(f"{setting} must be a whole number >= 0, got {num_classes!r}")
    if num_classes > MAX_CLASSES:
        raise SettingError(f"{setting} {over(num_classes, 'MAX_CLASSES')}")
    return num_classes


def estimate_layers(arch: Any) -> list[tuple[int, int]]:
    """(parameters, elements of its largest feature map for one image at img_resolution) per layer of `arch`.

    An estimate from the specs alone (nothing is built; widths rounded up, "same" padding),
    within a few percent of the built model: what MAX_PARAMETERS and MAX_ACTIVATION judge.
    """
    out = []
    r = arch.img_resolution
    for layer in arch.layers:
        kind, cin, cout = layer.layer_type, layer.in_channels, layer.out_channels
        if kind in ("head", "head_large"):
            r = -(-r // 2)
            large = 2 * (9 * cout * cout + 2 * cout) if kind == "head_large" else 0
            out.append((9 * cin * cout + 2 * cout + large, cout * r * r))
        elif kind == "tail":
            width = DISTILLED_TAIL_WIDTH if arch.distill else cout
            proj = width * cout if arch.distill else 0
            out.append((cin * width + 2 * width + proj + (cout + 1) * layer.num_classes, width * r * r))
        else:
            r_out = -(-r // layer.stride)
            out.append(_block_estimate(layer, r, r_out))
            r = r_out
    return out


def _block_estimate(layer: Any, r_in: int, r_out: int) -> tuple[int, int]:
    k2, cin, cout = layer.kernel_size ** 2, layer.in_channels, layer.out_channels
    if layer.layer_type == "conv":
        return k2 * cin * cout + 2 * cout, cout * r_out * r_out
    mid = math.ceil(cin * layer.expansion)
    se = 2 * mid * math.ceil(cin / 4) + mid + cin if layer.use_se else 0
    project = mid * cout + 2 * cout
    if layer.layer_type == "fused_irb":
        return k2 * cin * mid + 2 * mid + se + project, mid * r_out * r_out
    expand = cin * mid // (layer.groups or 1) + 2 * mid
    return expand + k2 * mid + 2 * mid + se + project, mid * r_in * r_in


def check_architecture_size(arch: Any) -> None:
    """The parameter count and the largest feature map an architecture implies, against their limits."""
    estimates = estimate_layers(arch)
    params = sum(p for p, _ in estimates)
    if params > MAX_PARAMETERS:
        big = max(range(len(estimates)), key=lambda j: estimates[j][0])
        raise ArchitectureError(
            f"the layers add up to about {params:,} parameters (entry {big + 1} alone {estimates[big][0]:,}), over "
            f"the limit of {MAX_PARAMETERS:,} (gpunet.limits.MAX_PARAMETERS)", source=arch.source)
    big = max(range(len(estimates)), key=lambda j: estimates[j][1])
    if estimates[big][1] > MAX_ACTIVATION:
        raise ArchitectureError(
            f"at img_resolution {arch.img_resolution} its largest feature map holds about {estimates[big][1]:,} "
            f"elements per image, over the limit of {MAX_ACTIVATION:,} (gpunet.limits.MAX_ACTIVATION)",
            source=arch.source, index=big + 1, layer_type=arch.layers[big].layer_type)
