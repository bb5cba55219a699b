"""The model zoo: the seven released GPUNets as tables, their pretrained configs, `create_model` and weights.

Tables are decoded by `arch.from_table`: one row per run of `n` layers (first layer has
stride `s`, the rest 1), `-` = field absent in NVIDIA's JSON. Channels chain implicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpunet import hub
from gpunet import weights as W
from gpunet._names import did_you_mean
from gpunet.arch import Architecture, from_table, load_json
from gpunet.errors import SettingError
from gpunet.model import DEFAULT_DROP_RATE, GPUNet, GPUNetFeatures

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NGC_BASE_URL = "https://api.ngc.nvidia.com/v2/models/nvidia/dle"
NGC_VERSION = "21.12.0_amp"

_HEADER = "# stage  type        n  k  s  e     out   act    se   groups\n"

GPUNET_0 = _HEADER + """
-      head        1  -  -  -     32    -      -    -
1      conv        2  3  1  -     32    relu   -    -
2      fused_irb   2  3  2  5     32    relu   no   -
3      fused_irb   3  3  2  5     64    relu   no   -
4      irb         3  3  2  5     256   swish  no   -
6      irb         2  3  2  5     704   relu   yes  -
-      tail        1  -  -  -     1280  -      -    -
"""

GPUNET_1 = _HEADER + """
-      head        1  -  -  -     24    -      -    -
1      conv        1  3  1  -     24    relu   -    -
2      fused_irb   2  3  2  4     64    swish  no   -
3      fused_irb   2  3  2  4     96    swish  no   -
4      irb         1  3  2  2     160   swish  yes  -
5      irb         4  3  1  5     288   relu   no   -
6      irb         4  3  2  4     448   relu   yes  -
-      tail        1  -  -  -     1280  -      -    -
"""

GPUNET_2 = _HEADER + """
-      head        1  -  -  -     32    -      -    -
1      conv        3  3  1  -     32    relu   -    -
2      fused_irb   1  5  2  6     32    swish  yes  -
3      fused_irb   3  3  2  3     112   swish  no   -
4      irb         6  3  2  6     144   swish  no   -
5      irb         4  5  1  3     160   relu   no   -
6      irb         8  3  2  3     224   swish  yes  -
7      irb         7  5  1  2     832   relu   no   -
-      tail        1  -  -  -     1280  -      -    -
"""

GPUNET_P0 = _HEADER + """
-      head        1  -  -  -     32    relu   -    -
1      conv        2  3  1  -     32    relu   -    -
2      conv        1  3  2  -     64    relu   -    -
3      irb         1  3  2  8     96    relu   no   -
3      irb         2  3  1  7.67  96    relu   no   -
4      irb         1  3  2  7.67  256   relu   no   -
4      irb         1  5  1  4.25  256   relu   no   -
4      irb         1  3  1  4.75  256   relu   no   -
5      irb         1  3  2  8     704   relu   no   -
5      irb         1  5  1  3.82  704   relu   no   -
5      irb         1  3  1  3.36  704   relu   no   -
5      irb         1  3  1  2.55  704   relu   no   -
6      irb         1  3  2  5.73  704   relu   no   -
-      tail        1  -  -  -     1984  -      -    -
"""

GPUNET_P1 = _HEADER + """
-      head        1  -  -  -     32    relu   -    -
1      conv        2  3  1  -     32    relu   -    -
2      conv        1  5  2  -     64    relu   -    -
2      irb         2  3  1  8     64    relu   no   -
3      irb         2  5  2  8     96    relu   no   -
4      irb         1  5  2  8     256   relu   no   -
4      irb         1  5  1  7.5   256   relu   no   -
4      irb         1  3  1  7.88  256   relu   no   -
5      irb         1  5  2  7.88  704   relu   no   -
5      irb         1  5  1  8     704   relu   no   -
5      irb         1  3  1  7.41  704   relu   no   -
5      irb         1  5  1  8     704   relu   no   -
6      irb         1  5  2  7.95  704   relu   no   -
-      tail        1  -  -  -     1984  -      -    -
"""

GPUNET_D1 = _HEADER + """
0      head        1  -  -  -     33    -      -    -
0      irb         1  3  1  1     33    -      -    1
1      irb         1  3  2  3     44    -      -    1
1      irb         1  5  1  4     44    -      -    1
1      irb         1  3  1  3     44    -      -    1
2      irb         1  5  2  4     67    -      -    1
2      irb         1  5  1  4     67    -      -    1
2      irb         1  3  1  6     67    -      -    1
2      irb         1  5  1  3     67    -      -    1
3      irb         1  7  2  6     134   -      -    1
3      irb         1  5  1  6     134   -      -    1
3      irb         1  3  1  3     134   -      -    1
3      irb         1  5  1  4     134   -      -    1
3      irb         1  3  1  6     190   -      -    1
3      irb         1  5  1  6     190   -      -    1
3      irb         1  7  1  6     190   -      -    1
3      irb         1  3  1  4     190   -      -    1
4      irb         1  3  2  6     268   -      -    1
4      irb         1  3  1  6     268   -      -    1
4      irb         1  5  1  6     268   -      -    1
4      irb         3  3  1  3     268   -      -    1
-      tail        1  -  -  -     1984  -      -    -
"""

GPUNET_D2 = _HEADER + """
0      head_large  1  -  -  -     48    -      -    -
0      irb         1  3  1  1     48    -      -    1
1      irb         1  3  2  3     64    -      -    1
1      irb         1  5  1  4     64    -      -    1
1      irb         1  3  1  3     64    -      -    1
2      irb         1  5  2  4     96    -      -    1
2      irb         1  5  1  4     96    -      -    1
2      irb         1  3  1  6     96    -      -    1
2      irb         1  5  1  3     96    -      -    1
3      irb         1  7  2  6     192   -      -    1
3      irb         1  5  1  6     192   -      -    1
3      irb         1  3  1  3     192   -      -    1
3      irb         2  5  1  4     192   -      -    1
3      irb         1  3  1  6     272   -      -    1
3      irb         1  5  1  6     272   -      -    1
3      irb         1  7  1  6     272   -      -    1
3      irb         1  5  1  6     272   -      -    1
3      irb         1  3  1  4     272   -      -    1
4      irb         1  3  2  6     384   -      -    1
4      irb         1  3  1  6     384   -      -    1
4      irb         1  5  1  6     384   -      -    1
4      irb         4  3  1  3     384   -      -    1
5      tail        1  -  -  -     1984  -      -    -
"""


@dataclass(frozen=True)
class PretrainedConfig:
    """What the released weights need and promise: preprocessing, source, published results."""

    name: str
    display_name: str
    input_size: tuple[int, int, int]
    crop_pct: float
    nvidia_key: str  # NVIDIA's latency key: JSON file / checkpoint member name
    checkpoint_format: str  # "timm" (dict with state_dict_ema) or "raw_state_dict" (P0/P1)
    top1: float  # published ImageNet top-1 (%)
    latency_ms_v100: float  # published TensorRT fp16 batch-1 latency
    latency_ms_a100: float
    teacher: str | None = None  # distillation teacher used by NVIDIA (timm name, resolution)
    teacher_input_size: int | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    license: str = "NVIDIA NGC terms of use (see the model card)"
    sha256: str | None = field(default=None)  # unknown until first download; recorded in the cache

    @property
    def ngc_name(self) -> str:
        return f"{self.name}_pyt_ckpt"

    @property
    def url(self) -> str:
        return f"{NGC_BASE_URL}/{self.ngc_name}/versions/{NGC_VERSION}/zip"

    @property
    def filename(self) -> str:
        """Cache / mirror file name of the NGC zip."""
        return f"{self.ngc_name}_{NGC_VERSION}.zip"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(url=self.url, filename=self.filename, ngc_name=self.ngc_name)
        return d


@dataclass(frozen=True)
class ZooEntry:
    arch: Architecture
    cfg: PretrainedConfig


def _entry(name: str, display: str, table: str, res: int, distill: bool, key: str, fmt: str, top1: float,
           v100: float, a100: float, crop_pct: float = 1.0, teacher: tuple[str, int] | None = None) -> ZooEntry:
    arch = from_table(table, img_resolution=res, distill=distill)
    cfg = PretrainedConfig(name, display, (3, res, res), crop_pct, key, fmt, top1, v100, a100,
                           teacher=teacher[0] if teacher else None,
                           teacher_input_size=teacher[1] if teacher else None)
    return ZooEntry(arch, cfg)


_ZOO: dict[str, ZooEntry] = {e.cfg.name: e for e in (
    _entry("gpunet_0", "GPUNet-0", GPUNET_0, 320, False, "0.65ms", "timm", 78.9, 0.63, 0.46),
    _entry("gpunet_1", "GPUNet-1", GPUNET_1, 288, False, "0.85ms", "timm", 80.5, 0.82, 0.59),
    _entry("gpunet_2", "GPUNet-2", GPUNET_2, 384, False, "1.75ms", "timm", 82.2, 1.68, 1.25),
    _entry("gpunet_p0", "GPUNet-P0", GPUNET_P0, 224, False, "0.5ms-D", "raw_state_dict", 80.3, 0.63, 0.45,
           crop_pct=0.875, teacher=("tf_efficientnet_b2", 260)),
    _entry("gpunet_p1", "GPUNet-P1", GPUNET_P1, 224, False, "0.8ms-D", "raw_state_dict", 81.1, 0.96, 0.61,
           crop_pct=0.875, teacher=("tf_efficientnet_b2", 260)),
    _entry("gpunet_d1", "GPUNet-D1", GPUNET_D1, 456, True, "1.25ms-D", "timm", 82.5, 1.24, 0.94,
           teacher=("tf_efficientnet_b5_ns", 456)),
    _entry("gpunet_d2", "GPUNet-D2", GPUNET_D2, 528, True, "2.25ms-D", "timm", 83.6, 2.17, 1.40,
           teacher=("tf_efficientnet_b6_ns", 528)),
)}


def list_models() -> list[str]:
    """Names of the released GPUNets, in NVIDIA's order."""
    return list(_ZOO)


