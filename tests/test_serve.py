"""scripts/serve.py: a checkpoint behind LitServe, called over real HTTP on 127.0.0.1 with image files as users
have them, 50 requests at once, and every kind of bad input (each answered 4xx while the rest are served)."""

import base64
import functools
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import trained_checkpoint
from lit_cifar.export import exportable
from lit_cifar.predict import read_image
from lit_cifar.sources import CLASSES

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES, MAX_PIXELS = 200_000, 1_000_000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A SeedCNN run with CIFAR-10's normalisation and flip test-time augmentation: both must reach the answers."""
    return trained_checkpoint(tmp_path_factory.mktemp("serve"), "--model.tta", "flip")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """serve.py started as a user starts it, in a folder of its own; its URL once /health answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cwd = tmp_path_factory.mktemp("server_cwd")
    log = (cwd / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", str(checkpoint), "--port", str(port),
         "--accelerator", "cpu", "--max_bytes", str(MAX_BYTES), "--max_pixels", str(MAX_PIXELS), "--batch_timeout", "0.02"],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"serve.py exited with {process.returncode}: {(cwd / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                if answer.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve.py did not answer /health in 180 s: {(cwd / 'server.log').read_text()}")
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl+C: LitServe stops its workers
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()
    assert not any(cwd.glob("*.py")), "serve.py wrote a client file into the folder it was started in"


def image_file(size: tuple[int, int], suffix: str, mode: str = "RGB", seed: int = 0) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=generator).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format={".jpg": "JPEG"}.get(suffix, suffix[1:].upper()))
    return buffer.getvalue()


# Formats, sizes and modes as users have them: resized and converted to RGB as predict.py does.
FILES = [((32, 32), ".png", "RGB"), ((64, 40), ".jpg", "RGB"), ((32, 32), ".webp", "RGB"), ((20, 20), ".gif", "P"),
         ((48, 48), ".bmp", "L"), ((32, 32), ".png", "RGBA")]


@pytest.fixture(scope="module")
def uploads(tmp_path_factory, checkpoint) -> list[tuple[bytes, list[tuple[str, float]]]]:
    """Each file's bytes and the answer the project itself gives for it: the checkpoint's top 3 through
    read_image (predict.py's reading) and its normalisation and tta."""
    folder = tmp_path_factory.mktemp("uploads")
    model = exportable(checkpoint)
    cases = []
    for i, (size, suffix, mode) in enumerate(FILES):
        path = folder / f"{i}{suffix}"
        path.write_bytes(image_file(size, suffix, mode, seed=i))
        with torch.no_grad():
            probabilities = model(read_image(path)[None]).softmax(1)[0]
        top, classes = probabilities.topk(3)
        cases.append((path.read_bytes(), [(CLASSES[k], p) for k, p in zip(classes.tolist(), top.tolist())]))
    return cases


def multipart(data: bytes, field: str = "image", filename: str = "upload") -> tuple[bytes, str]:
    boundary = "lit-cifar-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict", data=body, method="POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def upload(url: str, data: bytes) -> tuple[int, dict]:
    return post(url, *multipart(data))


def as_json(url: str, data: bytes) -> tuple[int, dict]:
    return post(url, json.dumps({"image": base64.b64encode(data).decode()}).encode(), "application/json")


def assert_answer(answer: dict, expected: list[tuple[str, float]]) -> None:
    assert [entry["class"] for entry in answer["top"]] == [name for name, _ in expected]
    assert [entry["probability"] for entry in answer["top"]] == pytest.approx([p for _, p in expected], abs=1e-5)


@pytest.mark.parametrize("send", [upload, as_json], ids=["multipart", "json_base64"])
def test_each_image_gets_the_projects_own_answer(server, uploads, send):
    for data, expected in uploads:
        status, answer = send(server, data)
        assert status == 200, answer
        assert_answer(answer, expected)


def test_a_data_url_is_taken_as_base64(server, uploads):
    data, expected = uploads[0]
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(data).decode()}).encode()
    status, answer = post(server, body, "application/json")
    assert status == 200
    assert_answer(answer, expected)


