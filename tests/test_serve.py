"""`mnist-lab serve`'s API on real MNIST: predictions, the model picker, and every bad input.

Bad input must give a 4xx with one clear sentence in {"detail": ...}, never a 500; a fuzz
test sends random bytes, content types and JSON. The models are the session's `stored_runs`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from mnist_lab import serve
from mnist_lab.inference import Classifier
from mnist_lab.preprocess import load_image, to_mnist
from mnist_lab.robust.saliency import saliency, signed_map
from mnist_lab.serve import MAX_BODY, create_app

# Hypothesis keeps caches in ./.hypothesis, from collection on: keep them out of the checkout
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mnist-lab-hypothesis")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fixtures are shared
BIN = Path(sys.executable).parent
MNIST_LAB, SCHEMATHESIS = (shutil.which(name) or str(BIN / name)
                           for name in ("mnist-lab", "schemathesis"))


# ---------------------------------------------------------------- helpers

def png(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """A uint8 grayscale array encoded as PNG (or another format Pillow writes)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def huge_png(side: int = 10_000) -> bytes:
    """A valid side x side black grayscale PNG; zeros deflate ~1000:1, so it is ~100 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    z, row = zlib.compressobj(1), b"\0" * (side + 1)  # a filter byte, then the row's pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def upload(client: TestClient, data: bytes, kind: str = "image/png", model: str | None = None):
    """POST /predict with `data` as multipart field `file`."""
    params = {"model": model} if model else {}
    return client.post("/predict", files={"file": ("digit.png", data, kind)}, params=params)


def upload_part(client: TestClient, data: bytes, kind: str | None):
    """POST /predict with one multipart part declaring type `kind`, or no type if None."""
    # built by hand: httpx would guess a Content-Type from the file name
    headers = 'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
    headers += f"Content-Type: {kind}\r\n" if kind is not None else ""
    body = b"--B\r\n" + headers.encode() + b"\r\n" + data + b"\r\n--B--\r\n"
    return client.post("/predict", content=body,
                       headers={"content-type": "multipart/form-data; boundary=B"})


def assert_error(response, code: int, phrase: str) -> None:
    """The status code, and a one-line JSON detail containing `phrase`."""
    assert response.status_code == code, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert phrase in detail, detail


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(stored_runs):
    """The app over the session's store, with a study report on disk for the `smoke` study."""
    report = stored_runs.root / "reports" / "smoke" / "report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<!doctype html><title>smoke report</title><h1>smoke report</h1>")
    with TestClient(create_app(stored_runs.root)) as c:
        yield c


@pytest.fixture(scope="module")
def tests10(mnist) -> list[tuple[np.ndarray, int]]:
    """The first ten MNIST test images with their labels."""
    return [(mnist.test.images[i].numpy(), int(mnist.test.labels[i])) for i in range(10)]


# ---------------------------------------------------------------- predictions

def test_real_mnist_pngs_mostly_right(client, stored_runs, tests10):
    correct = 0
    for image, label in tests10:
        response = upload(client, png(image))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == stored_runs.best.id
        assert len(body["probabilities"]) == 10
        assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert body["digit"] == int(np.argmax(body["probabilities"]))
        seen = np.array(body["input"])
        assert seen.shape == (28, 28) and 0 <= seen.min() and seen.max() <= 255
        correct += body["digit"] == label
    assert correct >= 9


def test_same_preprocessing_and_model_as_predict(client, stored_runs, tests10):
    """The API's answer is what `mnist-lab predict` computes for the same file."""
    data = png(tests10[3][0])
    body = upload(client, data).json()
    expected = to_mnist(load_image(io.BytesIO(data)))
    assert np.array_equal(np.array(body["input"]), expected)
    probs = Classifier(stored_runs.best.checkpoint).probabilities(expected[None])[0]
    assert body["probabilities"] == pytest.approx(probs.tolist(), abs=1e-5)