def _unknown_model(name: str) -> SettingError:
    return SettingError(f"unknown model {name!r}.{did_you_mean(name, _ZOO)} Known models: {', '.join(_ZOO)}; "
                      "or pass the path of an NVIDIA-format architecture JSON or a gpunet .safetensors file.")


def get_entry(name: str) -> ZooEntry:
    if name not in _ZOO:
        raise _unknown_model(name)
    return _ZOO[name]


def get_architecture(name: str) -> Architecture:
    return get_entry(name).arch


def get_pretrained_config(name: str) -> PretrainedConfig:
    return get_entry(name).cfg


def find_model_name(arch: Architecture) -> str | None:
    """The zoo name of an architecture equal to `arch`, if any."""
    return next((n for n, e in _ZOO.items() if e.arch == arch), None)


def resolve_architecture(name_or_path: str | os.PathLike[str] | Architecture) -> tuple[Architecture, str | None]:
    """A zoo name, an NVIDIA JSON path, a gpunet .safetensors path or an Architecture -> (arch, zoo name)."""
    if isinstance(name_or_path, Architecture):
        return name_or_path, find_model_name(name_or_path)
    text = os.fspath(name_or_path)
    if text in _ZOO:
        return _ZOO[text].arch, text
    if text.endswith(".json") or os.path.isfile(text):
        if text.endswith(".safetensors"):
            arch = W.read_safetensors_architecture(text)
        else:
            arch = load_json(text)
        return arch, find_model_name(arch)
    raise _unknown_model(text)


