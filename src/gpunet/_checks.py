"""Range checks of plain setting values, shared by the library and the command line; write errors that name the file.

Each check names the setting as the caller spells it (`top_k` in Python, `--top-k` on the
command line), so the same rule gives the library's and the CLI's message. The image-size
limits are `gpunet.limits.check_image_size`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpunet.errors import SettingError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(value: Any, setting: str, minimum: int = 1) -> int:
    """`value` if it is an integer >= `minimum` (a count, a batch size, top-k), else SettingError."""
    if not _is_int(value) or value < minimum:
        raise SettingError(f"{setting} {value!r}: expected an integer >= {minimum}")
    return int(value)


def check_fraction(value: Any, setting: str) -> float:
    """`value` if it is a number in (0, 1] (a crop fraction), else SettingError."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
        raise SettingError(f"{setting} {value!r}: expected a number in (0, 1], e.g. 0.875")
    return float(value)


def check_rate(value: Any, setting: str) -> float:
    """`value` if it is a number in [0, 1) (a dropout or drop-path rate), else SettingError."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise SettingError(f"{setting} {value!r}: expected a rate in [0, 1), e.g. 0.2")
    return float(value)


@contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside: an OSError that names no file (a failed write: a full disk, a size limit) names `path`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
