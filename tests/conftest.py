"""Shared fixtures: where the real data is, MNIST loaded and a store trained once per session,
and the helpers every CLI test uses (running the CLI, asserting one-line errors, fake scans)."""

import contextlib
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
from PIL import Image

from mnist_lab.cli import main
from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.data import load
from mnist_lab.record import StudyLabel
from mnist_lab.store import Store
from mnist_lab.worker import execute


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$MNIST_LAB_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("MNIST_LAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist(data_root):
    """Real MNIST, in memory."""
    return load("mnist", data_root, download=False)


@pytest.fixture(scope="session")
def stored_runs(tmp_path_factory, data_root) -> SimpleNamespace:
    """A results store with two real compact_step3 runs and their checkpoints, trained once per
    session: `best` (1 epoch on all of MNIST, ~99%) and `small` (2,000 images, study "smoke")."""
    root = tmp_path_factory.mktemp("stored_runs")
    runs = {}
    with Store(root) as store:
        for name, subset, study in (("best", 0, None), ("small", 2000, "smoke")):
            cfg = TrainConfig(epochs=1, batch_size=64, rotate=0, translate=0, subset=subset)
            label = StudyLabel(study, "smoke", name, 0) if study else None
            record, model = execute(cfg, RunContext(data_dir=str(data_root)), label)
            runs[name] = store.add_run(record, model)
    return SimpleNamespace(root=root, **runs)


@pytest.fixture(scope="session")
def suite_runs(tmp_path_factory, data_root) -> SimpleNamespace:
    """A store for the robustness suites: `val_run`, compact_step3 for 2 epochs on 8,000 images
    with a 2,000-image validation hold-out (~97%), and `classical`, logistic regression on
    2,000 images."""
    root = tmp_path_factory.mktemp("suite_runs")
    ctx = RunContext(data_dir=str(data_root))
    with Store(root) as store:
        cfg = TrainConfig(epochs=2, batch_size=64, rotate=0, translate=0, subset=8000,
                          val_size=2000)
        val_run = store.add_run(*execute(cfg, ctx))
        classical = store.add_run(execute(TrainConfig(model="logreg", subset=2000), ctx)[0])
    return SimpleNamespace(root=root, val_run=val_run, classical=classical)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test writes into the checkout or the user's cache, or reaches the network."""
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MNIST_LAB_OFFLINE", "1")


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(options) -> a freshly mounted folder (root only, else skip); unmounted after."""
    mounted = []

    def _mount(options: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield _mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ---------------------------------------------------------------- CLI helpers

@pytest.fixture(scope="session")
def script() -> str:
    """The installed `mnist-lab` console script."""
    return shutil.which("mnist-lab") or str(Path(sys.executable).with_name("mnist-lab"))


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr) of main() in-process; argparse's SystemExit
    counts too."""
    def run(*args) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture(scope="session")
def train_json():
    """train_json(*args): `train --json --epochs 1 ...` outside any test (no capsys); the
    printed record."""
    def run(*args) -> dict:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["train", "--json", "--epochs", "1", *map(str, args)])
        assert code == 0
        return json.loads(out.getvalue())
    return run


@pytest.fixture(scope="session")
def assert_one_line_error():
    """assert_one_line_error(code, err, phrase): exit 2, exactly one line on stderr containing
    `phrase`, no traceback."""
    def check(code: int, err: str, phrase: str) -> None:
        assert code == 2
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert phrase in lines[0]
    return check


@pytest.fixture(scope="session")
def assert_nothing_stored():
    """assert_nothing_stored(runs): no record and no checkpoint in the store folder (it may not
    even exist)."""
    def check(runs: Path) -> None:
        if runs.exists():
            assert Store(runs).runs() == []
            assert not list(runs.rglob("*.safetensors"))
    return check


@pytest.fixture(scope="session")
def scan_png():
    """scan_png(digit, path): an MNIST digit as a phone-photo-like scan, dark ink on white
    paper, big, off-centre."""
    def write(digit: np.ndarray, path: Path) -> Path:
        ink = Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BICUBIC)
        page = Image.new("L", (480, 360), 255)
        page.paste(ink, (230, 40))
        page.convert("RGB").save(path)
        return path
    return write


@pytest.fixture(scope="session")
def idx_gz():
    """idx_gz(path, array, magic): a uint8 array as a gzip-compressed IDX file."""
    def write(path: Path, array: np.ndarray, magic: bytes = b"\x00\x00\x08") -> None:
        header = magic + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return write