@pytest.mark.parametrize("kind", ["image/png", "image/jpeg"])
def test_dark_digit_on_noisy_paper(client, tests10, tmp_path, kind, scan_png):
    """Photos are dark ink on light, noisy paper: to_mnist inverts them, as predict does."""
    rng = np.random.default_rng(0)
    correct = 0
    for i, (image, label) in enumerate(tests10[:5]):
        page = np.asarray(Image.open(scan_png(image, tmp_path / f"{i}.png")).convert("L"))
        noisy = np.clip(page * 0.85 + rng.normal(20, 8, page.shape), 0, 255).astype(np.uint8)
        response = upload(client, png(noisy, kind.split("/")[1].upper()), kind)
        assert response.status_code == 200, response.text
        correct += response.json()["digit"] == label
    assert correct >= 4


def test_json_array_is_the_input_as_is(client, tests10):
    correct = 0
    for image, label in tests10:
        response = client.post("/predict", json={"image": image.tolist()})
        assert response.status_code == 200, response.text
        assert response.json()["input"] == image.tolist()
        correct += response.json()["digit"] == label
    assert correct >= 9


def test_saliency_of_the_predicted_digit(client, stored_runs, tests10):
    """28x28 integrated gradients of the input for the predicted digit, in [-1, 1]."""
    image = tests10[0][0]
    body = client.post("/predict", json={"image": image.tolist()}).json()
    seen = np.array(body["saliency"])
    assert seen.shape == (28, 28) and np.abs(seen).max() == 1
    assert not seen[image == 0].any()  # the black baseline: the background has no saliency
    assert seen[image > 0].sum() > 0  # the ink is, on the whole, evidence for the digit
    assert all(round(v, 3) == v for row in body["saliency"] for v in row)
    x = torch.from_numpy(image).float().div(255)[None, None]
    attr = saliency(Classifier(stored_runs.best.checkpoint).net, x, body["digit"])
    assert seen == pytest.approx(signed_map(attr[0]), abs=1e-3)
    png_body = upload(client, png(image)).json()  # uploads get a map of what the model saw
    assert np.array(png_body["saliency"]).shape == (28, 28)


def test_saliency_null_without_gradients(client, tests10, monkeypatch):
    """A model without gradients (scikit-learn) answers saliency: null, the rest as ever."""
    monkeypatch.setattr(serve, "saliency", lambda *args, **kw: None)
    body = client.post("/predict", json={"image": tests10[0][0].tolist()}).json()
    assert body["saliency"] is None and len(body["probabilities"]) == 10


def test_json_floats_are_rounded(client, tests10):
    image = tests10[0][0]
    response = client.post("/predict", json={"image": (image * 0.999).tolist()})
    assert response.status_code == 200
    assert np.abs(np.array(response.json()["input"]) - image).max() <= 1


def test_models_lists_checkpoints_best_first(client, stored_runs):
    body = client.get("/models").json()
    assert body["default"] == stored_runs.best.id
    assert [m["id"] for m in body["models"]] == [stored_runs.best.id, stored_runs.small.id]
    best, small = body["models"]
    assert best["default"] and not small["default"]
    assert best["model"] == "compact_step3" and best["dataset"] == "mnist"
    assert best["test_accuracy"] == pytest.approx(stored_runs.best.metric("test_accuracy"))
    assert small["study"] == "smoke"


def test_model_picker_by_prefix(client, stored_runs, tests10):
    prefix = stored_runs.small.id[:-3]
    assert not stored_runs.best.id.startswith(prefix)
    data = png(tests10[0][0])
    picked, default = upload(client, data, model=prefix).json(), upload(client, data).json()
    assert picked["model"] == stored_runs.small.id
    assert default["model"] == stored_runs.best.id
    assert picked["input"] == default["input"]
    assert picked["probabilities"] != default["probabilities"]


