"""Deprecated: NVIDIA's recipes are in `gpunet.train.recipes`, the settings in `gpunet.train.config`."""

from gpunet._deprecation import moved

__getattr__ = moved(__name__, {
    "NVIDIA_GPUS": "gpunet.train.recipes", "Recipe": "gpunet.train.recipes", "RECIPES": "gpunet.train.recipes",
    "get_recipe": "gpunet.train.recipes", "scaled_lr": "gpunet.train.recipes",
    "DEFAULTS": "gpunet.train.config", "resolve_config": "gpunet.train.config",
    "RecipeError": "gpunet.errors",
})
