"""mnist_lab.preprocess: real pictures of digits -> MNIST-like 28x28 white-on-black arrays."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lab import preprocess
from mnist_lab.errors import UserError
from mnist_lab.preprocess import load_image, stretch_contrast, to_mnist

MNIST_LAB = shutil.which("mnist-lab") or str(Path(sys.executable).with_name("mnist-lab"))


def scan(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit as a scan in [0, 1]: dark ink on white paper, upscaled, off-centre."""
    ink = Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BICUBIC)
    page = Image.new("L", (480, 360), 255)
    page.paste(ink, (230, 40))
    return np.asarray(page, dtype=np.float32) / 255


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    total = img.sum()
    return float((ys * img).sum() / total), float((xs * img).sum() / total)


@pytest.fixture(scope="module")
def digit(mnist) -> np.ndarray:
    """The first MNIST test image (a 7), uint8 28x28."""
    return mnist.test.images[0].numpy()


@pytest.fixture(scope="module")
def from_scan(digit) -> np.ndarray:
    return to_mnist(scan(digit))


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """A real 10000x9500 PNG, all black: 95 million pixels, ~12 KB on disk."""
    # over Pillow's warning limit (89 million pixels), under its error limit (179 million)
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.new("1", (10_000, 9_500)).save(path)
    return path


def test_output_is_uint8_28x28(from_scan):
    assert from_scan.dtype == np.uint8
    assert from_scan.shape == (28, 28)


def test_dark_on_light_is_inverted(from_scan):
    assert from_scan.max() > 200
    corners = from_scan[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all()


def test_centred_by_mass(from_scan):
    cy, cx = centre_of_mass(from_scan.astype(np.float64))
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_ink_fits_20x20(from_scan):
    rows, cols = np.nonzero(from_scan)
    assert rows.max() - rows.min() + 1 <= 20
    assert cols.max() - cols.min() + 1 <= 20


def test_scan_looks_like_the_original(digit, from_scan):
    assert np.corrcoef(digit.ravel(), from_scan.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("index", range(10))
def test_mnist_digit_round_trip(mnist, index):
    original = mnist.test.images[index].numpy()
    result = to_mnist(original.astype(np.float32) / 255)
    assert np.corrcoef(original.ravel(), result.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_blank_image_has_no_digit(level):
    with pytest.raises(UserError, match="no digit found"):
        to_mnist(np.full((50, 40), level, dtype=np.float32))


def test_not_2d_rejected():
    with pytest.raises(UserError, match="2-D"):
        to_mnist(np.zeros((28, 28, 3), dtype=np.float32))


def test_errors_name_the_image():
    blank = np.zeros((50, 40), dtype=np.float32)
    with pytest.raises(UserError, match="^no digit found: the image has no contrast$"):
        to_mnist(blank)
    with pytest.raises(UserError, match="^no digit found: blank.png has no contrast$"):
        to_mnist(blank, name="blank.png")
    with pytest.raises(UserError, match=r"^rgb.png is not a 2-D grayscale image \(shape"):
        to_mnist(np.zeros((28, 28, 3), dtype=np.float32), name="rgb.png")


@pytest.mark.parametrize("dark_on_light", [False, True])
@pytest.mark.parametrize("ink, has_digit", [(0.09, False), (0.11, True)])
def test_contrast_threshold(ink, has_digit, dark_on_light):
    """A digit needs ink MIN_CONTRAST (0.1) above the background, in either polarity."""
    gray = np.full((30, 30), 0.3, dtype=np.float32)
    gray[10:20, 12:16] += ink
    if dark_on_light:
        gray = 1 - gray
    if not has_digit:
        with pytest.raises(UserError, match="no contrast"):
            stretch_contrast(gray)
        return
    stretched = stretch_contrast(gray)
    assert stretched[0, 0] == 0 and stretched[15, 14] == pytest.approx(1)


def test_load_image_grayscale_in_unit_range(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (30, 20), (255, 255, 255)).save(path)
    gray = load_image(path)
    assert gray.shape == (20, 30)
    assert gray.dtype == np.float32
    assert gray.min() == gray.max() == pytest.approx(1.0)


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(UserError, match="not a readable image"):
        load_image(path)


def test_load_image_missing(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_load_image_truncated(tmp_path):
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(UserError, match="not a readable image"):
        load_image(cut)


def test_load_image_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("L", (11, 10)).save(path)
    with pytest.raises(UserError, match="too large"):
        load_image(path)


def test_load_image_too_large_for_pillow_warns_nothing(big_png):
    """Pillow's DecompressionBombWarning stays inside load_image, which gives our own error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # nothing filtered out before load_image's own filter
        with pytest.raises(UserError, match="big.png: image of 10000x9500 pixels is too large"):
            load_image(big_png)
    assert [str(w.message) for w in caught] == []
    with pytest.warns(Image.DecompressionBombWarning):  # silenced in load_image only
        Image.open(big_png).close()


def test_load_image_over_pillows_error_limit_is_too_large(tmp_path):
    """Over 179 million pixels Pillow raises in Image.open: still "too large", not unreadable."""
    path = tmp_path / "huge.png"
    Image.new("1", (15_000, 15_000)).save(path)
    with pytest.raises(UserError, match=r"huge.png: image is too large \(limit 40,000,000"):
        load_image(path)


def test_predict_too_large_is_one_line(big_png):
    """`mnist-lab predict BIG.png` prints our one-line error and no Pillow warning."""
    result = subprocess.run([MNIST_LAB, "predict", str(big_png)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "10000x9500 pixels is too large" in result.stderr
    assert result.stdout == ""


def test_load_image_broken_png_chunk(tmp_path):
    """Pillow raises SyntaxError for a PNG chunk with a wrong length: still a one-line error."""
    good = tmp_path / "good.png"
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(good)
    data = good.read_bytes()
    idat = data.index(b"IDAT")
    bad = tmp_path / "bad.png"
    bad.write_bytes(data[:idat - 1] + b"\x03" + data[idat:])  # IDAT's length byte: 3
    with pytest.raises(UserError, match="not a readable image"):
        load_image(bad)


def test_transparent_background_counts_as_white_paper(tmp_path, digit):
    """Black ink on a transparent canvas (as many drawing apps save) reads like ink on paper."""
    rgba = np.zeros((280, 280, 4), np.uint8)
    ink = np.asarray(Image.fromarray(digit).resize((200, 200)))
    rgba[40:240, 40:240, 3] = ink  # black pixels whose opacity is the MNIST ink
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = to_mnist(load_image(path)).astype(float)
    assert np.corrcoef(out.ravel(), digit.astype(float).ravel())[0, 1] > 0.8
