"""Downloads into a verified local cache: deadlines, progress, resumable `.partial` files, recorded sha256.

The cache is `$GPUNET_HOME` (default `~/.cache/gpunet`), checkpoints under `checkpoints/`.

* A download is written to `<file>.partial` and becomes `<file>` only when complete and
  verified, so an interrupted or killed download never leaves a file that looks finished.
  The next attempt resumes it with an HTTP Range request where the server allows, guarded by
  `If-Range` with the first response's ETag (or Last-Modified): a file that changed on the
  server in between is downloaded afresh instead of being spliced.
* Verified means: as long as the server's Content-Length, equal to the expected sha256 when
  one is known, not a web page (an HTML or JSON error page served with status 200), an
  intact zip archive when it is one (every member's CRC, inflation bounded by
  `gpunet._io`'s limits), and accepted by the caller's `verify` (the weights module checks that
  the checkpoint reads). A file that fails is deleted, never cached.
* Each download has an overall deadline and a stall timeout (`timeout=` / `stall_timeout=`,
  or `GPUNET_DOWNLOAD_TIMEOUT` / `GPUNET_DOWNLOAD_STALL_TIMEOUT`, in seconds).
* Each cached file gets a `<file>.sha256` beside it, checked on every later use; a cached
  file that no longer matches, or fails verification, is reported and downloaded again.
* Every error that involves a file in the cache says how to remove it (`rm -f ...`).
* `fetch(url, max_bytes=)` is the uncached variant for images to classify: the same deadlines,
  the body in memory, refused past `max_bytes`.
* Processes that want the same file take turns (a `filelock` lock under `$GPUNET_HOME/locks/`):
  one downloads, the others wait (saying so on stderr) and then use its verified file, instead
  of all appending to one `.partial` file. The operating system releases the lock of a process
  that dies, so a killed download never blocks the next one.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from gpunet._io import atomic_write_bytes, verify_zip
from gpunet.errors import DownloadError, SettingError, WeightsError

CHUNK = 1 << 16  # the most one read returns; reads return as soon as any data arrives
DEFAULT_TIMEOUT_S = 1800.0  # overall deadline of one download attempt
DEFAULT_STALL_TIMEOUT_S = 60.0  # fail when less than STALL_BYTES arrive in this many seconds
STALL_BYTES = 1024
TIMEOUT_ENV = "GPUNET_DOWNLOAD_TIMEOUT"
STALL_TIMEOUT_ENV = "GPUNET_DOWNLOAD_STALL_TIMEOUT"
PROGRESS_LINE_S = 30.0  # without a terminal, a progress line at most this often
_TEXT_STARTS = (b"<", b"{")  # HTML / XML / JSON pages

Verify = Callable[[Path], None]


def gpunet_home() -> Path:
    return Path(os.environ.get("GPUNET_HOME") or Path.home() / ".cache" / "gpunet")


def checkpoint_dir() -> Path:
    return gpunet_home() / "checkpoints"


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def url_filename(url: str) -> str:
    """A cache file name for a URL: its last path part, prefixed by a short hash of the whole URL."""
    base = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{base}"


@dataclass(frozen=True)
class Limits:
    """How long one download attempt may take in all (`timeout`) and without progress (`stall_timeout`)."""

    timeout: float = DEFAULT_TIMEOUT_S
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S

    @classmethod
    def resolve(cls, timeout: float | None = None, stall_timeout: float | None = None) -> Limits:
        """Explicit values, else the environment variables, else the defaults; each checked."""
        return cls(_seconds(timeout, TIMEOUT_ENV, "timeout", DEFAULT_TIMEOUT_S),
                   _seconds(stall_timeout, STALL_TIMEOUT_ENV, "stall_timeout", DEFAULT_STALL_TIMEOUT_S))

    @property
    def silence(self) -> float:
        """How long a read may wait for the first byte (the socket timeout)."""
        return min(self.timeout, self.stall_timeout)

    def silence_message(self) -> str:
        if self.timeout < self.stall_timeout:
            return f"nothing arrived before the overall deadline of {self.timeout:g} s ({TIMEOUT_ENV})"
        return f"nothing arrived for {self.stall_timeout:g} s (the stall timeout, {STALL_TIMEOUT_ENV})"


def _seconds(value: float | None, env: str, name: str, default: float) -> float:
    where, text = (name, repr(value)) if value is not None else (env, os.environ.get(env))
    if text is None or text == "":
        return default
    try:
        seconds = float(value if value is not None else text)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise SettingError(f"{where}={text}: expected a number of seconds above 0")
    return seconds


def cache_entry_hint(path: str | os.PathLike[str]) -> str:
    """'' unless `path` is in the download cache; else the command that removes that entry."""
    p = Path(path).absolute()
    if p.parent != checkpoint_dir().absolute():
        return ""
    companions = [_validator(p)] if p.name.endswith(".partial") else [_sidecar(p)]
    files = " ".join(shlex.quote(str(f)) for f in [p, *companions])
    return f"It is in gpunet's download cache: remove it with `rm -f {files}` and it is downloaded again"


def download(url: str, filename: str | None = None, *, sha256: str | None = None, progress: bool = True,
             hint: str = "", verify: Verify | None = None, timeout: float | None = None,
             stall_timeout: float | None = None) -> Path:
    """Return the cached, verified copy of `url`, downloading it first if needed (see the module doc).

    `verify(path)` may raise `WeightsError` (or `DownloadError`) to refuse a file's content;
    `hint` ends every error message (e.g. how to work offline).
    """
    limits = Limits.resolve(timeout, stall_timeout)
    dst = checkpoint_dir() / (filename or url_filename(url))
    if dst.exists() and _cached_ok(dst, sha256, verify):  # no lock needed (a read-only cache works)
        return dst
    for folder in (dst.parent, _lock_dir()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create the download cache {folder} ({exc.strerror or exc}); set "
                                f"GPUNET_HOME to a writable folder. {hint}".strip()) from None
    with _turn(dst, limits, hint):
        if dst.exists() and _cached_ok(dst, sha256, verify):  # another process downloaded it meanwhile
            return dst
        return _download_into(dst, url, sha256, verify, limits, progress, hint)


def _lock_dir() -> Path:
    return gpunet_home() / "locks"


@contextmanager
def _turn(dst: Path, limits: Limits, hint: str) -> Iterator[None]:
    """Hold the lock of cache entry `dst`, waiting (at most the download deadline) for a process that has it."""
    from filelock import FileLock, Timeout

    lock = FileLock(_lock_dir() / (dst.name + ".lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"gpunet: another process is downloading {dst.name}; waiting for it (at most "
                  f"{limits.timeout:g} s)", file=sys.stderr, flush=True)
            lock.acquire(timeout=limits.timeout)
    except Timeout:
        why = f"another process has been downloading {dst} for over {limits.timeout:g} s (it holds {lock.lock_file})"
        raise DownloadError(f"{why}; stop it or raise the deadline ({TIMEOUT_ENV}). {hint}".strip()) from None
    except OSError as exc:
        raise DownloadError(f"cannot create the lock file {lock.lock_file} ({exc.strerror or exc}); set "
                            f"GPUNET_HOME to a writable folder. {hint}".strip()) from None
    try:
        yield
    finally:
        lock.release()


def _download_into(dst: Path, url: str, sha256: str | None, verify: Verify | None, limits: Limits,
                   progress: bool, hint: str) -> Path:
    """Fetch `url` into `dst`'s `.partial` file (resuming it), verify it, and make it the cache entry."""
    part = dst.with_name(dst.name + ".partial")
    _fetch(url, part, limits, progress, hint)
    problem = _problem(part, sha256, verify)
    if problem:
        part.unlink(missing_ok=True)
        _validator(part).unlink(missing_ok=True)
        raise DownloadError(f"{url}: the downloaded file is not valid: {problem}. It was deleted, not cached; "
                            f"once the source is fixed, the next attempt downloads it again. {hint}".strip())
    try:  # the sidecar first: a kill between the two leaves no unverified file under the final name
        atomic_write_bytes(_sidecar(dst), (file_sha256(part) + "\n").encode())
        os.replace(part, dst)
    except OSError as exc:
        raise DownloadError(f"could not store {dst} ({exc.strerror or exc}); the download is kept in {part}. "
                            f"{cache_entry_hint(part)}. {hint}".strip()) from None
    _validator(part).unlink(missing_ok=True)
    return dst


