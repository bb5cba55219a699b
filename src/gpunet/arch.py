"""Architecture description: typed layer specs, NVIDIA's JSON format and our compact tables.

A GPUNet is a list of layers: a stem (`head` / `head_large`), blocks (`conv`, `irb`,
`fused_irb`) and a `tail`. NVIDIA writes it as a JSON list whose first entry is a
`data` entry carrying the resolution and the `distill` flag that selects the builder
path. `Architecture` is the validated, immutable form of that list; `read_json` /
`to_json` convert losslessly (fields NVIDIA left out stay left out), and `from_table`
decodes the compact tables in which the released models are written (see `zoo.py`).

Every error is an `ArchitectureError` that names the entry index (0 = the `data`
entry, as in NVIDIA's list) and the field.

Resource limits (`gpunet.limits`) are checked when an `Architecture` is made, before
anything is allocated: a JSON asking for 10^9 channels or classes, a kernel of 10001 or an
expansion of 10^6 is refused with the value and the limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from gpunet.errors import ArchitectureError
from gpunet.limits import MAX_IMAGE_SIZE, check_architecture_size, layer_limit_problem, over
from gpunet.limits import check_image_size as check_image_size  # the image-size limit, here too

ACTIVATIONS = ("relu", "swish", "silu")

@dataclass(frozen=True)
class _Spec:
    """Base of the layer specs: JSON field names map 1:1 onto dataclass fields."""

    LAYER_TYPE: ClassVar[str] = ""
    # JSON key -> attribute, in NVIDIA's key order; attributes defaulting to None are optional
    JSON_KEYS: ClassVar[tuple[tuple[str, str], ...]] = ()

    @property
    def layer_type(self) -> str:
        return self.LAYER_TYPE


@dataclass(frozen=True)
class HeadSpec(_Spec):
    """The stem: conv 3x3 stride 2 (+ two conv 3x3 stride 1 when `large`)."""

    in_channels: int
    out_channels: int
    large: bool = False
    act: str | None = None
    stage: int | None = None
    JSON_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("num_in_channels", "in_channels"), ("num_out_channels", "out_channels"),
        ("act", "act"), ("stage", "stage"))

    @property
    def layer_type(self) -> str:
        return "head_large" if self.large else "head"


@dataclass(frozen=True)
class ConvSpec(_Spec):
    """A plain conv -> BN -> act layer (never residual)."""

    LAYER_TYPE: ClassVar[str] = "conv"
    in_channels: int
    out_channels: int
    stride: int
    kernel_size: int
    act: str | None
    stage: int | None
    JSON_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("num_in_channels", "in_channels"), ("num_out_channels", "out_channels"), ("stride", "stride"),
        ("kernel_size", "kernel_size"), ("act", "act"), ("stage", "stage"))


@dataclass(frozen=True)
class _ResidualSpec(_Spec):
    in_channels: int
    out_channels: int
    stride: int
    expansion: int | float
    kernel_size: int
    stage: int | None
    act: str | None = None
    use_se: bool | None = None
    groups: int | None = None
    JSON_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("num_in_channels", "in_channels"), ("num_out_channels", "out_channels"), ("stride", "stride"),
        ("expansion", "expansion"), ("kernel_size", "kernel_size"), ("act", "act"), ("use_se", "use_se"),
        ("groups", "groups"), ("stage", "stage"))


@dataclass(frozen=True)
class IRBSpec(_ResidualSpec):
    """Inverted residual (MBConv): 1x1 expand, depthwise kxk, [SE], 1x1 project."""

    LAYER_TYPE: ClassVar[str] = "irb"


@dataclass(frozen=True)
class FusedIRBSpec(_ResidualSpec):
    """Fused inverted residual (FusedMBConv / EdgeResidual): kxk expand, [SE], 1x1 project."""

    LAYER_TYPE: ClassVar[str] = "fused_irb"


@dataclass(frozen=True)
class TailSpec(_Spec):
    """1x1 conv to the feature width, global pool, classifier."""

    LAYER_TYPE: ClassVar[str] = "tail"
    in_channels: int
    out_channels: int
    num_classes: int
    stage: int | None = None
    JSON_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("num_in_channels", "in_channels"), ("num_out_channels", "out_channels"),
        ("num_classes", "num_classes"), ("stage", "stage"))


LayerSpec = HeadSpec | ConvSpec | IRBSpec | FusedIRBSpec | TailSpec
BlockSpec = ConvSpec | IRBSpec | FusedIRBSpec
_SPEC_BY_TYPE: dict[str, type[_Spec]] = {
    "head": HeadSpec, "head_large": HeadSpec, "conv": ConvSpec, "irb": IRBSpec,
    "fused_irb": FusedIRBSpec, "tail": TailSpec}
# NVIDIA's GPUNet-D2 JSON spells the (unused) tail stage "stage:"; read it as "stage".
_KEY_ALIASES = {"stage:": "stage"}


@dataclass(frozen=True)
class Architecture:
    """A validated GPUNet: resolution, builder path and layers (stem first, tail last)."""

    img_resolution: int
    distill: bool
    layers: tuple[LayerSpec, ...]
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def head(self) -> HeadSpec:
        return self.layers[0]  # type: ignore[return-value]

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return self.layers[1:-1]  # type: ignore[return-value]

    @property
    def tail(self) -> TailSpec:
        return self.layers[-1]  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return self.tail.num_classes

    def to_json(self) -> list[dict[str, Any]]:
        """NVIDIA's JSON list (fields that were absent stay absent)."""
        out: list[dict[str, Any]] = [
            {"layer_type": "data", "img_resolution": self.img_resolution, "distill": self.distill}]
        for layer in self.layers:
            entry: dict[str, Any] = {"layer_type": layer.layer_type}
            for key, attr in layer.JSON_KEYS:
                value = getattr(layer, attr)
                if value is not None:
                    entry[key] = value
            out.append(entry)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=4)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write NVIDIA-format JSON atomically."""
        from gpunet._io import atomic_write_bytes

        atomic_write_bytes(path, (self.dumps() + "\n").encode())


def read_json(obj: Any, source: str | None = None) -> Architecture:
    """Decode NVIDIA's JSON list (already parsed) into an `Architecture`."""
    if not isinstance(obj, list) or not obj:
        raise ArchitectureError("expected a non-empty JSON list of layer entries", source=source)
    for i, entry in enumerate(obj):
        if not isinstance(entry, dict):
            raise ArchitectureError(f"expected a JSON object, got {type(entry).__name__}", source=source, index=i)
        if "layer_type" not in entry:
            raise ArchitectureError("missing required field", source=source, index=i, field_name="layer_type")
    data = obj[0]
    if data["layer_type"] != "data":
        raise ArchitectureError(f"the first entry must have layer_type 'data', got {data['layer_type']!r}",
                                source=source, index=0, field_name="layer_type")
    _check_keys(data, {"layer_type", "img_resolution", "distill"}, source, 0)
    resolution = _get(data, "img_resolution", _positive_int, source, 0, required=True)
    distill = _get(data, "distill", _boolean, source, 0, required=True)
    layers = tuple(_read_layer(entry, source, i) for i, entry in enumerate(obj[1:], start=1))
    return Architecture(resolution, distill, layers, source=source)


