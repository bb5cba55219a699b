"""Package attributes that load their module on first use (PEP 562), so importing a package stays cheap.

    __getattr__ = lazy_attributes(__name__, {"benchmark": "gpunet.bench.run", ...})

`gpunet --help` must not import torch; the packages whose faces re-export torch-heavy modules
use this instead of eager imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, sources: Mapping[str, str],
                    fallback: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """A module `__getattr__` importing `sources[name]` when `name` is first used, then caching it.

    Other names go to `fallback` (e.g. `gpunet._deprecation.moved` for old names), else AttributeError.
    """

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