def fetch(url: str, *, max_bytes: int, timeout: float | None = None, stall_timeout: float | None = None) -> bytes:
    """The body of `url` in memory, not cached (an image to classify): the download deadlines apply, and a body
    over `max_bytes` (declared or streamed) is refused. Errors are `DownloadError`s that start with the URL."""
    limits = Limits.resolve(timeout, stall_timeout)
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "gpunet"})
    try:
        response = urllib.request.urlopen(request, timeout=limits.silence)  # noqa: S310 (http/https/file only)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            reason = f"no answer: {limits.silence_message()}"
        raise DownloadError(f"{url}: {reason}") from None
    with response:
        length = response.headers.get("Content-Length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > max_bytes:
            raise DownloadError(f"{url}: {declared:,} bytes, over the limit of {max_bytes:,}")
        out = _CappedBuffer(max_bytes)
        meter = _Progress(url, Path(url_filename(url)), None, 0, enabled=False)
        try:
            _stream(response, out, meter, limits, started)
        except _Failed as exc:
            why = f"more than the limit of {max_bytes:,} bytes" if exc.write else f"download {exc.why}"
            raise DownloadError(f"{url}: {why}") from None
        finally:
            meter.close()
    if declared is not None and meter.done < declared:
        raise DownloadError(f"{url}: the body ended after {meter.done:,} of {declared:,} bytes")
    return out.getvalue()


class _CappedBuffer(io.BytesIO):
    """An in-memory body that refuses to grow past `limit` bytes (the write error ends the transfer)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise OSError(errno.EFBIG, "over the size limit")
        return super().write(data)


def _validator(part: Path) -> Path:
    """Where the ETag / Last-Modified of the response that started `part` is kept (for If-Range)."""
    return part.with_name(part.name + ".validator")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _problem(path: Path, sha256: str | None, verify: Verify | None) -> str | None:
    """Why the file at `path` must not be (or stay) a cache entry; None when it is good."""
    if sha256 and (digest := file_sha256(path)) != sha256.lower():
        return f"sha256 {digest} does not match the expected {sha256}"
    with open(path, "rb") as f:
        head = f.read(256)
    if b"\0" not in head and head.lstrip()[:1] in _TEXT_STARTS:  # binary formats all have NUL bytes early
        text = head.decode("utf-8", "replace").split("\n")[0].strip()[:80]
        return f"it is a web page or error message, not a checkpoint (it starts {text!r})"
    try:
        if head.startswith(b"PK\x03\x04") or path.name.removesuffix(".partial").endswith(".zip"):
            verify_zip(path)
        if verify is not None:
            verify(path)
    except (WeightsError, DownloadError) as exc:
        return str(exc)
    return None


def _cached_ok(dst: Path, expected: str | None, verify: Verify | None) -> bool:
    """A cached file is good when it matches its recorded sha256 (and the expected one).

    A file without a recorded sha256 (copied in by hand, or cached by an older gpunet) is
    verified in full first. A bad file is reported on stderr and removed, to be downloaded again.
    """
    sidecar = _sidecar(dst)
    recorded = sidecar.read_text().strip() if sidecar.exists() else None
    digest = file_sha256(dst)
    if (expected and digest != expected.lower()) or (recorded and digest != recorded):
        problem: str | None = "its sha256 no longer matches the one recorded when it was downloaded"
    else:
        problem = None if recorded else _problem(dst, expected, verify)
    if problem:
        print(f"gpunet: cached {dst} is not valid ({problem}); downloading it again", file=sys.stderr)
        dst.unlink()
        sidecar.unlink(missing_ok=True)
        return False
    if recorded is None:
        atomic_write_bytes(sidecar, (digest + "\n").encode())
    return True


def _remember_validator(part: Path, headers: Any) -> None:
    """Keep the strong ETag (else Last-Modified) of a fresh response, to resume it safely later."""
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if validator:
        atomic_write_bytes(_validator(part), (validator + "\n").encode())
    else:
        _validator(part).unlink(missing_ok=True)


def _open(url: str, part: Path, limits: Limits, hint: str) -> tuple[Any, int]:
    """The response for `url` (a Range request continuing `part` when it exists) and the offset it starts at."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gpunet"})
    if offset and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={offset}-")
        if _validator(part).exists():  # resume only if the file on the server is still the same
            request.add_header("If-Range", _validator(part).read_text().strip())
    try:
        response = urllib.request.urlopen(request, timeout=limits.silence)  # noqa: S310 (http/https/file only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked beyond the end: the partial file is stale
            part.unlink()
            return _open(url, part, limits, hint)
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}. {hint}".strip()) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: not HTTP at all
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            reason = f"no answer: {limits.silence_message()}"
        raise DownloadError(f"could not download {url}: {reason}. {hint}".strip()) from None
    if (getattr(response, "status", None) or 200) != 206:
        offset = 0  # the server sent the whole file (no range support, or the file changed)
        _remember_validator(part, response.headers)
    return response, offset


