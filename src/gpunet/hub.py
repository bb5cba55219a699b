"""Downloads into the local cache: progress bar, resumable `.partial` file, recorded sha256.

The cache is `$GPUNET_HOME` (default `~/.cache/gpunet`), checkpoints under `checkpoints/`.
A download is written to `<file>.partial` and renamed only when complete, so an
interrupted download never leaves a file that looks finished; the next attempt resumes
it with an HTTP Range request where the server allows, guarded by `If-Range` with the
first response's ETag (or Last-Modified), so a file that changed on the server in between
is downloaded afresh instead of being spliced. Each finished file gets a
`<file>.sha256` beside it, checked on every later use.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gpunet.errors import DownloadError

CHUNK = 1 << 20
TIMEOUT_S = 60.0



def gpunet_home() -> Path:
    return Path(os.environ.get("GPUNET_HOME") or Path.home() / ".cache" / "gpunet")


def checkpoint_dir() -> Path:
    return gpunet_home() / "checkpoints"


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def url_filename(url: str) -> str:
    """A cache file name for a URL: its last path part, prefixed by a short hash of the whole URL."""
    base = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{base}"


def download(url: str, filename: str | None = None, *, sha256: str | None = None, progress: bool = True,
             hint: str = "") -> Path:
    """Return the cached copy of `url`, downloading it first if needed."""
    dst = checkpoint_dir() / (filename or url_filename(url))
    if dst.exists() and _cached_ok(dst, sha256):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".partial")
    _fetch(url, part, progress, hint)
    digest = file_sha256(part)
    if sha256 and digest != sha256.lower():
        part.unlink()
        _validator(part).unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 {digest} does not match the expected {sha256}; the partial file "
                            f"was deleted. {hint}".strip())
    os.replace(part, dst)
    _validator(part).unlink(missing_ok=True)
    _write_text_atomic(_sidecar(dst), digest + "\n")
    return dst


def _validator(part: Path) -> Path:
    """Where the ETag / Last-Modified of the response that started `part` is kept (for If-Range)."""
    return part.with_name(part.name + ".validator")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _cached_ok(dst: Path, expected: str | None) -> bool:
    """A cached file is good when it matches both the expected and the recorded sha256."""
    recorded = _sidecar(dst).read_text().strip() if _sidecar(dst).exists() else None
    digest = file_sha256(dst)
    if (expected and digest != expected.lower()) or (recorded and digest != recorded):
        print(f"gpunet: cached {dst} does not match its sha256; downloading it again", file=sys.stderr)
        dst.unlink()
        return False
    if recorded is None:
        _write_text_atomic(_sidecar(dst), digest + "\n")
    return True


def _write_text_atomic(path: Path, text: str) -> None:
    from gpunet._io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _remember_validator(part: Path, headers: Any) -> None:
    """Keep the strong ETag (else Last-Modified) of a fresh response, to resume it safely later."""
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if validator:
        _write_text_atomic(_validator(part), validator + "\n")
    else:
        _validator(part).unlink(missing_ok=True)


def _fetch(url: str, part: Path, progress: bool, hint: str) -> None:
    """Stream `url` into `part`, resuming from its current size when the server honours Range."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gpunet"})
    if offset and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={offset}-")
        if _validator(part).exists():  # resume only if the file on the server is still the same
            request.add_header("If-Range", _validator(part).read_text().strip())
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (http/https/file only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked beyond the end: the partial file is stale
            part.unlink()
            return _fetch(url, part, progress, hint)
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}. {hint}".strip()) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: not HTTP at all
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {url}: {reason}. {hint}".strip()) from None
    with response:
        status = getattr(response, "status", None) or 200
        if status != 206:
            offset = 0  # the server sent the whole file (no range support, or the file changed)
            _remember_validator(part, response.headers)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[: -len(".partial")], disable=not progress, leave=False) as bar:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, IncompleteRead
                raise DownloadError(f"download of {url} was interrupted after {written} bytes ({exc}); run "
                                    f"again to resume from {part}. {hint}".strip()) from None
    if total is not None and written < total:
        raise DownloadError(f"download of {url} ended after {written} of {total} bytes; run again to resume "
                            f"from {part}. {hint}".strip())