@functools.cache
def bad_requests() -> dict[str, tuple[bytes, str | None, int]]:
    """Each kind of bad input: (body, content type, the status it must get)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), (120, 30, 200)).save(buffer, format="PNG")
    tall = buffer.getvalue()  # 2 megapixels over the 1 allowed, in a file of a few kilobytes
    assert len(tall) < MAX_BYTES
    huge_claim = bytearray(image_file((32, 32), ".png"))  # its header made to claim 3000×3000: refused before decoding
    huge_claim[16:24] = (3000).to_bytes(4, "big") * 2
    huge_claim[29:33] = zlib.crc32(huge_claim[12:29]).to_bytes(4, "big")  # the IHDR chunk's checksum, which PIL checks
    return {
        "not_an_image": (*multipart(b"just some text, not an image"), 400),
        "truncated_image": (*multipart(image_file((32, 32), ".png")[:60]), 400),
        "empty_body": (b"", "application/json", 400),
        "empty_file": (*multipart(b""), 400),
        "no_image_field": (*multipart(image_file((32, 32), ".png"), field="photo"), 400),
        "json_without_image": (b'{"picture": "abc"}', "application/json", 400),
        "json_not_base64": (b'{"image": "not base64!"}', "application/json", 400),
        "not_json": (b"{image: ", "application/json", 400),
        "broken_multipart": (b"--nothing here", "multipart/form-data; boundary=other", 400),
        "too_many_bytes": (*multipart(bytes(MAX_BYTES + 1)), 413),
        "too_many_pixels": (*multipart(tall), 413),
        "claims_too_many_pixels": (*multipart(bytes(huge_claim)), 413),
        "raw_jpeg_body": (image_file((32, 32), ".jpg"), "image/jpeg", 415),
        "no_content_type": (image_file((32, 32), ".png"), None, 415),
    }


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_input_gets_a_4xx_with_its_reason_and_the_server_keeps_serving(server, uploads, case):
    body, content_type, status = bad_requests()[case]
    got, answer = post(server, body, content_type)
    assert got == status, answer
    assert isinstance(answer["detail"], str) and answer["detail"]
    data, expected = uploads[1]
    status, answer = upload(server, data)
    assert status == 200
    assert_answer(answer, expected)


def test_fifty_concurrent_requests_with_bad_ones_among_them(server, uploads):
    """Requests that arrive together are batched; a bad one among them is refused alone (LitServe answers a whole
    batch with one request's error if it fails inside the batch: lit_cifar/serve.py refuses it before)."""
    bad = bad_requests()
    jobs = []
    for i in range(50):
        if i % 10 == 3:
            body, content_type, status = list(bad.values())[i // 10]
            jobs.append((body, content_type, status, None))
        else:
            data, expected = uploads[i % len(uploads)]
            jobs.append((*multipart(data), 200, expected))
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda job: post(server, job[0], job[1]), jobs))
    wrong = [(i, status, got, answer) for i, ((_, _, status, _), (got, answer)) in enumerate(zip(jobs, results)) if got != status]
    assert not wrong, f"{len(wrong)} of 50 requests got another status (index, expected, got, answer): {wrong}"
    for (_, _, _, expected), (_, answer) in zip(jobs, results):
        if expected is not None:
            assert_answer(answer, expected)


def test_a_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", str(tmp_path / "no.ckpt")],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no.ckpt" in result.stderr, result.stderr


def test_a_taken_port_and_a_missing_gpu_are_one_line(checkpoint, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags, message in ((["--port", str(port)], f"--port {port}: 127.0.0.1 port {port} is taken"),
                               (["--accelerator", "cuda"], "--accelerator cuda was given but no GPU was found")):
            result = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", str(checkpoint), *flags],
                                    capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
            assert result.stderr.strip().count("\n") == 0


def test_flags_out_of_range_are_refused(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", "x.ckpt", "--top_k", "11"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--top_k must be at most 10" in result.stderr
