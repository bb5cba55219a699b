"""Every error gpunet raises on purpose, under one base class.

`GPUNetError` marks a problem with the user's input or environment (a bad file, an unknown
name, a missing optional package, an unreachable server): its message is complete and
the command line prints it as one line. Anything else that escapes is a bug and keeps its
traceback. Domain errors that were `ValueError`s or `RuntimeError`s stay so (`except
ValueError` in user code keeps working).
"""

from __future__ import annotations


class GPUNetError(Exception):
    """A user or environment error with a complete, one-line message; `exit_code` is the CLI's exit status."""

    exit_code = 2


class ArchitectureError(GPUNetError, ValueError):
    """An architecture that cannot be built, with where and why (file, entry, field)."""

    def __init__(self, message: str, *, source: str | None = None, index: int | None = None,
                 layer_type: str | None = None, field_name: str | None = None) -> None:
        where = []
        if source:
            where.append(str(source))
        if index is not None:
            where.append(f"entry {index}" + (f" ({layer_type})" if layer_type else ""))
        if field_name:
            where.append(f"field '{field_name}'")
        super().__init__((": ".join(where) + ": " if where else "") + message)
        self.source, self.index, self.field_name = source, index, field_name


class WeightsError(GPUNetError, ValueError):
    """A checkpoint cannot be read or does not fit the model."""


class DownloadError(GPUNetError, RuntimeError):
    """A download failed (network, HTTP status, checksum)."""


class RandomWeightsError(GPUNetError, ValueError):
    """A classifier was asked for without trained weights."""


class SettingError(GPUNetError, ValueError):
    """A setting (argument) out of its range or of the wrong kind; the message names it and what was expected."""


class ExportError(GPUNetError, ValueError):
    """An export could not be made or failed its check (the message says why and what to do)."""


class QuantizeError(ExportError):
    """INT8 quantization could not be made or compared."""


class BenchmarkError(GPUNetError, ValueError):
    """A benchmark was configured with an unknown model, backend or precision, or bad numbers."""


class TrainError(GPUNetError, RuntimeError):
    """A training configuration or data problem."""


class RecipeError(GPUNetError, ValueError):
    """An unknown recipe or an invalid training setting."""


class DistributedError(GPUNetError, RuntimeError):
    """The multi-process environment (torchrun variables, process group) is unusable."""


class TeacherError(GPUNetError, ValueError):
    """A distillation teacher cannot be built or loaded."""


class SearchError(GPUNetError, RuntimeError):
    """An architecture search cannot start or continue."""


class SearchSpaceError(GPUNetError, ValueError):
    """A search space definition is invalid."""


class LatencyError(GPUNetError, RuntimeError):
    """A latency measurement cannot be made (backend, device)."""
