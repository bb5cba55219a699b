"""Real loopback servers for the download tests (no mocks).

`FileServer` serves in-memory files over HTTP on 127.0.0.1 (port chosen by the OS) with
an ETag per content (a `Range` with a stale `If-Range` gets the whole new file, as RFC 9110
says), records every request with its headers, and can misbehave on purpose: cut the first
response of each file halfway (`cut_first`), ignore `Range` headers (`ignore_range`),
trickle the body (`chunk_size` bytes every `chunk_delay` s), stop after `cut_at` bytes and
hang up, leave out Content-Length (`send_length=False`), or send headers and then nothing
(`silent`). Every misbehaviour is bounded: a response ends after `max_seconds`, and
`close()` ends the ones still running, so no server outlives its test.
`RawServer` answers every connection with fixed bytes (e.g. something that is not HTTP).
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_first: bool = False  # first GET of each file: full Content-Length, half the body, then hang up
    ignore_range: bool = False  # answer 200 with the whole body even when asked for a range
    chunk_size: int = 1 << 16  # the body is written in pieces of this size ...
    chunk_delay: float = 0.0  # ... with this pause between them (a trickle)
    cut_at: int | None = None  # every response: hang up after this many body bytes
    send_length: bool = True  # False: no Content-Length (the end of the body is the end of the connection)
    silent: bool = False  # send the headers, then nothing until the response's time is up
    max_seconds: float = 20.0  # no response lasts longer than this
    content_type: str = "application/octet-stream"
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                with server._lock:
                    server.requests.append(Request(self.path, dict(self.headers.items())))
                    first = sum(r.path == self.path for r in server.requests) == 1
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "no such file")
                    return
                etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
                match = _RANGE.match(self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if match and not server.ignore_range and if_range in (None, etag):
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    body = data[start:]
                else:
                    self.send_response(200)
                    body = data
                self.send_header("Content-Type", server.content_type)
                self.send_header("ETag", etag)
                if server.send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.cut_first and first:
                    body = body[: len(body) // 2]
                elif server.cut_at is not None:
                    body = body[: server.cut_at]
                server._send(self.wfile, body)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def requests_for(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.path == "/" + name]

    def _send(self, out: Any, body: bytes) -> None:
        """Write `body` as configured; stop early when the server closes or the response's time is up."""
        end = time.monotonic() + self.max_seconds
        if self.silent:
            self._stop.wait(self.max_seconds)
            return
        try:
            for start in range(0, len(body), self.chunk_size):
                if start and self.chunk_delay and self._stop.wait(self.chunk_delay):
                    return
                if time.monotonic() > end:
                    return
                out.write(body[start:start + self.chunk_size])
                out.flush()
        except OSError:  # the client hung up
            pass

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@contextmanager
def file_server(files: dict[str, bytes], **options: Any) -> Iterator[FileServer]:
    server = FileServer(dict(files), **options)
    try:
        yield server
    finally:
        server.close()


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each with `payload`, then closes it."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(self.payload)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