class _Failed(Exception):
    """The transfer stopped: `why` says how (timeout, stall, reset), `write` whether writing the file failed."""

    def __init__(self, why: str, write: bool = False) -> None:
        super().__init__(why)
        self.why, self.write = why, write


def _fetch(url: str, part: Path, limits: Limits, progress: bool, hint: str) -> None:
    """Stream `url` into `part`, resuming from its current size when the server honours Range."""
    started = time.monotonic()
    response, offset = _open(url, part, limits, hint)
    with response:
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        meter = _Progress(url, part, total, offset, progress)
        try:
            with open(part, "ab" if offset else "wb") as out:
                _stream(response, out, meter, limits, started)
                out.flush()  # here, so that a full disk fails here and not in close()
            meter.finished = True
        except OSError as exc:  # opening, flushing or closing `part` failed
            raise _write_error(exc.strerror or str(exc), part, hint) from None
        except _Failed as exc:
            if exc.write:
                raise _write_error(exc.why, part, hint) from None
            raise DownloadError(f"download of {url} {exc.why} after {meter.done} bytes; run again to resume from "
                                f"{part}. {cache_entry_hint(part)}. {hint}".strip()) from None
        finally:
            meter.close()
    if total is not None and meter.done < total:
        raise DownloadError(f"download of {url} ended after {meter.done} of {total} bytes; run again to resume "
                            f"from {part}. {cache_entry_hint(part)}. {hint}".strip())