def load_json(path: str | os.PathLike[str]) -> Architecture:
    """Read an NVIDIA-format architecture JSON file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ArchitectureError("file not found", source=source) from None
    except OSError as exc:  # a directory, no permission, ...
        raise ArchitectureError(f"cannot read file ({exc.strerror or exc})", source=source) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchitectureError(f"not valid JSON ({exc})", source=source) from None
    return read_json(obj, source=source)


def loads_json(text: str, source: str | None = None) -> Architecture:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"not valid JSON ({exc})", source=source) from None
    return read_json(obj, source=source)


# ---------------------------------------------------------------------------- field decoding

def _positive_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "a positive integer"


def _nonneg_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "a non-negative integer"


def _positive_number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    return None if ok else "a positive number"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _activation(v: Any) -> str | None:
    return None if v in ACTIVATIONS else "one of " + ", ".join(repr(a) for a in ACTIVATIONS)


def _stride(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v in (1, 2) else "1 or 2"


def _odd_kernel(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 2 == 1
    return None if ok else "an odd positive integer (1, 3, 5, 7, ...)"


_CHECKS = {
    "in_channels": _positive_int, "out_channels": _positive_int, "stride": _stride,
    "kernel_size": _odd_kernel, "expansion": _positive_number, "act": _activation, "use_se": _boolean,
    "groups": _positive_int, "stage": _nonneg_int, "num_classes": _positive_int,
}


def _get(entry: dict[str, Any], key: str, check: Any, source: str | None, index: int,
         required: bool) -> Any:
    layer_type = entry.get("layer_type")
    if key not in entry:
        if required:
            raise ArchitectureError("missing required field", source=source, index=index,
                                    layer_type=layer_type, field_name=key)
        return None
    value = entry[key]
    expected = check(value)
    if expected:
        raise ArchitectureError(f"expected {expected}, got {value!r}", source=source, index=index,
                                layer_type=layer_type, field_name=key)
    return value


def _check_keys(entry: dict[str, Any], allowed: set[str], source: str | None, index: int) -> None:
    for key in entry:
        if _KEY_ALIASES.get(key, key) not in allowed:
            raise ArchitectureError(f"unknown field (allowed: {', '.join(sorted(allowed))})", source=source,
                                    index=index, layer_type=entry.get("layer_type"), field_name=key)


def _read_layer(entry: dict[str, Any], source: str | None, index: int) -> LayerSpec:
    layer_type = entry["layer_type"]
    cls = _SPEC_BY_TYPE.get(layer_type)
    if cls is None:
        raise ArchitectureError(f"unknown layer_type {layer_type!r} (expected one of "
                                f"{', '.join(sorted(_SPEC_BY_TYPE))}; 'data' only as entry 0)",
                                source=source, index=index, field_name="layer_type")
    _check_keys(entry, {"layer_type"} | {k for k, _ in cls.JSON_KEYS}, source, index)
    for alias, key in _KEY_ALIASES.items():
        if alias in entry and key in entry:
            raise ArchitectureError(f"both '{key}' and its alias '{alias}' given", source=source, index=index,
                                    layer_type=layer_type, field_name=alias)
    entry = {_KEY_ALIASES.get(k, k): v for k, v in entry.items()}
    required = {f.name for f in fields(cls) if f.default is not None and f.name != "source"}
    # a few fields NVIDIA's builder reads only on one path: absence is judged in _validate
    required -= {"act", "stage", "large"}
    kwargs: dict[str, Any] = {}
    for key, attr in cls.JSON_KEYS:
        kwargs[attr] = _get(entry, key, _CHECKS[attr], source, index, required=attr in required)
    if cls is HeadSpec:
        kwargs["large"] = layer_type == "head_large"
    return cls(**kwargs)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- whole-model rules

def _validate(arch: Architecture) -> None:
    src = arch.source
    if _positive_int(arch.img_resolution):
        raise ArchitectureError(f"expected a positive integer, got {arch.img_resolution!r}", source=src,
                                index=0, field_name="img_resolution")
    if arch.img_resolution > MAX_IMAGE_SIZE:
        raise ArchitectureError(over(arch.img_resolution, "MAX_IMAGE_SIZE"), source=src, index=0,
                                field_name="img_resolution")
    layers = arch.layers
    if len(layers) < 2:
        raise ArchitectureError("needs at least a head and a tail entry after 'data'", source=src)
    for i, layer in enumerate(layers, start=1):
        def err(msg: str, fld: str | None = None, i: int = i, layer: LayerSpec = layer) -> ArchitectureError:
            return ArchitectureError(msg, source=src, index=i, layer_type=layer.layer_type, field_name=fld)

        if problem := layer_limit_problem(layer):
            raise err(*problem)

        is_head, is_tail = isinstance(layer, HeadSpec), isinstance(layer, TailSpec)
        if i == 1 and not is_head:
            raise err("entry 1 must be the stem ('head' or 'head_large')", "layer_type")
        if i == len(layers) and not is_tail:
            raise err(f"the last entry must be the 'tail', got {layer.layer_type!r}", "layer_type")
        if (is_head and i != 1) or (is_tail and i != len(layers)):
            raise err(f"{layer.layer_type!r} may appear only as the "
                      f"{'first' if is_head else 'last'} layer", "layer_type")
        if i > 1:
            prev = layers[i - 2]
            if layer.in_channels != prev.out_channels:
                raise err(f"num_in_channels is {layer.in_channels} but entry {i - 1} ({prev.layer_type}) "
                          f"outputs {prev.out_channels} channels", "num_in_channels")
        _validate_path(layer, arch.distill, err)
    check_architecture_size(arch)


def _validate_path(layer: LayerSpec, distill: bool, err: Any) -> None:
    """Rules of NVIDIA's two builder paths (distill=false: GPUNet-0/1/2/P0/P1; true: D1/D2)."""
    path = "distilled (distill=true)" if distill else "non-distilled (distill=false)"
    if isinstance(layer, (ConvSpec, IRBSpec, FusedIRBSpec)) and layer.stage is None:
        raise err("missing required field", "stage")
    if distill:
        if isinstance(layer, ConvSpec):
            raise err(f"layer_type 'conv' is not supported on the {path} path", "layer_type")
        if getattr(layer, "act", None) not in (None, "relu"):
            raise err(f"the {path} path uses ReLU everywhere; got act={layer.act!r}", "act")  # type: ignore[union-attr]
        if getattr(layer, "use_se", None):
            raise err(f"the {path} path has no Squeeze-Excite", "use_se")
        if isinstance(layer, (IRBSpec, FusedIRBSpec)):
            mid = layer.in_channels * layer.expansion
            if mid != int(mid):
                raise err(f"num_in_channels * expansion = {mid:g} must be a whole number on the {path} "
                          "path (it uses the product as the hidden width)", "expansion")
            groups = layer.groups or 1
            if layer.in_channels % groups or int(mid) % groups:
                raise err(f"groups={groups} must divide num_in_channels ({layer.in_channels}) and the "
                          f"hidden width ({int(mid)})", "groups")
    else:
        if isinstance(layer, HeadSpec) and layer.large:
            raise err(f"'head_large' is only supported on the distilled path, not the {path} path",
                      "layer_type")
        if isinstance(layer, (ConvSpec, IRBSpec, FusedIRBSpec)) and layer.act is None:
            raise err("missing required field", "act")
        if isinstance(layer, (IRBSpec, FusedIRBSpec)):
            if layer.use_se is None:
                raise err("missing required field", "use_se")
            if layer.groups not in (None, 1):
                raise err(f"groups must be 1 on the {path} path, got {layer.groups}", "groups")


