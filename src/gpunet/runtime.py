"""Deprecated path: running exported files lives in `gpunet.deploy.runtime` (one runner registry, `open_runner`).

Every public name of the old module still resolves here, with a DeprecationWarning naming its new home;
`exported_runner` became `gpunet.deploy.runtime.open_runner`.
"""

from gpunet._deprecation import moved

_RUNTIME = "gpunet.deploy.runtime"

__getattr__ = moved(__name__, {
    "RUNTIMES": _RUNTIME, "EXPORTED_SUFFIXES": _RUNTIME, "Run": _RUNTIME, "is_exported": _RUNTIME,
    "default_runtime": _RUNTIME, "ExportedModel": _RUNTIME, "check_options": _RUNTIME,
    "ExportError": "gpunet.errors",
})
