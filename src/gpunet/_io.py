"""Safe file I/O: atomic writes, and zip archives read with bounded inflation.

Atomic writes: a reader never sees a half-written checkpoint, JSON or table. The data
goes to a hidden temporary file beside the target (same file system, so the final
`os.replace` is atomic), is flushed to disk, and only then takes the target's name. A
failure (an exception, a full disk) removes the temporary file and leaves the old target
untouched; a process killed with SIGKILL can leave only a `.<name>.<random>.tmp` file behind,
never a half-written target.

Zip archives (NGC downloads, torch's own zip checkpoints) are checked against the sizes
their headers declare before anything is inflated (`check_zip_sizes`: a decompression bomb
is refused at once), and members are streamed with a hard cap in case the headers lie
(`extract_zip_member`, `verify_zip`), into a spooled temporary file rather than memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from gpunet.errors import WeightsError
from gpunet.limits import ZIP_MAX_BYTES, ZIP_MAX_RATIO, ZIP_RATIO_FLOOR

SPOOL_BYTES = 64 << 20  # an extracted member stays in memory up to this size, then goes to a temporary file
_CHUNK = 1 << 20


def destination_problem(path: str | os.PathLike[str], *, folder: bool = False) -> str | None:
    """Why `path` cannot be written, checked before any work; None when it can.

    A file path must not be a folder (`folder=True`: must be a folder or not exist yet), and its
    nearest existing ancestor must be a folder this process may write into (read-only mounts included).
    """
    path = os.fspath(path)
    if not folder and os.path.isdir(path):
        return "is a folder; expected a file path"
    if folder and os.path.exists(path) and not os.path.isdir(path):
        return "is a file; expected a folder"
    parent = os.path.abspath(path if folder else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write into {parent} (read-only or no permission)"
    return None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _create_temp(directory, os.path.basename(path))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, _write)


def _create_temp(directory: str, name: str) -> str:
    """Create a new, empty temporary file; mode 0666 minus the umask, as a plain open() gives.

    (mkstemp would make it 0600, and reading the umask means changing it process-wide.)
    """
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: could not create a temporary file for {name}")


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); file systems without directory fsync are skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------- zip archives

def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def check_zip_sizes(zf: zipfile.ZipFile, name: str, limit: int = ZIP_MAX_BYTES) -> None:
    """Refuse, from the headers alone, an archive whose compressed members would inflate too much.

    Stored (uncompressed) members cannot be larger than the file itself, so only compressed
    ones count: each against `ZIP_MAX_RATIO` (above `ZIP_RATIO_FLOOR`), all together against `limit`.
    """
    total = 0
    for info in zf.infolist():
        if info.compress_type == zipfile.ZIP_STORED:
            continue
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_RATIO_FLOOR and ratio > ZIP_MAX_RATIO:
            raise WeightsError(
                f"{name}: member {info.filename!r} would inflate {_mib(info.compress_size)} to "
                f"{_mib(info.file_size)} ({ratio:.0f}:1), over the limit of {ZIP_MAX_RATIO}:1 for members above "
                f"{_mib(ZIP_RATIO_FLOOR)} (gpunet.limits.ZIP_MAX_RATIO); refused as a possible decompression bomb")
        if total > limit:
            raise WeightsError(
                f"{name}: the archive's members would inflate to more than {_mib(limit)} (the limit, "
                f"gpunet.limits.ZIP_MAX_BYTES; {info.filename!r} alone {_mib(info.file_size)}); refused as a "
                "possible decompression bomb")


def _copy_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: IO[bytes] | None, name: str) -> None:
    """Stream one member (CRC checked by zipfile at its end) into `out`, never past its declared size."""
    cap = min(info.file_size, ZIP_MAX_BYTES)
    done = 0
    with zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            done += len(chunk)
            if done > cap:  # zipfile stops at the declared size; this guards against that changing
                raise WeightsError(f"{name}: member {info.filename!r} inflates past its declared "
                                   f"{_mib(info.file_size)}; refused as a possible decompression bomb")
            if out is not None:
                out.write(chunk)


def _corrupt(name: str, exc: BaseException) -> WeightsError:
    return WeightsError(f"{name}: corrupt or truncated zip archive ({exc})")


def extract_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> IO[bytes]:
    """One member's bytes as a seekable file (memory up to `SPOOL_BYTES`, then disk); the caller closes it."""
    check_zip_sizes(zf, name)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned to the caller)
    try:
        _copy_capped(zf, info, out, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        out.close()
        raise _corrupt(name, exc) from None
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def verify_zip(path: str | os.PathLike[str], name: str | None = None) -> None:
    """Check a whole zip archive: its directory, the sizes it declares and every member's CRC."""
    name = name or os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_sizes(zf, name)
            for info in zf.infolist():
                if not info.is_dir():
                    _copy_capped(zf, info, None, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        raise _corrupt(name, exc) from None

