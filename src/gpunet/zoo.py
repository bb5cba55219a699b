"""The model zoo: the seven released GPUNets as tables, their pretrained configs, `create_model` and weights.

Tables are decoded by `arch.from_table`: one row per run of `n` layers (first layer has
stride `s`, the rest 1), `-` = field absent in NVIDIA's JSON. Channels chain implicitly.

Importing this module does not import torch (`gpunet list` reads only the tables and
configs): the model, weights and download modules are imported where they are used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpunet._names import did_you_mean
from gpunet.arch import Architecture, from_table, load_json
from gpunet.errors import SettingError

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NGC_BASE_URL = "https://api.ngc.nvidia.com/v2/models/nvidia/dle"
NGC_VERSION = "21.12.0_amp"
NGC_CARD_URL = "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/dle/models"
TIMM_TAG = "nv_in1k"  # timm's pretrained tag for NVIDIA's ImageNet-1k weights (as timm's rdnet_*.nv_in1k)
PAPER_NAME = "Searching the Deployable Convolution Neural Networks for GPUs"
PAPER_ID = "arXiv:2205.00841"
FIRST_CONV = "stem.0.conv"  # = gpunet.model.FIRST_CONV (a test checks); here for the torch-free timm cfgs
FEATURES_IGNORE = ("num_classes", "classifier", "global_pool")  # cfg keys a feature backbone drops (as timm's)

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
    params: int  # parameter count with the 1000-class classifier (`gpunet.info.count_params`; a test checks)
    macs: int  # multiply-accumulates per image at `input_size` (`gpunet.info.count_macs`; a test checks)
    pool_size: tuple[int, int]  # size of the feature map at `input_size` (`builder.layer_geometry`; a test checks)
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

    @property
    def card_url(self) -> str:
        """NVIDIA's model card (a web page, not a download)."""
        return f"{NGC_CARD_URL}/{self.ngc_name}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(url=self.url, filename=self.filename, ngc_name=self.ngc_name)
        return d


@dataclass(frozen=True)
class ZooEntry:
    arch: Architecture
    cfg: PretrainedConfig


def _entry(name: str, display: str, table: str, res: int, distill: bool, key: str, fmt: str, top1: float,
           v100: float, a100: float, size: tuple[int, int, int], crop_pct: float = 1.0,
           teacher: tuple[str, int] | None = None) -> ZooEntry:
    arch = from_table(table, img_resolution=res, distill=distill)
    params, macs, pool = size
    cfg = PretrainedConfig(name, display, (3, res, res), crop_pct, key, fmt, top1, v100, a100, params, macs,
                           (pool, pool), teacher=teacher[0] if teacher else None,
                           teacher_input_size=teacher[1] if teacher else None)
    return ZooEntry(arch, cfg)


