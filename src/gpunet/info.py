"""Model facts: MACs, parameters, a layer-by-layer table, and the zoo overview.

MACs follow NVIDIA's definition: multiply-accumulates of every Conv2d and Linear for one
image (batch 1) at a square resolution; BatchNorm, activations, pooling, SE gating and
residual adds are not counted. Shapes and MACs come from a forward pass on PyTorch's
`meta` device (no memory, no arithmetic), so they cost milliseconds even for GPUNet-D2.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gpunet.arch import Architecture, TailSpec
from gpunet.errors import SettingError
from gpunet.limits import check_image_size

if TYPE_CHECKING:  # torch is imported by the functions that need it: `gpunet list` runs without it
    import torch
    from torch import nn

    from gpunet.model import GPUNet


def _meta_model(arch: Architecture, num_classes: int | None = None) -> GPUNet:
    import torch

    from gpunet.model import GPUNet

    with torch.device("meta"):
        return GPUNet(arch, num_classes).eval()


def _as_model(model_or_name: Any) -> tuple[nn.Module, str | None]:
    """A zoo name / JSON path / Architecture -> meta-device GPUNet; an nn.Module stays itself."""
    from torch import nn

    from gpunet.zoo import resolve_architecture

    if isinstance(model_or_name, nn.Module):
        name = (getattr(model_or_name, "pretrained_cfg", None) or {}).get("name")
        return model_or_name, name
    arch, name = resolve_architecture(model_or_name)
    return _meta_model(arch), name


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return out[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return (out[0].numel() // module.out_features) * module.in_features * module.out_features
    return 0


def _trace(model: nn.Module, img_size: int, watch: dict[str, nn.Module] | None = None) -> tuple[
        int, dict[str, int], dict[str, tuple[int, ...]]]:
    """Forward one image -> (total MACs, MACs per watched module path, output shape per watched path)."""
    import torch
    from torch import nn

    watch = watch or {}
    total = [0]
    per_path = {p: 0 for p in watch}
    shapes: dict[str, tuple[int, ...]] = {}
    owners: dict[nn.Module, list[str]] = {}
    for path, mod in watch.items():
        for sub in mod.modules():
            owners.setdefault(sub, []).append(path)
    handles = []

    def count(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        macs = _layer_macs(mod, out)
        total[0] += macs
        for path in owners.get(mod, []):
            per_path[path] += macs

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(count))
    for path, mod in watch.items():
        handles.append(mod.register_forward_hook(
            lambda _m, _i, out, path=path: shapes.__setitem__(path, tuple(out.shape[1:]))))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=device, dtype=dtype))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total[0], per_path, shapes


def count_macs(model_or_name: Any, img_size: int | None = None) -> int:
    """Conv2d + Linear multiply-accumulates for one image at `img_size` (default: the model's resolution).

    Accepts a model, a zoo name, a JSON path or an Architecture; GPUNets are measured on a
    meta-device copy of their architecture, so no arithmetic is done.
    """
    from gpunet.model import GPUNet

    model, _ = _as_model(model_or_name)
    arch = getattr(model, "arch", None)
    size = _size(img_size, arch.img_resolution if arch is not None else 224)
    if isinstance(model, GPUNet) and next(model.parameters()).device.type != "meta":
        model = _meta_model(model.arch, model.num_classes)
    return _trace(model, size)[0]


def _size(img_size: int | None, default: int) -> int:
    """`img_size` checked against gpunet.limits (0 and negatives are errors, not "the default"), else `default`."""
    return default if img_size is None else check_image_size(img_size, setting="img_size")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model_or_name: Any, img_size: int | None = None) -> dict[str, Any]:
    """Everything `gpunet info` shows: per-layer rows, totals and the pretrained config."""

    from gpunet.builder import layer_geometry
    from gpunet.model import GPUNet
    from gpunet.zoo import get_pretrained_config

    model, name = _as_model(model_or_name)
    if not isinstance(model, GPUNet):
        raise SettingError(f"describe() needs a GPUNet, a zoo name or an architecture JSON, got {type(model).__name__}")
    arch = model.arch
    if next(model.parameters()).device.type != "meta":
        model = _meta_model(arch, model.num_classes)
    size = _size(img_size, arch.img_resolution)
    geometry = layer_geometry(arch)
    tail_parts = {"head": model.head, "classifier": model.classifier}
    if model.head_proj is not None:
        tail_parts["head_proj"] = model.head_proj
    watch: dict[str, nn.Module] = {g.module_path: model.get_submodule(g.module_path) for g in geometry[:-1]}
    watch.update({f"<tail>.{key}": mod for key, mod in tail_parts.items()})
    total, per_path, shapes = _trace(model, size, watch)

    rows: list[dict[str, Any]] = []
    for g in geometry:
        layer = g.spec
        row: dict[str, Any] = {"entry": g.index + 1, "stage": layer.stage, "type": layer.layer_type,
                               "module": g.module_path or "(tail)", "kernel": g.kernel_size, "stride": g.stride,
                               "expansion": getattr(layer, "expansion", None), "in": layer.in_channels,
                               "hidden": g.hidden_channels, "out": layer.out_channels, "se": g.se_channels,
                               "act": g.act}
        if isinstance(layer, TailSpec):
            row.update(stride=None, out=model.num_classes, hidden=model.head_hidden_size,
                       output_shape=list(shapes["<tail>.classifier"]),
                       macs=sum(per_path[f"<tail>.{k}"] for k in tail_parts),
                       params=sum(count_params(m) for m in tail_parts.values()))
        else:
            mod = watch[g.module_path]
            row.update(output_shape=list(shapes[g.module_path]), macs=per_path[g.module_path],
                       params=count_params(mod))
        rows.append(row)
    cfg = get_pretrained_config(name).to_dict() if name else None
    return {
        "model": name or os.fspath(getattr(arch, "source", None) or "custom"),
        "display_name": cfg["display_name"] if cfg else None,
        "img_size": size, "native_resolution": arch.img_resolution, "distill": arch.distill,
        "num_classes": model.num_classes, "num_features": model.head_hidden_size,
        "params": count_params(model), "macs": total,
        "macs_224": total if size == 224 else count_macs(model, 224),
        "layers": rows, "pretrained_cfg": cfg,
    }


def list_rows() -> list[dict[str, Any]]:
    """One row per released model: resolution, params, MACs, published top-1 and latency."""
    from gpunet.zoo import get_architecture, get_pretrained_config, list_models

    rows = []
    for name in list_models():
        cfg = get_pretrained_config(name)  # params and MACs as tabulated (test_zoo checks them against NVIDIA's)
        rows.append({"name": name, "display_name": cfg.display_name, "resolution": cfg.input_size[-1],
                     "crop_pct": cfg.crop_pct, "params": cfg.params, "macs": cfg.macs, "top1": cfg.top1,
                     "latency_ms_v100": cfg.latency_ms_v100, "latency_ms_a100": cfg.latency_ms_a100,
                     "distilled": get_architecture(name).distill, "teacher": cfg.teacher})
    return rows


# ---------------------------------------------------------------------------- text tables

def format_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A plain monospace table; `align` has one of `l`/`r` per column (default: numbers right)."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if rows and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                              or r[i] is None for r in rows) else "l" for i in range(len(headers)))

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w)
                         for v, w, a in zip(values, widths, align, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return str(v)


def human(n: float, unit: str = "") -> str:
    """12345678 -> '12.35 M'."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def list_table() -> str:
    rows = list_rows()
    return format_table(
        ["model", "name", "res", "crop", "params", "MACs", "top1 %", "V100 ms", "A100 ms", "distilled"],
        [[r["name"], r["display_name"], r["resolution"], r["crop_pct"], human(r["params"]), human(r["macs"]),
          r["top1"], r["latency_ms_v100"], r["latency_ms_a100"], r["distilled"]] for r in rows],
        align="llrrrrrrrl")


def describe_text(info: dict[str, Any]) -> str:
    """The human-readable form of `describe()`."""
    title = info["display_name"] or info["model"]
    lines = [f"{title}  ({info['model']}; {'distilled' if info['distill'] else 'non-distilled'} builder path)",
             f"input 3x{info['img_size']}x{info['img_size']} (native {info['native_resolution']}), "
             f"{info['num_classes']} classes, {info['num_features']} features",
             f"parameters {info['params']:,} ({human(info['params'])}); MACs {info['macs']:,} "
             f"({human(info['macs'])}) at {info['img_size']} px, {human(info['macs_224'])} at 224 px", ""]
    headers = ["#", "stage", "type", "k", "s", "exp", "in", "hidden", "out", "SE", "act", "output", "params",
               "MACs"]
    rows = [[r["entry"], r["stage"], r["type"], r["kernel"], r["stride"], r["expansion"], r["in"], r["hidden"],
             r["out"], r["se"], r["act"], r["output_shape"], r["params"], human(r["macs"])] for r in info["layers"]]
    lines.append(format_table(headers, rows, align="rrlrrrrrrrlrrr"))
    cfg = info["pretrained_cfg"]
    lines.append("")
    if cfg:
        lines.append("pretrained config:")
        keys = ["input_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "top1", "latency_ms_v100",
                "latency_ms_a100", "teacher", "teacher_input_size", "checkpoint_format", "nvidia_key", "url",
                "filename", "license"]
        width = max(len(k) for k in keys)
        for k in keys:
            v = cfg.get(k)
            text = ", ".join(f"{x:g}" for x in v) if k in ("mean", "std") else _cell(v)
            lines.append(f"  {k.ljust(width)}  {text}")
    else:
        lines.append("pretrained config: none (not a released model; preprocessing defaults to resize "
                     f"{info['native_resolution']} bicubic, crop_pct 1.0, ImageNet mean/std)")
    return "\n".join(lines)
