"""gpunet: NVIDIA's GPUNet image classifiers with NVIDIA's exact outputs.

    import gpunet
    model = gpunet.create_model("gpunet_d1", pretrained=True)
    preprocess = gpunet.eval_transform(model)

The public names load on first use (PEP 562), so `import gpunet` (and `gpunet --help`) does
not import torch. Importing gpunet registers the seven models with timm: at once when timm
is already imported, else when it is (a post-import hook, `wrapt.register_post_import_hook`),
so `timm.create_model("gpunet_d1")` works in either import order without gpunet importing timm.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import wrapt

from gpunet._lazy import lazy_attributes
from gpunet._version import __version__

if TYPE_CHECKING:
    from gpunet.arch import Architecture, ArchitectureError, from_table, load_json, loads_json, read_json
    from gpunet.classify import Classifier, Prediction, TopK
    from gpunet.conversion import convert
    from gpunet.deploy import fuse, optimize_for_inference
    from gpunet.errors import GPUNetError, WeightsError
    from gpunet.evaluate import ValidationResult, append_results, validate
    from gpunet.hub import DownloadError
    from gpunet.info import count_macs, describe
    from gpunet.model import GPUNet, GPUNetFeatures
    from gpunet.transforms import eval_transform, to_rgb
    from gpunet.zoo import (
        PretrainedConfig,
        create_model,
        get_architecture,
        get_pretrained_config,
        list_models,
        load_weights,
    )

# public name -> the module that defines it
_SOURCES = {
    **dict.fromkeys(["Architecture", "ArchitectureError", "from_table", "load_json", "loads_json", "read_json"],
                    "gpunet.arch"),
    **dict.fromkeys(["Classifier", "Prediction", "TopK"], "gpunet.classify"),
    "convert": "gpunet.conversion",
    **dict.fromkeys(["fuse", "optimize_for_inference"], "gpunet.deploy"),
    **dict.fromkeys(["GPUNetError", "WeightsError"], "gpunet.errors"),
    **dict.fromkeys(["ValidationResult", "append_results", "validate"], "gpunet.evaluate"),
    "DownloadError": "gpunet.hub",
    **dict.fromkeys(["count_macs", "describe"], "gpunet.info"),
    **dict.fromkeys(["GPUNet", "GPUNetFeatures"], "gpunet.model"),
    **dict.fromkeys(["eval_transform", "to_rgb"], "gpunet.transforms"),
    **dict.fromkeys(["PretrainedConfig", "create_model", "get_architecture", "get_pretrained_config", "list_models",
                     "load_weights"], "gpunet.zoo"),
}

__all__ = [
    "__version__",
    "Architecture", "ArchitectureError", "DownloadError", "GPUNet", "GPUNetFeatures", "PretrainedConfig",
    "GPUNetError", "WeightsError", "convert", "create_model", "eval_transform", "from_table", "get_architecture",
    "get_pretrained_config", "list_models", "load_json", "load_weights", "loads_json", "read_json", "to_rgb",
    "Classifier", "Prediction", "TopK", "ValidationResult", "append_results", "count_macs", "describe", "validate",
    "fuse", "optimize_for_inference",
]


__getattr__ = lazy_attributes(__name__, _SOURCES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_with_timm(_timm: ModuleType) -> None:
    from gpunet import timm_registry  # noqa: F401  (registers gpunet_* on import)


wrapt.register_post_import_hook(_register_with_timm, "timm")  # runs now if timm is already imported