# ---------------------------------------------------------------------------- compact tables

TABLE_COLUMNS = ("stage", "type", "n", "k", "s", "e", "out", "act", "se", "groups")


def from_table(table: str, *, img_resolution: int, distill: bool, num_classes: int = 1000,
               in_channels: int = 3) -> Architecture:
    """Decode a compact table: one row per run of `n` identical layers.

    Columns are `TABLE_COLUMNS`; `-` leaves a field out, as NVIDIA's JSON does. In a run,
    the first layer has the row's stride and the others stride 1; input channels chain
    from the previous layer. `head`/`head_large`/`tail` rows use `out` (and `act`/`stage`).
    """
    layers: list[LayerSpec] = []
    channels = in_channels
    for lineno, raw in enumerate(table.strip().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = line.split()
        if len(cells) != len(TABLE_COLUMNS):
            raise ArchitectureError(f"table line {lineno}: expected {len(TABLE_COLUMNS)} columns "
                                    f"{TABLE_COLUMNS}, got {len(cells)}: {raw.strip()!r}")
        row = dict(zip(TABLE_COLUMNS, (_cell(c) for c in cells), strict=True))
        kind = row["type"]
        for rep in range(int(row["n"])):
            common = {"in_channels": channels, "out_channels": row["out"], "stage": row["stage"]}
            if kind in ("head", "head_large"):
                layer: LayerSpec = HeadSpec(large=kind == "head_large", act=row["act"], **common)
            elif kind == "tail":
                layer = TailSpec(num_classes=num_classes, **common)
            elif kind == "conv":
                layer = ConvSpec(stride=row["s"] if rep == 0 else 1, kernel_size=row["k"], act=row["act"],
                                 **common)
            elif kind in ("irb", "fused_irb"):
                cls = IRBSpec if kind == "irb" else FusedIRBSpec
                layer = cls(stride=row["s"] if rep == 0 else 1, expansion=row["e"], kernel_size=row["k"],
                            act=row["act"], use_se=row["se"], groups=row["groups"], **common)
            else:
                raise ArchitectureError(f"table line {lineno}: unknown layer type {kind!r}")
            layers.append(layer)
            channels = layer.out_channels
    return Architecture(img_resolution, distill, tuple(layers))


def _cell(text: str) -> Any:
    if text == "-":
        return None
    if text in ("yes", "no"):
        return text == "yes"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text
