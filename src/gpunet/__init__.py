"""gpunet: NVIDIA's GPUNet image classifiers with NVIDIA's exact outputs.

    import gpunet
    model = gpunet.create_model("gpunet_d1", pretrained=True)
    preprocess = gpunet.eval_transform(model)
"""

from gpunet import timm_registry as _timm_registry  # noqa: F401  (registers gpunet_* with timm)
from gpunet._version import __version__
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

__all__ = [
    "__version__",
    "Architecture", "ArchitectureError", "DownloadError", "GPUNet", "GPUNetFeatures", "PretrainedConfig",
    "GPUNetError", "WeightsError", "convert", "create_model", "eval_transform", "from_table", "get_architecture",
    "get_pretrained_config", "list_models", "load_json", "load_weights", "loads_json", "read_json", "to_rgb",
    "Classifier", "Prediction", "TopK", "ValidationResult", "append_results", "count_macs", "describe", "validate",
    "fuse", "optimize_for_inference",
]