def _write_error(why: str, part: Path, hint: str) -> DownloadError:
    """A read-only or full download cache."""
    clear = f" {cache_entry_hint(part)}." if part.exists() else ""
    return DownloadError(f"could not write {part} ({why}); free space there or set GPUNET_HOME to a writable folder "
                         f"with free space, then run again (a partial download resumes).{clear} {hint}".strip())


def _stream(response: Any, out: IO[bytes], meter: _Progress, limits: Limits, started: float) -> None:
    """Copy the body, failing on the overall deadline, on a stall, on a broken connection or a failed write."""
    read = getattr(response, "read1", None) or response.read  # read1: whatever arrived, without waiting for more
    mark_time, mark_bytes = time.monotonic(), meter.done
    while True:
        try:
            chunk = read(CHUNK)
        except TimeoutError:
            raise _Failed(f"stalled: {limits.silence_message()}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, IncompleteRead
            raise _Failed(f"was interrupted ({exc})") from None
        if not chunk:
            return
        try:
            out.write(chunk)
        except OSError as exc:
            raise _Failed(exc.strerror or str(exc), write=True) from None
        meter.update(len(chunk))
        now = time.monotonic()
        if meter.done - mark_bytes >= STALL_BYTES:
            mark_time, mark_bytes = now, meter.done
        elif now - mark_time > limits.stall_timeout:
            raise _Failed(f"stalled: less than {STALL_BYTES} bytes arrived in {limits.stall_timeout:g} s (the stall "
                          f"timeout, {STALL_TIMEOUT_ENV})")
        if now - started > limits.timeout:
            raise _Failed(f"did not finish within {limits.timeout:g} s (the overall deadline, {TIMEOUT_ENV})")


class _Progress:
    """A tqdm bar on stderr when it is a terminal; otherwise a line at the start, every 30 s and at the end.

    (`finished` is set once the whole body arrived, so a failed transfer prints no closing line.)
    """

    def __init__(self, url: str, part: Path, total: int | None, initial: int, enabled: bool) -> None:
        self.done, self.total = initial, total
        self.name = part.name.removesuffix(".partial")
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=self.name,
                        disable=not enabled or self.lines, leave=False, file=sys.stderr)
        self.started = self.last_line = time.monotonic()
        self.finished = False
        if self.lines:
            size = f"{_mib(total)} MiB" if total is not None else "size unknown"
            resume = f", resuming at {_mib(initial)} MiB" if initial else ""
            self._line(f"downloading {url} ({size}{resume}) into {part.parent}")

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.lines and time.monotonic() - self.last_line >= PROGRESS_LINE_S:
            self._line(f"{self.name}: {_mib(self.done)}" + (f" of {_mib(self.total)} MiB" if self.total else " MiB"))

    def close(self) -> None:
        self.bar.close()
        if self.lines and self.finished:
            self._line(f"{self.name}: {_mib(self.done)} MiB in {time.monotonic() - self.started:.1f} s")

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        print(f"gpunet: {text}", file=sys.stderr, flush=True)


def _mib(n: int | None) -> str:
    return f"{(n or 0) / (1 << 20):.1f}"
