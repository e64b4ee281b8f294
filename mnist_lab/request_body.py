"""Request bodies -> the model's 28x28 input: a size limit counted as bytes arrive, PNG/JPEG
uploads told by their first bytes, and JSON arrays, each refused with a 4xx and one sentence.

Every image goes through the code `mnist-lab predict` uses (preprocess.load_image, to_mnist),
so the page, the API and the CLI give a digit the same answer.
"""

from __future__ import annotations

import io
import json

import numpy as np
import python_multipart  # noqa: F401 - form parsing needs it: fail at start, not per request
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .errors import UserError
from .preprocess import load_image, stretch_contrast, to_mnist

MAX_BODY = 4 * 1024 * 1024  # a drawn digit is ~5 KB; a phone photo fits
# An upload's type is read from its bytes: a part's declared type is often missing or wrong
# (a file named .png, sent as application/octet-stream), and only these decoders are reached
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
TOO_LARGE = f"the request body is larger than the limit of {MAX_BODY // 2**20} MiB"
JSON_HELP = 'JSON must be {"image": <28x28 array of numbers 0..255, white digit on black>}'


class BodyTooLargeError(Exception):
    """The request body grew past MAX_BODY while it was being read."""


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, by Content-Length up front and by
    counting what arrives (a chunked upload declares no length)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        """Refuse a declared oversized body; count the bytes of any other."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await error_response(400, "invalid Content-Length header")(scope, receive, send)
        if int(length) > self.limit:
            return await error_response(413, TOO_LARGE)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLargeError
            return message

        await self.app(scope, counted, send)


def error_response(code: int, detail: str) -> JSONResponse:
    """A 4xx answer as every route gives it: {"detail": "<one sentence>"}."""
    return JSONResponse({"detail": detail}, status_code=code)


def from_upload(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> the model's 28x28 input, exactly as `mnist-lab predict` makes it."""
    if not data.startswith(SIGNATURES):
        raise HTTPException(415, "the uploaded file is neither PNG nor JPEG (by its first bytes): "
                                 "only PNG and JPEG images are accepted")
    buf = io.BytesIO(data)
    buf.name = "the uploaded image"  # load_image names its source in messages
    try:
        gray = load_image(buf)
    except UserError as e:
        raise HTTPException(413 if "too large" in str(e) else 400, str(e)) from None
    except Exception as e:  # Pillow's decoders may raise more than load_image names: failing
        # to decode untrusted bytes means a bad file, never a server error
        kind = type(e).__name__
        raise HTTPException(400, f"{buf.name}: not a readable image ({kind})") from None
    try:
        return to_mnist(gray, name=buf.name)
    except UserError as e:
        raise HTTPException(422, str(e)) from None


def from_json(body: bytes) -> np.ndarray:
    """{"image": 28x28 numbers 0..255, white on black} -> uint8 [28, 28], taken as it is."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the request body is not valid JSON") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise HTTPException(422, JSON_HELP)
    try:
        image = np.asarray(payload["image"])
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        raise HTTPException(422, f"{JSON_HELP}; got rows of different lengths") from None
    if image.dtype.kind not in "iuf":  # strings, booleans, nulls, objects, huge integers
        raise HTTPException(422, f"{JSON_HELP}; got values that are not all numbers")
    if image.shape != (28, 28):
        raise HTTPException(422, f"{JSON_HELP}; got shape {image.shape}")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255:
        raise HTTPException(422, "image values must be finite numbers from 0 to 255")
    image = np.rint(image).astype(np.uint8)
    try:  # the blank-image test uploads get from to_mnist, so a flat array is refused too
        stretch_contrast(image / 255.0, name="the JSON image")
    except UserError as e:
        raise HTTPException(422, str(e)) from None
    return image


async def read_upload(request: Request) -> np.ndarray:
    """The image in multipart field `file` as model input (its declared type is not used)."""
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "send the image as a file in multipart form field 'file'")
        data = await upload.read()  # at most MAX_BODY: BodyLimit counted the body
    return await run_in_threadpool(from_upload, data)