_ZOO: dict[str, ZooEntry] = {e.cfg.name: e for e in (
    # name, display name, table, resolution, distilled, NVIDIA key, checkpoint format, top-1, V100 / A100 ms,
    # (params, MACs at the resolution, feature map size there)
    _entry("gpunet_0", "GPUNet-0", GPUNET_0, 320, False, "0.65ms", "timm", 78.9, 0.63, 0.46,
           (11_885_432, 3_254_209_280, 10)),
    _entry("gpunet_1", "GPUNet-1", GPUNET_1, 288, False, "0.85ms", "timm", 80.5, 0.82, 0.59,
           (12_704_192, 3_308_369_280, 9)),
    _entry("gpunet_2", "GPUNet-2", GPUNET_2, 384, False, "1.75ms", "timm", 82.2, 1.68, 1.25,
           (25_798_704, 8_386_275_920, 12)),
    _entry("gpunet_p0", "GPUNet-P0", GPUNET_P0, 224, False, "0.5ms-D", "raw_state_dict", 80.3, 0.63, 0.45,
           (22_815_080, 1_870_345_792, 4), crop_pct=0.875, teacher=("tf_efficientnet_b2", 260)),
    _entry("gpunet_p1", "GPUNet-P1", GPUNET_P1, 224, False, "0.8ms-D", "raw_state_dict", 81.1, 0.96, 0.61,
           (39_905_672, 3_241_678_272, 4), crop_pct=0.875, teacher=("tf_efficientnet_b2", 260)),
    _entry("gpunet_d1", "GPUNet-D1", GPUNET_D1, 456, True, "1.25ms-D", "timm", 82.5, 1.24, 0.94,
           (10_589_859, 4_289_640_427, 15), teacher=("tf_efficientnet_b5_ns", 456)),
    _entry("gpunet_d2", "GPUNet-D2", GPUNET_D2, 528, True, "2.25ms-D", "timm", 83.6, 2.17, 1.40,
           (19_036_728, 15_739_476_160, 17), teacher=("tf_efficientnet_b6_ns", 528)),
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
            from gpunet.weights import read_safetensors_architecture

            arch = read_safetensors_architecture(text)
        else:
            arch = load_json(text)
        return arch, find_model_name(arch)
    raise _unknown_model(text)


def model_pretrained_cfg(name: str) -> dict[str, Any]:
    """`model.pretrained_cfg` of zoo model `name`: timm's keys (`timm_pretrained_cfg`) and ours
    (`PretrainedConfig.to_dict`, the download URL as `ngc_url`: no `url` key a timm loader would fetch)."""
    ours = get_pretrained_config(name).to_dict()
    ours["ngc_url"] = ours.pop("url")
    return {**ours, **timm_pretrained_cfg(name)}


def timm_pretrained_cfg(name: str) -> dict[str, Any]:
    """The fields of timm's `PretrainedCfg` for zoo model `name`, as registered with timm.

    The weights' source is `file`: where gpunet's download path (cache, checksum, mirror) keeps
    NVIDIA's NGC zip, with `custom_load` so that a timm loader never reads it as a state dict
    (it asks the model, whose `load_pretrained` says to load through gpunet). There is no `url`
    or `hf_hub_id`: timm never fetches the zip; `timm.create_model(name, pretrained=True)` runs
    gpunet's download (`gpunet.timm_registry`). Plain data: registering with timm happens while
    gpunet's model modules may still be importing (they import timm).
    """
    from gpunet import hub

    cfg = get_pretrained_config(name)
    return {
        "file": os.fspath(hub.checkpoint_dir() / cfg.filename), "custom_load": True,
        "architecture": name, "tag": TIMM_TAG,
        "input_size": cfg.input_size, "fixed_input_size": False, "interpolation": cfg.interpolation,
        "crop_pct": cfg.crop_pct,
        "crop_mode": "center", "mean": cfg.mean, "std": cfg.std, "num_classes": cfg.num_classes,
        "pool_size": cfg.pool_size, "first_conv": FIRST_CONV, "classifier": "classifier",
        "license": cfg.license, "origin_url": cfg.card_url, "paper_name": PAPER_NAME, "paper_ids": PAPER_ID,
        "description": f"NVIDIA {cfg.display_name}, ImageNet-1k, NGC checkpoint {cfg.ngc_name} {NGC_VERSION}",
    }


def create_model(name_or_path: str | os.PathLike[str] | Architecture, *, pretrained: bool = False,
                 weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                 in_chans: int | None = None, global_pool: str = "avg", features_only: bool = False,
                 out_indices: tuple[int, ...] | None = None, drop_rate: float | None = None,
                 drop_path_rate: float | None = None, progress: bool = True) -> nn.Module:
    """Build a GPUNet (in eval mode), optionally with weights.

    `name_or_path`: a zoo name (`list_models()`), an NVIDIA-format JSON file, a gpunet
    `.safetensors` file (architecture from its metadata; its weights are loaded too), or an
    `Architecture`. `pretrained=True` downloads NVIDIA's NGC checkpoint (cached);
    `weights=` takes a local file (NGC zip, timm `.pth.tar`, bare state dict,
    `.safetensors`) or an http(s)/file URL. Without `num_classes` the class count follows
    the checkpoint (else the architecture); a `num_classes` different from the
    checkpoint's keeps the backbone and starts a fresh classifier (fine-tuning).
    `in_chans` other than the architecture's (3) builds a stem for that many channels and
    adapts the checkpoint's stem to it as timm does. `global_pool=""` (with `num_classes=0`)
    returns unpooled features; `drop_rate` None is NVIDIA's 0.2.
    """
    from gpunet import weights as W
    from gpunet.model import DEFAULT_DROP_RATE, GPUNet, GPUNetFeatures
    from gpunet.records import read_records, set_label_names

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
        model = GPUNetFeatures(arch, out_indices, in_chans=in_chans, drop_path_rate=drop_path_rate)
    else:
        model = GPUNet(arch, num_classes, in_chans=in_chans, global_pool=global_pool,
                       drop_rate=DEFAULT_DROP_RATE if drop_rate is None else drop_rate, drop_path_rate=drop_path_rate)
    if zoo_name is not None:
        cfg = model_pretrained_cfg(zoo_name)
        model.pretrained_cfg = {k: v for k, v in cfg.items() if k not in FEATURES_IGNORE} if features_only else cfg
    if state_dict is not None and path is not None:
        W.load_state_dict(model, fit_input_channels(state_dict, model.arch), path, name=zoo_name,  # type: ignore[arg-type]
                          recognise=guess_model)
        set_label_names(model, read_records(path).label_names)  # the class names the weights were trained with
    return model.eval()


# ---------------------------------------------------------------------------- weights of zoo models

def download_pretrained(name: str, progress: bool = True) -> str:
    """The cached NGC checkpoint of a zoo model (from `$GPUNET_NGC_MIRROR` when set)."""
    from gpunet import hub
    from gpunet.weights import OFFLINE_HINT, verify_checkpoint

    cfg = get_pretrained_config(name)
    mirror = os.environ.get("GPUNET_NGC_MIRROR")
    url = f"{mirror.rstrip('/')}/{cfg.filename}" if mirror else cfg.url
    if mirror and not hub.is_url(url):  # a folder: percent-encode it (spaces, '#', '%' in the path)
        url = Path(os.path.abspath(url)).as_uri()
    hint = (f"{cfg.display_name} weights come from NGC ({cfg.url}, NVIDIA's terms). " + OFFLINE_HINT +
            f" The file must be named {cfg.filename} there.")
    return os.fspath(hub.download(url, cfg.filename, sha256=cfg.sha256, progress=progress, hint=hint,
                                  verify=verify_checkpoint))


def load_weights(model: nn.Module, source: str | os.PathLike[str], progress: bool = True) -> nn.Module:
    """Load a checkpoint in any supported form into a GPUNet / GPUNetFeatures built for its architecture
    (a stem trained on other image channels is adapted to the model's, `fit_input_channels`)."""
    from gpunet import weights as W

    path = W.resolve_weights_path(source, progress)
    state_dict, _ = W.read_checkpoint(path)
    arch: Architecture = model.arch  # type: ignore[assignment]
    name = find_model_name(arch) if isinstance(arch, Architecture) else None
    return W.load_state_dict(model, fit_input_channels(state_dict, arch), path, name=name, recognise=guess_model)


def fit_input_channels(state_dict: Mapping[str, torch.Tensor], arch: Architecture) -> Mapping[str, torch.Tensor]:
    """A checkpoint (NVIDIA's or our names) for `arch`'s image channels: a stem trained on other channels
    is adapted as timm adapts pretrained stems (`timm.models.adapt_input_conv`: 1 channel sums
    RGB, more channels repeat it, rescaled), so 1- or 4-channel models start from NVIDIA's weights."""
    from collections import OrderedDict

    from timm.models import adapt_input_conv

    from gpunet import weights as W

    ours, unknown = W.from_nvidia(state_dict, arch) if W.is_nvidia_layout(state_dict) else (state_dict, [])
    stem = ours.get(FIRST_CONV + ".weight")
    if unknown or stem is None or stem.dim() != 4 or stem.shape[1] == arch.head.in_channels:
        return state_dict  # nothing to adapt (a misfit is reported by the loader)
    adapted = OrderedDict(ours)
    adapted[FIRST_CONV + ".weight"] = adapt_input_conv(arch.head.in_channels, stem, base_chans=stem.shape[1])
    return adapted


def _signature(state_dict: Mapping[str, torch.Tensor]) -> set[tuple[str, tuple[int, ...]]]:
    return {(k, tuple(v.shape)) for k, v in state_dict.items() if not k.startswith("classifier.")}


def guess_model(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The released model whose tensors (classifier aside) match `state_dict` exactly, in either naming."""
    from gpunet import weights as W

    for name, entry in _ZOO.items():
        nvidia = W.is_nvidia_layout(state_dict)
        candidate, unknown = W.from_nvidia(state_dict, entry.arch) if nvidia else (state_dict, [])
        if not unknown and _signature(candidate) == _signature(W.meta_state_dict(entry.arch)):
            return name
    return None
