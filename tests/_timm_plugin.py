"""pytest plugin for running timm's own `tests/test_models.py` on the GPUNets (see tests/test_timm_generic.py).

`-p _timm_plugin` (with this folder on PYTHONPATH) imports gpunet and timm before pytest
collects timm's test module, whose parametrisations call `timm.list_models()` at import time,
so the seven `gpunet_*` models (and their `nv_in1k` pretrained cfgs) are in them.

One adaptation: timm runs its `forward_intermediates` / feature-getter / pruning contract tests
only on the models of an allow-list of timm's own modules (`FEAT_INTER_FILTERS`), which a model
registered by another package can never be on. GPUNet implements that API, so wherever a test
asks `list_models` for the models of that list, gpunet's registry module is added to it: the
GPUNets then go through the same tests as timm's EfficientNet. Nothing is skipped or relaxed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import timm

import gpunet  # noqa: F401  (registers gpunet_* with timm)
from gpunet import timm_registry

GPUNET_MODULE = timm_registry.__name__.rsplit(".", 1)[-1]  # the module name timm records for our entrypoints
TIMM_MARKERS = ("base", "forward", "backward", "cfg", "cfg_nonstd", "torchscript", "features", "fxforward",
                "fxbackward", "timeout(seconds): pytest-timeout's limit (not installed here)")


def _with_gpunet_module(list_models: Callable[..., list[str]]) -> Callable[..., list[str]]:
    @functools.wraps(list_models)
    def wrapper(filter: Any = "", module: str | Iterable[str] = "", *args: Any, **kwargs: Any) -> list[str]:  # noqa: A002
        modules = [module] if isinstance(module, str) else list(module)
        if "efficientnet" in modules:  # the FEAT_INTER_FILTERS allow-list
            module = [*modules, GPUNET_MODULE]
        return list_models(filter, module, *args, **kwargs)

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    for marker in TIMM_MARKERS:
        config.addinivalue_line("markers", marker if ":" in marker else f"{marker}: timm's test marker")
    timm.list_models = _with_gpunet_module(timm.list_models)  # type: ignore[assignment]
