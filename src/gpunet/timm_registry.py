"""Registers the seven GPUNets with timm, so `timm.create_model("gpunet_d1")` works after `import gpunet`."""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from torch import nn

from gpunet.errors import SettingError
from gpunet.zoo import create_model, get_pretrained_config, list_models


def _timm_entrypoint(name: str) -> Any:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        # timm passes its own bookkeeping; GPUNet takes the rest (num_classes, drop rates, features_only...)
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        if kwargs.pop("in_chans", 3) != 3:
            raise SettingError(f"{name} takes 3-channel images; for other inputs write an architecture JSON "
                             "whose head has another num_in_channels")
        return create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{get_pretrained_config(name).display_name} (NVIDIA GPUNet)."
    return entrypoint


for _name in list_models():
    globals()[_name] = register_model(_timm_entrypoint(_name))
