"""A trained checkpoint behind an HTTP endpoint, on LitServe: POST an image, get its likeliest classes as JSON.

``scripts/serve.py`` is the command line. The endpoint, ``POST /predict``, takes one image file of any
format and size PIL reads, either as a multipart upload in the form field ``image``
(``curl -F image=@cat.jpg``) or as JSON ``{"image": "<the file in base64>"}``, and answers
``{"top": [{"class": "cat", "probability": 0.81}, ...]}``, likeliest first, as ``scripts/predict.py``'s
JSON rows do. Two pieces:

- ``ImageUploads``, an ASGI middleware in the HTTP server's process, checks and decodes each request
  before it is queued, and answers what it cannot take with a 4xx status and ``{"detail": why}``: 413
  for a body or an image too large (bytes, pixels), 415 for another content type, 400 for an empty body,
  a missing field, bad base64 or a file that is not an image. An accepted request goes on to LitServe
  with its body replaced by the decoded image, 3×32×32 uint8 as base64. This is not done in
  ``LitAPI.decode_request`` because LitServe answers every request of a batch with the error one of them
  raised there (Lightning-AI/LitServe#340); so the inference worker only ever gets valid images.
- ``CifarAPI``, the LitAPI: the checkpoint as ``lit_cifar.export.ExportedClassifier``, read once by
  scripts/serve.py (the run's normalisation and test-time augmentation inside, fp32); requests that arrive together run as one
  batch, each answered with its top-k classes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import litserve as ls
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lit_cifar.export import ExportedClassifier
from lit_cifar.predict import as_network_input
from lit_cifar.sources import CLASSES, IMAGE_SIZE

API_PATH = "/predict"
FIELD = "image"
HOW_TO_SEND = f'send one image file as a multipart upload in the field "{FIELD}" (curl -F {FIELD}=@cat.jpg) or as JSON {{"{FIELD}": "<base64>"}}'


class Refused(Exception):
    """A request the endpoint does not take: the HTTP status and the reason it is answered with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class ImageUploads:
    """ASGI middleware: each ``POST /predict`` checked and its image decoded to 3×32×32 uint8, or refused.

    Args:
        app: The application it wraps (LitServe's).
        max_bytes: The largest request body taken, in bytes (413 above).
        max_pixels: The most pixels (width × height) an image may have, read from its header before it
            is decoded (413 above), so a small file that claims a huge image is not decoded.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_pixels: int) -> None:
        self.app, self.max_bytes, self.max_pixels = app, max_bytes, max_pixels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != API_PATH:
            await self.app(scope, receive, send)
            return
        try:
            image = await self.decoded_image(scope, receive)
        except Refused as refusal:
            await JSONResponse({"detail": refusal.detail}, status_code=refusal.status)(scope, receive, send)
            return
        body = json.dumps({"pixels": base64.b64encode(image.numpy().tobytes()).decode()}).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.app({**scope, "headers": headers}, replay(body, receive), send)

    async def decoded_image(self, scope: Scope, receive: Receive) -> torch.Tensor:
        headers = Headers(scope=scope)
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type not in ("multipart/form-data", "application/json"):
            raise Refused(415, f"Content-Type {media_type or '(none)'} is not taken: {HOW_TO_SEND}")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise Refused(413, f"the body is {int(declared):,} bytes, more than the server's --max_bytes {self.max_bytes:,}")
        body = await read_body(receive, self.max_bytes)
        if not body:
            raise Refused(400, f"the body is empty: {HOW_TO_SEND}")
        if media_type == "application/json":
            data = image_from_json(body)
        else:
            data = await image_from_form(scope, body)
        if not data:
            raise Refused(400, f'the "{FIELD}" file is empty (0 bytes): {HOW_TO_SEND}')
        return await run_in_threadpool(decode_image, data, self.max_pixels)


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is longer than ``max_bytes``."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "the client disconnected before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise Refused(413, f"the body is more than the server's --max_bytes {max_bytes:,} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` as the request, then waits on the client as before."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def image_from_json(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
    except ValueError:
        raise Refused(400, f"the body is not valid JSON: {HOW_TO_SEND}") from None
    encoded = payload.get(FIELD) if isinstance(payload, dict) else None
    if not isinstance(encoded, str):
        raise Refused(400, f'the JSON has no string "{FIELD}": {HOW_TO_SEND}')
    if encoded.startswith("data:"):  # a data URL, data:image/png;base64,...
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise Refused(400, f'the JSON\'s "{FIELD}" is not base64: {HOW_TO_SEND}') from None


async def image_from_form(scope: Scope, body: bytes) -> bytes:
    try:
        form = await Request(scope, replay(body, _never)).form(max_files=1, max_fields=10)
    except HTTPException as err:  # starlette's answer to a multipart body it cannot parse
        raise Refused(400, f"the multipart body could not be read ({err.detail}): {HOW_TO_SEND}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise Refused(400, f'the form has no file in the field "{FIELD}": {HOW_TO_SEND}')
        return await upload.read()
    finally:
        await form.close()  # the upload's spooled temporary file


async def _never() -> dict:
    raise RuntimeError("the body was read whole before it was replayed")


def decode_image(data: bytes, max_pixels: int) -> torch.Tensor:
    """An image file's bytes as the network's 3×32×32 uint8 input; its size is checked from the header first."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise Refused(413, f"the image is {width}×{height} = {width * height:,} pixels, more than the server's "
                                   f"--max_pixels {max_pixels:,}: send a smaller image")
            return as_network_input(image)
    except Image.DecompressionBombError as err:
        raise Refused(413, f"the image is too large to decode safely ({err})") from None
    except Image.UnidentifiedImageError:
        raise Refused(400, f"the file is not an image PIL can read: {HOW_TO_SEND}") from None
    except (OSError, ValueError, SyntaxError) as err:  # what PIL raises on a damaged file
        raise Refused(400, f"the image could not be decoded ({err})") from None


class CifarAPI(ls.LitAPI):
    """A checkpoint's classifier for LitServe: decoded images (from ``ImageUploads``) in, top-k classes out.

    Args:
        model: The checkpoint's classifier, as ``lit_cifar.export.exportable`` reads it (uint8 images in).
        top_k: How many classes each answer lists, likeliest first.
        max_batch_size: The most requests run as one batch.
        batch_timeout: Seconds a batch waits for more requests once its first has arrived.
    """

    def __init__(self, model: ExportedClassifier, top_k: int = 3, max_batch_size: int = 64, batch_timeout: float = 0.005) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model, self.top_k = model, top_k

    def setup(self, device: str) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)

    def decode_request(self, request: dict) -> torch.Tensor:
        pixels = bytearray(base64.b64decode(request["pixels"]))
        return torch.frombuffer(pixels, dtype=torch.uint8).view(3, IMAGE_SIZE, IMAGE_SIZE)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities: N×10 for a batch (N×3×32×32), 10 for one request when batching is off."""
        with torch.inference_mode():
            probabilities = self.model(images.view(-1, 3, IMAGE_SIZE, IMAGE_SIZE).to(self.device)).softmax(1).cpu()
        return probabilities if images.dim() == 4 else probabilities[0]

    def encode_response(self, probabilities: torch.Tensor) -> dict:
        top, classes = probabilities.topk(self.top_k)
        return {"top": [{"class": CLASSES[k], "probability": p} for k, p in zip(classes.tolist(), top.tolist())]}