def test_threads_share_a_small_lru_cache(stored_runs, tests10, monkeypatch):
    """Concurrent requests alternating models through a cache of one all get the right model."""
    monkeypatch.setattr(serve, "CACHE_SIZE", 1)
    app, data = create_app(stored_runs.root), png(tests10[0][0])
    ids = [stored_runs.best.id, stored_runs.small.id] * 6
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda run: upload(client, data, model=run).json(), ids))
    assert [a["model"] for a in answers] == ids
    assert len({tuple(a["probabilities"]) for a in answers}) == 2
    models = app.state.models
    best, small = stored_runs.best.checkpoint, stored_runs.small.checkpoint
    kept = models.classifier(best)
    assert models.classifier(best) is kept  # cached
    models.classifier(small)
    assert models.classifier(best) is not kept  # evicted by the other, so loaded again


@pytest.fixture
def served(stored_runs, tmp_path) -> Iterator[str]:
    """`mnist-lab serve --port 0` over the session's store, in its own process; its base URL."""
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        server = subprocess.Popen([MNIST_LAB, "serve", "--runs-dir", str(stored_runs.root),
                                   "--host", "127.0.0.1", "--port", "0"], stderr=err,
                                  env=dict(os.environ, MNIST_LAB_OFFLINE="1"))
    try:
        deadline = time.monotonic() + 120
        while not (url := re.search(r" at (http://127\.0\.0\.1:\d+/) ", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url[1]
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---------------------------------------------------------------- pages, runs and reports

def test_pages_and_static_files(client):
    for path, text in (("/", 'id="pad"'), ("/runs", 'id="runs"'), ("/static/draw.js", "toBlob"),
                       ("/static/style.css", "touch-action")):
        response = client.get(path)
        assert response.status_code == 200, path
        assert text in response.text
    page = client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere


def test_openapi_documents_both_inputs(client):
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "/models" in spec["paths"]
    answer = spec["components"]["schemas"]["Prediction"]
    assert "saliency" in answer["required"]
    assert "integrated gradients" in answer["properties"]["saliency"]["description"]


def test_openapi_declares_every_error(client):
    """Each API route lists every 4xx it can answer (_BodyLimit's on all), each as a Detail."""
    paths = client.get("/openapi.json").json()["paths"]
    codes = {path: set(op["responses"]) for path, ops in paths.items() for op in ops.values()}
    assert codes == {"/predict": {"200", "400", "404", "413", "415", "422"},
                     "/models": {"200", "400", "413"}, "/runs.json": {"200", "400", "413"}}
    for ops in paths.values():
        for op in ops.values():
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Detail"}, code


@pytest.mark.parametrize("path", ["/models", "/runs.json"])
def test_body_limit_on_get_routes(client, path):
    """The 400 and 413 the GET routes declare are real: _BodyLimit runs before any route."""
    assert_error(client.request("GET", path, headers={"content-length": "x"}), 400,
                 "invalid Content-Length")
    assert_error(client.request("GET", path, content=b"7" * (MAX_BODY + 1)), 413,
                 "larger than the limit")


# The schema can say "binary" and "28x28 numbers from 0 to 255", not "a PNG or JPEG that
# decodes" nor "an image with a digit in it", so some schema-valid requests are rightly refused
# (400 unreadable, 415 not PNG/JPEG, 422 blank), as is a random `model` naming no run (404).
# positive_data_acceptance allows those on /predict; any other refusal still fails it.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/predict"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "415", "422"]
"""


def test_schemathesis_finds_nothing(served, tmp_path):
    """The independent OpenAPI fuzzer, every check, against the real server: no failures."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(config), "run", f"{served}openapi.json",
         "--checks", "all", "--max-examples", "50", "--seed", "1", "--workers", "1",
         "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: 3" in result.stdout, result.stdout  # all of /predict, /models, /runs.json
    assert re.search(r"\b(\d+) generated, \1 passed\b", result.stdout), result.stdout


def test_runs_json_links_existing_reports(client, stored_runs):
    runs = {r["id"]: r for r in client.get("/runs.json").json()["runs"]}
    small, best = runs[stored_runs.small.id], runs[stored_runs.best.id]
    assert small["study"] == "smoke" and small["status"] == "complete"
    assert small["report"] == "/reports/smoke/report.html"
    assert best["report"] is None
    assert "smoke report" in client.get(small["report"]).text


@pytest.mark.parametrize("path", [
    "/reports/nosuch/report.html",
    "/reports/../../../etc/passwd",
    "/reports/..%2F..%2F..%2Fetc/report.html",
    "/reports/%2e%2e/report.html",
    "/reports/smoke/../../runs.db",
    "/static/../serve.py",
    "/static/%2e%2e/serve.py",
])
def test_no_path_traversal(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "SQLite" not in response.text and "import" not in response.text


# ---------------------------------------------------------------- bad input

def _chunked(total: int):
    """A body without Content-Length, in 1 MiB pieces: only counting can stop it."""
    for _ in range(total // 2**20 + 1):
        yield b"7" * 2**20


DIAGONAL = np.pad(np.eye(20, dtype=np.uint8) * 255, 4)
BLANK, REAL, JPEG = png(np.full((64, 64), 255, np.uint8)), png(DIAGONAL), png(DIAGONAL, "JPEG")
GIF, BMP = png(DIAGONAL, "GIF"), png(DIAGONAL, "BMP")  # Pillow reads both: refused by their bytes
IDAT = REAL.index(b"IDAT")
SHORT_CHUNK = REAL[:IDAT - 1] + b"\x03" + REAL[IDAT:]  # PIL raises SyntaxError, not OSError


@pytest.mark.parametrize("send, code, phrase", [
    pytest.param(lambda c: upload(c, b"\x89PNG" + b"\0" * MAX_BODY), 413, "larger than the limit",
                 id="oversized-upload"),
    pytest.param(lambda c: c.post("/predict", content=_chunked(MAX_BODY),
                                  headers={"content-type": "application/json"}),
                 413, "larger than the limit", id="oversized-chunked-json"),
    pytest.param(lambda c: upload(c, REAL[:len(REAL) // 2]), 400, "not a readable image",
                 id="truncated-png"),
    pytest.param(lambda c: upload(c, SHORT_CHUNK), 400, "not a readable image (SyntaxError)",
                 id="png-chunk-length-wrong"),
    pytest.param(lambda c: upload(c, JPEG[:len(JPEG) // 2], "image/jpeg"), 400,
                 "not a readable image", id="truncated-jpeg"),
    pytest.param(lambda c: upload(c, b"hello, not an image"), 415, "neither PNG nor JPEG",
                 id="text-bytes"),
    pytest.param(lambda c: upload(c, GIF), 415, "only PNG and JPEG images are accepted",
                 id="gif-named-png"),
    pytest.param(lambda c: upload(c, GIF, "image/gif"), 415, "neither PNG nor JPEG",
                 id="gif"),
    pytest.param(lambda c: upload_part(c, BMP, None), 415, "neither PNG nor JPEG",
                 id="bmp-no-type"),
    pytest.param(lambda c: upload(c, b""), 415, "neither PNG nor JPEG", id="empty-file"),
    pytest.param(lambda c: c.post("/predict", content=REAL, headers={"content-type": "image/png"}),
                 415, "multipart/form-data", id="raw-body"),
    pytest.param(lambda c: c.post("/predict", data={"image": "1"}), 415, "multipart/form-data",
                 id="urlencoded-form"),
    pytest.param(lambda c: c.post("/predict", files={"other": ("a.png", REAL, "image/png")}),
                 422, "form field 'file'", id="no-file-field"),
    # Pillow warns above 89 million pixels: were load_image to let that out, "error" makes it
    # an exception in the request, and a 400
    pytest.param(lambda c: upload(c, huge_png()), 413, "10000x10000 pixels is too large",
                 id="10000x10000-png", marks=pytest.mark.filterwarnings(
                     "error::PIL.Image.DecompressionBombWarning")),
    pytest.param(lambda c: upload(c, huge_png(15_000)), 413, "image is too large",
                 id="15000x15000-png"),  # over Pillow's own error limit
    pytest.param(lambda c: upload(c, BLANK), 422,
                 "no digit found: the uploaded image has no contrast", id="blank-image"),
    pytest.param(lambda c: c.post("/predict", json={"image": [[0] * 28] * 28}), 422,
                 "no digit found: the JSON image has no contrast", id="json-blank"),
    pytest.param(lambda c: c.post("/predict", json={"image": [[0] * 28] * 27}), 422,
                 "got shape (27, 28)", id="json-27x28"),
    pytest.param(lambda c: c.post("/predict", json={"image": [[0] * 28] * 27 + [[0] * 5]}), 422,
                 "rows of different lengths", id="json-ragged"),
    pytest.param(lambda c: c.post("/predict", json={"image": [[300] * 28] * 28}), 422,
                 "from 0 to 255", id="json-300"),
    pytest.param(lambda c: c.post("/predict", json={"image": [[-1] * 28] * 28}), 422,
                 "from 0 to 255", id="json-negative"),
    pytest.param(lambda c: c.post("/predict", content=b'{"image": [' + b",".join(
        [b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]}",
        headers={"content-type": "application/json"}), 422, "finite", id="json-nan"),
    pytest.param(lambda c: c.post("/predict", json={"image": [["7"] * 28] * 28}), 422,
                 "not all numbers", id="json-strings"),
    pytest.param(lambda c: c.post("/predict", json={"pixels": []}), 422, '{"image":',
                 id="json-no-image"),
    pytest.param(lambda c: c.post("/predict", content=b"{not json",
                                  headers={"content-type": "application/json"}),
                 400, "not valid JSON", id="not-json"),
    pytest.param(lambda c: upload(c, REAL, model="nosuchrun"), 404, "no run matches",
                 id="unknown-model"),
    pytest.param(lambda c: upload(c, REAL, model="2"), 404, "more than one run matches",
                 id="ambiguous-model"),
])
def test_bad_input(client, send, code, phrase):
    assert_error(send(client), code, phrase)


def test_good_control_for_bad_inputs(client):
    """The images the cases above break are themselves fine."""
    assert upload(client, REAL).status_code == 200
    assert upload(client, JPEG, "image/jpeg").status_code == 200


@pytest.mark.parametrize("data", [REAL, JPEG], ids=["png", "jpeg"])
@pytest.mark.parametrize("kind", [None, "text/plain", "image/gif", "application/octet-stream",
                                  "image/jpeg", "image/png"])
def test_upload_type_is_read_from_its_bytes(client, data, kind):
    """A PNG or JPEG is classified whatever type its part declares, or with none at all."""
    response = upload_part(client, data, kind)
    assert response.status_code == 200, response.text
    assert response.json()["input"] == to_mnist(load_image(io.BytesIO(data))).tolist()


@pytest.mark.parametrize("level", [0, 128, 255])
def test_flat_image_refused_alike_as_json_and_png(client, level):
    """A blank image is the same 422 whichever way it comes."""
    flat = np.full((28, 28), level, np.uint8)
    assert_error(upload(client, png(flat)), 422,
                 "no digit found: the uploaded image has no contrast")
    assert_error(client.post("/predict", json={"image": flat.tolist()}), 422,
                 "no digit found: the JSON image has no contrast")


@pytest.mark.parametrize("ink, code", [(20, 422), (30, 200)])  # the threshold: 0.1 * 255 = 25.5
def test_faint_ink_same_answer_as_json_and_png(client, ink, code):
    """Both paths share one contrast threshold: ink 20 above black is no digit, 30 is."""
    image = (DIAGONAL > 0).astype(np.uint8) * ink
    as_png = upload(client, png(image))
    as_json = client.post("/predict", json={"image": image.tolist()})
    assert (as_png.status_code, as_json.status_code) == (code, code), (as_png.text, as_json.text)


# ---------------------------------------------------------------- fuzz

CONTENT_TYPES = st.sampled_from(["image/png", "image/jpeg", "text/plain", "image/gif", "",
                                 "application/octet-stream", "image/png; charset=x"])
FILES = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]).flatmap(
        lambda sig: st.binary(max_size=2048).map(lambda rest: sig + rest)),
    st.sampled_from([REAL, JPEG]).flatmap(lambda good: st.integers(0, len(good)).map(
        lambda n: good[:n])),
    st.sampled_from([REAL, JPEG]).flatmap(lambda good: st.lists(st.tuples(
        st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda edits: _edit(good, edits))),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(
                        st.text(max_size=6), inner, max_size=4), max_leaves=900)


def _edit(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """`data` with some bytes replaced: mostly broken, sometimes still decodable."""
    out = bytearray(data)
    for i, value in edits:
        out[i] = value
    return bytes(out)


@FUZZ
@given(data=FILES, kind=CONTENT_TYPES)
def test_fuzz_uploads_never_500(client, data, kind):
    response = upload(client, data, kind)
    assert response.status_code in (200, 400, 413, 415, 422), response.text
    assert isinstance(response.json().get("detail", ""), str)


@FUZZ
@given(payload=JSON | st.fixed_dictionaries({"image": JSON}))
def test_fuzz_json_never_500(client, payload):
    response = client.post("/predict", content=json.dumps(payload),
                           headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 422), response.text


@FUZZ
@given(body=st.binary(max_size=1024), kind=st.sampled_from(
    ["multipart/form-data; boundary=x", "multipart/form-data", "application/json", "text/html"]))
def test_fuzz_raw_bodies_never_500(client, body, kind):
    response = client.post("/predict", content=body, headers={"content-type": kind})
    assert 400 <= response.status_code < 500, response.text


# ---------------------------------------------------------------- the serve command

def test_serve_empty_store_is_one_line_error(tmp_path, cli, assert_one_line_error):
    code, out, err = cli("serve", "--runs-dir", tmp_path / "empty")
    assert_one_line_error(code, err, "no stored checkpoint")
    assert out == ""


@pytest.mark.parametrize("args, phrase", [
    (("--checkpoint", "nosuchrun"), "no such checkpoint file, and no run matches 'nosuchrun'"),
    (("--checkpoint", "{tmp}/missing.safetensors"), "no such checkpoint file"),
    (("--port", "70000"), "--port must be between 0 and 65535"),
    (("--port", "eighty"), "invalid int value: 'eighty'"),
    (("--host", "no.such.host.invalid"), "cannot listen on no.such.host.invalid"),
])
def test_serve_argument_errors(stored_runs, tmp_path, args, phrase, cli, assert_one_line_error):
    argv = [a.format(tmp=tmp_path) for a in args]
    code, out, err = cli("serve", "--runs-dir", stored_runs.root, *argv)
    assert_one_line_error(code, err, phrase)


def test_serve_port_taken(stored_runs, cli, assert_one_line_error):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = cli("serve", "--runs-dir", stored_runs.root, "--port", port)
    assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}")


def test_serve_without_fastapi_says_what_to_install(monkeypatch, stored_runs, cli,
                                                    assert_one_line_error):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # importing it now fails
    monkeypatch.delitem(sys.modules, "mnist_lab.serve")
    code, _, err = cli("serve", "--runs-dir", stored_runs.root)
    assert_one_line_error(code, err, "pip install 'mnist-lab[serve]'")
