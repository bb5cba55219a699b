"""The seven GPUNets as timm models: `timm.create_model("gpunet_d1")` and every timm tool that builds from it.

`import gpunet` imports this module as soon as timm is imported (see `gpunet/__init__`), which
may happen while gpunet's model modules are being imported (they import timm): so at import it
needs only timm and the zoo's data, and imports the model modules when a model is built. It
registers, per model, an entrypoint and a pretrained cfg tagged `nv_in1k`
(`zoo.timm_pretrained_cfg`), so `timm.list_pretrained("gpunet*")`,
`timm.models.get_pretrained_cfg("gpunet_d1")` and timm's data config helpers see them.

The entrypoint builds through timm's own `build_model_with_cfg` (pretrained cfg resolution,
`pretrained_cfg_overlay`, `features_only` with any `feature_cls`, model traits), but loads
weights itself: NVIDIA's through gpunet's download path (cache, checksum, `GPUNET_NGC_MIRROR`),
or a `file`/`url` a caller's cfg overlay names through gpunet's checkpoint reader. timm's
loader is never called (it cannot read the NGC zip, and the cfg gives it no URL to fetch).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from torch import nn

from gpunet.errors import SettingError
from gpunet.zoo import (
    FEATURES_IGNORE,
    TIMM_TAG,
    create_model,
    get_architecture,
    get_pretrained_config,
    list_models,
    model_pretrained_cfg,
)
from gpunet.zoo import timm_pretrained_cfg as _timm_cfg

_CLASSIFIER_ARGS = ("num_classes", "global_pool", "drop_rate")  # settings gpunet's backbone has no use for
# read by timm's register_model (it looks up `default_cfgs` in the entrypoint's module)
default_cfgs = generate_default_cfgs({f"{name}.{TIMM_TAG}": _timm_cfg(name) for name in list_models()})


def _weights_source(name: str, cfg: dict[str, Any]) -> tuple[bool, str | None]:
    """(NVIDIA's weights through gpunet's download, else the file or URL to read) for a resolved cfg."""
    if cfg.get("file") == default_cfgs[name].cfgs[TIMM_TAG].file and not cfg.get("url"):
        return True, None
    if cfg.get("state_dict") is not None or cfg.get("hf_hub_id"):
        raise SettingError(f"{name}: gpunet loads weights from a checkpoint file or URL "
                           "(pretrained_cfg_overlay=dict(file=PATH) or dict(url=URL)); got a state_dict / hf_hub_id")
    source = cfg.get("file") or cfg.get("url")
    if not source:
        raise SettingError(f"{name}: pretrained=True but the pretrained cfg names no weights (file or url)")
    return False, os.fspath(source)


def _build(name: str, features: bool, pretrained: bool, weights: str | None, *, in_chans: int = 3,
           num_classes: int | None = None, global_pool: str = "avg", out_indices: tuple[int, ...] | None = None,
           drop_rate: float | None = None, drop_path_rate: float | None = None, device: Any = None,
           dtype: torch.dtype | None = None) -> nn.Module:
    """The model timm's builder asks for (an unknown keyword is a TypeError, as timm expects)."""
    extra = {"out_indices": out_indices} if features else {"num_classes": num_classes, "global_pool": global_pool,
                                                           "drop_rate": drop_rate}
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = create_model(name, pretrained=pretrained, weights=weights, in_chans=in_chans, features_only=features,
                             drop_path_rate=drop_path_rate, **extra)  # type: ignore[arg-type]
    return model.to(dtype=dtype) if dtype is not None else model


def _create(name: str, pretrained: bool = False, *, pretrained_cfg: Any = None,
            pretrained_cfg_overlay: dict[str, Any] | None = None, cache_dir: Any = None, **kwargs: Any) -> nn.Module:
    """timm's entrypoint: timm's cfg resolution and feature wrappers around `gpunet.create_model`."""
    cfg = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay).to_dict()
    zoo_weights, weights = _weights_source(name, cfg) if pretrained else (False, None)
    features = bool(kwargs.get("features_only"))
    # features_only without feature_cls: gpunet's own backbone (like timm's EfficientNetFeatures); with one,
    # timm wraps the classifier (list, dict, hook, fx; getter uses forward_intermediates)
    own_features = features and kwargs.get("feature_cls") is None
    feature_cfg: dict[str, Any] = {"flatten_sequential": True}
    if own_features:
        kwargs.pop("features_only")
    elif features and kwargs.get("out_indices") is None:
        from gpunet.builder import stage_feature_info
        from gpunet.model import default_out_indices

        kwargs.pop("out_indices", None)
        stages = stage_feature_info(get_architecture(name))
        feature_cfg["out_indices"] = default_out_indices([f.as_dict() for f in stages])
    build = functools.partial(_build, name, own_features, zoo_weights, weights)
    ignored: Any = _CLASSIFIER_ARGS if own_features else None  # (timm annotates this tuple as one-element)
    model: Any = build_model_with_cfg(build, name, pretrained=False, pretrained_cfg=cfg, feature_cfg=feature_cfg,
                                      kwargs_filter=ignored, **kwargs)
    full = {**model_pretrained_cfg(name), **model.pretrained_cfg}  # gpunet's keys, timm's resolved ones on top
    if features:
        full = {k: v for k, v in full.items() if k not in FEATURES_IGNORE}
    model.pretrained_cfg = full
    model.default_cfg = full
    return model


def _timm_entrypoint(name: str) -> Any:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{get_pretrained_config(name).display_name} (NVIDIA GPUNet)."
    return entrypoint


for _name in list_models():
    globals()[_name] = register_model(_timm_entrypoint(_name))
