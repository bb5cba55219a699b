"""Old import paths that still work: a name that moved resolves to its new home with a DeprecationWarning.

    # gpunet/export.py, after the code moved to gpunet.deploy:
    from gpunet._deprecation import moved
    __getattr__ = moved(__name__, {"export_onnx": "gpunet.deploy.onnx", ...})

The target module is imported only when an old name is used, so old paths cost nothing and
add no import-time dependency.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(old_module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` resolving each old name to the same name in its new module (`names`: name -> module)."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(f"{old_module}.{name} moved to {target}.{name}; the old path will be removed in gpunet 0.3",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(target), name)

    return __getattr__
