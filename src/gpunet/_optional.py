"""Optional dependencies: import them, or say which extra installs them."""

from __future__ import annotations

import importlib
from typing import Any

from gpunet.errors import GPUNetError


class MissingDependencyError(GPUNetError, ImportError):
    """An optional package a feature needs is not installed; the message says how to install it."""


def require(module: str, why: str, extra: str) -> Any:
    """Import `module`, or raise MissingDependencyError naming `pip install 'gpunet[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{why}: pip install 'gpunet[{extra}]'") from exc


def importable(module: str) -> bool:
    """Whether an optional dependency imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