def create_model(name_or_path: str | os.PathLike[str] | Architecture, *, pretrained: bool = False,
                 weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                 features_only: bool = False, out_indices: tuple[int, ...] | None = None,
                 drop_rate: float = DEFAULT_DROP_RATE, drop_path_rate: float | None = None,
                 progress: bool = True) -> nn.Module:
    """Build a GPUNet (in eval mode), optionally with weights.

    `name_or_path`: a zoo name (`list_models()`), an NVIDIA-format JSON file, a gpunet
    `.safetensors` file (architecture from its metadata; its weights are loaded too), or an
    `Architecture`. `pretrained=True` downloads NVIDIA's NGC checkpoint (cached);
    `weights=` takes a local file (NGC zip, timm `.pth.tar`, bare state dict,
    `.safetensors`) or an http(s)/file URL. Without `num_classes` the class count follows
    the checkpoint (else the architecture); a `num_classes` different from the
    checkpoint's keeps the backbone and starts a fresh classifier (fine-tuning).
    """
    arch, zoo_name = resolve_architecture(name_or_path)
    if weights is None and not isinstance(name_or_path, Architecture) and os.fspath(name_or_path).endswith(
            ".safetensors"):
        weights = name_or_path  # the architecture and the weights come from the same file
    if pretrained and weights is None:
        if zoo_name is None:
            raise SettingError("pretrained=True needs one of the released models "
                             f"({', '.join(_ZOO)}); for a custom architecture pass weights=PATH")
        weights = download_pretrained(zoo_name, progress=progress)
    path, state_dict = None, None
    if weights is not None:
        path = W.resolve_weights_path(weights, progress)
        state_dict, _ = W.read_checkpoint(path)
        if num_classes is None:
            num_classes = W.checkpoint_num_classes(state_dict, arch)
    model: nn.Module
    if features_only:
        model = GPUNetFeatures(arch, out_indices, drop_path_rate=drop_path_rate)
    else:
        model = GPUNet(arch, num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if zoo_name is not None:
        model.pretrained_cfg = get_pretrained_config(zoo_name).to_dict()
    if state_dict is not None and path is not None:
        W.load_state_dict(model, state_dict, path, name=zoo_name, recognise=guess_model)
    return model.eval()


# ---------------------------------------------------------------------------- weights of zoo models

def download_pretrained(name: str, progress: bool = True) -> str:
    """The cached NGC checkpoint of a zoo model (from `$GPUNET_NGC_MIRROR` when set)."""
    cfg = get_pretrained_config(name)
    mirror = os.environ.get("GPUNET_NGC_MIRROR")
    url = f"{mirror.rstrip('/')}/{cfg.filename}" if mirror else cfg.url
    if mirror and not hub.is_url(url):  # a folder: percent-encode it (spaces, '#', '%' in the path)
        url = Path(os.path.abspath(url)).as_uri()
    hint = (f"{cfg.display_name} weights come from NGC ({cfg.url}, NVIDIA's terms). " + W.OFFLINE_HINT +
            f" The file must be named {cfg.filename} there.")
    return os.fspath(hub.download(url, cfg.filename, sha256=cfg.sha256, progress=progress, hint=hint))


def load_weights(model: nn.Module, source: str | os.PathLike[str], progress: bool = True) -> nn.Module:
    """Load a checkpoint in any supported form into a GPUNet / GPUNetFeatures built for its architecture."""
    path = W.resolve_weights_path(source, progress)
    state_dict, _ = W.read_checkpoint(path)
    arch = getattr(model, "arch", None)
    name = find_model_name(arch) if isinstance(arch, Architecture) else None
    return W.load_state_dict(model, state_dict, path, name=name, recognise=guess_model)


def _signature(state_dict: Mapping[str, torch.Tensor]) -> set[tuple[str, tuple[int, ...]]]:
    return {(k, tuple(v.shape)) for k, v in state_dict.items() if not k.startswith("classifier.")}


def guess_model(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The released model whose tensors (classifier aside) match `state_dict` exactly, in either naming."""
    for name, entry in _ZOO.items():
        nvidia = W.is_nvidia_layout(state_dict)
        candidate, unknown = W.from_nvidia(state_dict, entry.arch) if nvidia else (state_dict, [])
        if not unknown and _signature(candidate) == _signature(W.meta_state_dict(entry.arch)):
            return name
    return None
