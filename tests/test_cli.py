"""The `mnist-lab` CLI end to end on real MNIST, and every bad input.

A bad input must end in exit code 2, one line on stderr, no traceback, and nothing stored.
Training is kept short: two 1-epoch runs per module (2,000 and 10,000 images).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.cli import main
from mnist_lab.data import DATASETS, FILES, locate
from mnist_lab.store import Store

SCRIPT = shutil.which("mnist-lab") or str(Path(sys.executable).with_name("mnist-lab"))
TEST_LABELS = FILES["test_labels"] + ".gz"


# ---------------------------------------------------------------- helpers

def run_cli(capsys, *args) -> tuple[int, str, str]:
    """main() in-process: (exit code, stdout, stderr); argparse's SystemExit counts too."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def train_json(*args) -> dict:
    """`train --json --epochs 1 ...` outside any test (no capsys): the printed record."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["train", "--json", "--epochs", "1", *map(str, args)])
    assert code == 0
    return json.loads(out.getvalue())


def assert_one_line_error(code: int, err: str, phrase: str) -> None:
    """Exit 2, exactly one line on stderr containing `phrase`, no traceback."""
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert phrase in lines[0]


def assert_nothing_stored(runs: Path) -> None:
    """No run record and no checkpoint in the store folder (it may not even exist)."""
    if runs.exists():
        assert Store(runs).runs() == []
        assert not list(runs.rglob("*.safetensors"))


def scan_png(digit: np.ndarray, path: Path) -> Path:
    """An MNIST digit as a phone-photo-like scan: dark ink on white paper, big, off-centre."""
    ink = Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BICUBIC)
    page = Image.new("L", (480, 360), 255)
    page.paste(ink, (230, 40))
    page.convert("RGB").save(path)
    return path


def idx_gz(path: Path, array: np.ndarray, magic: bytes = b"\x00\x00\x08") -> None:
    """Write a uint8 array as a gzip-compressed IDX file (optionally with a bad magic)."""
    header = magic + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """On a busy 2-core machine one thread is ~3x faster than two; results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One store with a small run (2,000 images) and a decent one (10,000 images, ~97%).

    Batch 32 for the decent run: 1 epoch at the default 128 is only 79 steps (~84%).
    """
    runs = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_LAB_OFFLINE", "1")
        mp.setenv("XDG_CACHE_HOME", str(runs / "cache"))
        common = ("--data-dir", data_root, "--runs-dir", runs)
        small = train_json("--subset", 2000, "--batch-size", 64, *common)
        good = train_json("--subset", 10000, "--batch-size", 32, *common)
    return SimpleNamespace(runs=runs, small=small, good=good)


@pytest.fixture(scope="module")
def digits(mnist) -> list[tuple[np.ndarray, int]]:
    """The first five test images; they happen to be of five different classes (7 2 1 0 4)."""
    picks = [(mnist.test.images[i].numpy(), int(mnist.test.labels[i])) for i in range(5)]
    assert len({label for _, label in picks}) == 5
    return picks


@pytest.fixture
def scans(tmp_path, digits) -> list[tuple[Path, int]]:
    return [(scan_png(img, tmp_path / f"scan{i}.png"), label)
            for i, (img, label) in enumerate(digits)]


# ---------------------------------------------------------------- the happy path

def test_help_console_script():
    result = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "models", "runs"):
        assert command in result.stdout


def test_bad_command_subprocess_has_no_traceback(tmp_path):
    env = dict(os.environ, MNIST_LAB_RUNS=str(tmp_path / "runs"), MNIST_LAB_OFFLINE="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = subprocess.run([SCRIPT, "predict", str(tmp_path / "missing.png")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "no such file")
    assert result.stdout == ""
    assert_nothing_stored(tmp_path / "runs")


def test_train_json_record(trained):
    record = trained.small
    assert record["status"] == "complete"
    assert record["params"] == 7432
    assert 0 < record["test_accuracy"] < 1
    assert len(record["history"]) == 1
    assert Path(record["checkpoint"]).is_file()
    assert Path(record["checkpoint"]).is_relative_to(trained.runs)


def test_runs_list(capsys, trained):
    code, out, err = run_cli(capsys, "runs", "--runs-dir", trained.runs)
    assert code == 0
    assert trained.small["id"] in out and trained.good["id"] in out
    assert "2 run(s)" in err


def test_runs_show_by_prefix(capsys, trained):
    prefix = trained.small["id"][:-3]
    assert not trained.good["id"].startswith(prefix)
    code, out, _ = run_cli(capsys, "runs", "show", prefix, "--runs-dir", trained.runs)
    assert code == 0
    assert trained.small["id"] in out
    assert "epoch   1" in out


def test_runs_show_json(capsys, trained):
    run_id = trained.small["id"]
    code, out, _ = run_cli(capsys, "runs", "show", run_id, "--json", "--runs-dir", trained.runs)
    assert code == 0
    record = json.loads(out)
    assert record["id"] == run_id
    assert record["test_accuracy"] == pytest.approx(trained.small["test_accuracy"])


def test_evaluate_human(capsys, trained, data_root):
    code, out, _ = run_cli(capsys, "evaluate", trained.small["checkpoint"],
                           "--data-dir", data_root)
    assert code == 0
    assert "compact_step3 on mnist test: accuracy" in out
    assert "most confused" in out


def test_evaluate_json_matches_training(capsys, trained, data_root):
    code, out, _ = run_cli(capsys, "evaluate", trained.small["checkpoint"], "--json",
                           "--data-dir", data_root)
    assert code == 0
    result = json.loads(out)
    assert result["params"] == 7432
    assert result["test_accuracy"] == pytest.approx(trained.small["test_accuracy"], abs=1e-3)


def test_models(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "7,432" in lines["compact_step3"]
    assert "logreg" in lines


def test_predict_scans_mostly_right(capsys, trained, scans):
    paths = [p for p, _ in scans]
    code, out, _ = run_cli(capsys, "predict", *paths, "--json",
                           "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    predicted = [p["digit"] for p in json.loads(out)["predictions"]]
    correct = sum(d == label for d, (_, label) in zip(predicted, scans, strict=True))
    assert correct >= 4, (predicted, [label for _, label in scans])


def test_predict_json_probabilities(capsys, trained, scans):
    path = scans[0][0]
    code, out, _ = run_cli(capsys, "predict", path, "--json",
                           "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    (prediction,) = json.loads(out)["predictions"]
    probs = prediction["probabilities"]
    assert len(probs) == 10
    assert sum(probs) == pytest.approx(1, abs=1e-4)
    assert prediction["digit"] == int(np.argmax(probs))
    assert prediction["file"] == str(path)


def test_predict_human_one_line_per_image(capsys, trained, scans):
    paths = [p for p, _ in scans[:2]]
    code, out, _ = run_cli(capsys, "predict", *paths, "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(p) for p in paths]


def test_predict_defaults_to_best_stored_run(capsys, trained, scans):
    code, out, _ = run_cli(capsys, "predict", scans[0][0], "--json", "--runs-dir", trained.runs)
    assert code == 0
    best = max((trained.small, trained.good), key=lambda r: r["test_accuracy"])
    assert json.loads(out)["checkpoint"] == best["checkpoint"]


def test_store_given_as_relative_path_works_from_elsewhere(capsys, tmp_path, monkeypatch,
                                                          data_root, scans):
    """Records name checkpoints by absolute path: a relative --runs-dir must not leak into them."""
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    record = train_json("--model", "softmax", "--subset", 1000, "--test-subset", 500,
                        "--data-dir", data_root, "--runs-dir", "runs")
    assert Path(record["checkpoint"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "predict", scans[0][0], "--runs-dir", "a/runs")
    assert code == 0 and out


# ---------------------------------------------------------------- bad command lines

@pytest.fixture
def bad_files(tmp_path, digits) -> Path:
    """A text file named .png, a truncated PNG, random bytes named .safetensors."""
    (tmp_path / "x.png").write_text("not a picture\n")
    scan_png(digits[0][0], tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path


TRAIN = ("train", "--no-progress", "--epochs", "1", "--data-dir", "{data}", "--runs-dir", "{runs}")


@pytest.mark.parametrize("argv, phrase", [
    pytest.param((*TRAIN, "--model", "nope"), "unknown model 'nope'", id="unknown-model"),
    pytest.param((*TRAIN, "--dataset", "nope"), "unknown dataset 'nope'", id="unknown-dataset"),
    pytest.param((*TRAIN, "--lr=-0.1"), "learning rate must be > 0", id="negative-lr"),
    pytest.param((*TRAIN, "--batch-size", "0"), "batch size must be >= 1", id="zero-batch"),
    pytest.param((*TRAIN, "--subset", "70000"), "subset size must be between", id="big-subset"),
    pytest.param((*TRAIN, "--lr", "abc"), "invalid float value: 'abc'", id="lr-not-a-number"),
    pytest.param(("predict", "{tmp}/missing.png"), "no such file", id="predict-missing"),
    pytest.param(("predict", "{tmp}/x.png"), "not a readable image", id="predict-text"),
    pytest.param(("predict", "{tmp}/cut.png"), "not a readable image", id="predict-truncated"),
    pytest.param(("predict", "{tmp}/whole.png", "--runs-dir", "{runs}"), "no stored checkpoint",
                 id="predict-empty-store"),
    pytest.param(("evaluate", "{tmp}/junk.safetensors"), "not an mnist-lab checkpoint",
                 id="evaluate-junk"),
    pytest.param(("evaluate", "{tmp}/missing.safetensors"), "no such checkpoint",
                 id="evaluate-missing"),
    pytest.param(("runs", "show", "nosuchid", "--runs-dir", "{runs}"), "no run matches",
                 id="runs-show-unknown"),
    pytest.param(("runs", "show", "--runs-dir", "{runs}"), "needs a run id", id="runs-show-no-id"),
    pytest.param(("fly",), "invalid choice: 'fly'", id="unknown-command"),
])
def test_bad_input(capsys, bad_files, data_root, argv, phrase):
    runs = bad_files / "runs"
    args = [a.format(tmp=bad_files, data=data_root, runs=runs) for a in argv]
    code, out, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, phrase)
    assert out == ""
    assert_nothing_stored(runs)


# ---------------------------------------------------------------- bad data

def test_missing_data_files_named(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_LAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--data-dir", empty, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, "mnist not found")
    for stem in FILES.values():
        assert stem in err
    assert str(empty / "mnist") in err and str(tmp_path / "cache" / "mnist-lab" / "mnist") in err
    assert_nothing_stored(tmp_path / "runs")


def _truncate(gz: bytes) -> bytes:
    return gz[:len(gz) // 2]


def _flip_middle(gz: bytes) -> bytes:
    """XOR 16 bytes in the middle of the deflate stream (the CRC catches it)."""
    b = bytearray(gz)
    for i in range(len(b) // 2, len(b) // 2 + 16):
        b[i] ^= 0xFF
    return bytes(b)


def _bad_deflate(gz: bytes) -> bytes:
    """A gzip header, then a deflate block of the reserved type 3: gzip raises zlib.error."""
    fresh = gzip.compress(gzip.decompress(gz))  # 10-byte header (no file name field)
    return fresh[:10] + b"\x07" + fresh[11:]


def _one_label_changed(gz: bytes) -> bytes:
    raw = bytearray(gzip.decompress(gz))
    raw[8] = (raw[8] + 1) % 10  # first label; structure stays valid
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize("corrupt, phrase", [
    pytest.param(_truncate, "cannot read", id="truncated-gz"),
    pytest.param(_flip_middle, "cannot read", id="flipped-bytes"),
    pytest.param(_bad_deflate, "cannot read", id="invalid-deflate"),
    pytest.param(_one_label_changed, "checksum mismatch", id="checksum-mismatch"),
])
def test_corrupted_real_file(capsys, tmp_path, data_root, corrupt, phrase):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for path in locate(DATASETS["mnist"], data_root, download=False).values():
        shutil.copy(path, folder / path.name)
    target = folder / TEST_LABELS
    target.write_bytes(corrupt(target.read_bytes()))
    code, out, err = run_cli(capsys, "train", "--epochs", "1", "--subset", "100", "--no-progress",
                             "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert str(target) in err
    assert out == ""
    assert_nothing_stored(tmp_path / "runs")


@pytest.fixture
def unverified(monkeypatch):
    """MNIST without known checksums, so structural checks are reached on synthetic files."""
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], sha256={}))


def _synthetic(folder: Path, n_train_labels: int = 50, test_magic: bytes = b"\x00\x00\x08"):
    """A tiny MNIST-shaped dataset: 50 train and 20 test images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    idx_gz(folder / (FILES["train_images"] + ".gz"), rng.integers(0, 256, (50, 28, 28)))
    idx_gz(folder / (FILES["train_labels"] + ".gz"), np.arange(n_train_labels) % 10)
    idx_gz(folder / (FILES["test_images"] + ".gz"), rng.integers(0, 256, (20, 28, 28)))
    idx_gz(folder / TEST_LABELS, np.arange(20) % 10, magic=test_magic)


@pytest.mark.parametrize("kwargs, phrase", [
    pytest.param({"n_train_labels": 40}, "50 images but 40 labels", id="count-mismatch"),
    pytest.param({"test_magic": b"\x01\x02\x03"}, "wrong magic number", id="bad-magic"),
])
def test_structurally_bad_dataset(capsys, tmp_path, unverified, kwargs, phrase):
    _synthetic(tmp_path / "data" / "mnist", **kwargs)
    code, out, err = run_cli(capsys, "train", "--epochs", "1", "--no-progress",
                             "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert out == ""
    assert_nothing_stored(tmp_path / "runs")


def test_synthetic_dataset_is_otherwise_valid(capsys, tmp_path, unverified):
    """Control for the two cases above: the untouched synthetic dataset trains."""
    _synthetic(tmp_path / "data" / "mnist")
    code, out, err = run_cli(capsys, "train", "--epochs", "1", "--batch-size", "10", "--json",
                             "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert json.loads(out)["status"] == "complete"
    assert len(Store(tmp_path / "runs").runs()) == 1
