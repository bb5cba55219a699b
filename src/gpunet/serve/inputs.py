"""Turning an HTTP request into images, or into a 4xx with a one-line reason.

A request to `/v1/classify` carries either one image as the raw body (Content-Type `image/*`
or `application/octet-stream`) or one or more images as `multipart/form-data` file parts.
The body is read up to `max_bytes` (a larger Content-Length is refused before reading); an
image is refused above `max_pixels` from its header alone, before anything is decoded (the
decompression-bomb guard), and is then decoded exactly as `gpunet predict` decodes files
(`gpunet.data.load_image`: EXIF orientation, any mode to RGB, truncated files refused).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image, UnidentifiedImageError

from gpunet.data import load_image
from gpunet.errors import GPUNetError

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, TypeError, UnidentifiedImageError)


class RequestError(GPUNetError):
    """A request the server refuses or cannot answer: `status` is the HTTP status (4xx; 503 when a model
    replica kept dying), the message one line for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """One image as sent: where it came from (file name of a part, or "body") and its bytes."""

    source: str
    data: bytes


def media_type(headers: Mapping[str, str]) -> str:
    """The Content-Type without parameters, lower case ("" when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_headers(headers: Mapping[str, str], max_bytes: int) -> None:
    """Refuse a request by its headers alone: a content type that holds no image, a declared body over the limit."""
    kind = media_type(headers)
    if kind != MULTIPART and not kind.startswith(RAW_TYPES):
        shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise RequestError(415, f"{shown}: send one image as the body with Content-Type image/* (or "
                                "application/octet-stream), or images as multipart/form-data file parts")
    length = headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise RequestError(400, f"Content-Length {length!r} is not a number") from None
        if declared > max_bytes:
            raise RequestError(413, _too_large(max_bytes, f"{declared} bytes"))


def _too_large(max_bytes: int, what: str) -> str:
    return f"body of {what} is over the limit of {max_bytes} bytes (the server's --max-bytes)"


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, stopping as soon as it passes `max_bytes` (a chunked upload declares no length)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, _too_large(max_bytes, f"more than {max_bytes} bytes"))
        parts.append(chunk)
    body = b"".join(parts)
    if not body:
        raise RequestError(400, "empty body: expected image bytes (or multipart/form-data file parts)")
    return body


async def form_uploads(scope: Mapping[str, Any], body: bytes, max_images: int) -> list[Upload]:
    """The file parts of a multipart/form-data body (already read), parsed by Starlette's form parser."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(cast(Any, dict(scope)), replay).form(max_files=max_images, max_fields=max_images) as form:
            uploads = []
            for name, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    raise RequestError(400, f"form field {name!r} is not a file: send images as file parts "
                                            "(e.g. curl -F 'image=@cat.jpg')")
                uploads.append(Upload(value.filename or name, await value.read()))
    except (MultiPartException, HTTPException) as exc:  # Starlette raises the latter inside an app
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise RequestError(400, f"bad multipart/form-data body: {detail}") from None
    if not uploads:
        raise RequestError(400, "multipart/form-data body without file parts: expected one or more images")
    return uploads


def decode_image(upload: Upload, max_pixels: int) -> Image.Image:
    """Upright RGB, decoded as `gpunet predict` decodes files; too many pixels, empty, not an image or truncated
    -> `RequestError` naming `upload.source`."""
    if not upload.data:
        raise RequestError(400, f"{upload.source}: empty file")
    try:
        with Image.open(io.BytesIO(upload.data)) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError as exc:  # Pillow's own limit, twice MAX_IMAGE_PIXELS
        raise RequestError(413, f"{upload.source}: {exc}") from None
    except _UNREADABLE:
        width = height = 0  # load_image below says what is wrong
    if width * height > max_pixels:
        raise RequestError(413, f"{upload.source}: {width}x{height} = {width * height} pixels is over the limit of "
                                f"{max_pixels} (decompression-bomb guard; the server's --max-pixels)")
    image, error = load_image(cast(Any, io.BytesIO(upload.data)))
    if image is None:
        raise RequestError(400, f"{upload.source}: {error}")
    return image
