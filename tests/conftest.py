"""Shared fixtures: where the real data is, MNIST loaded and a store trained once per session."""

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mnist_lab.config import TrainConfig
from mnist_lab.data import load
from mnist_lab.store import Store, save_checkpoint
from mnist_lab.train import train


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
def stored_runs(tmp_path_factory, mnist) -> SimpleNamespace:
    """A results store with two real compact_step3 runs and their checkpoints, trained once per
    session: `best` (1 epoch on all of MNIST, ~99%) and `small` (2,000 images, study "smoke")."""
    root = tmp_path_factory.mktemp("stored_runs")
    runs = {}
    with Store(root) as store:
        for name, subset, study in (("best", 0, None), ("small", 2000, "smoke")):
            cfg = TrainConfig(epochs=1, batch_size=64, rotate=0, translate=0, subset=subset)
            record, model = train(cfg, mnist)
            path = store.checkpoint_path(record["id"])
            save_checkpoint(path, model, cfg)
            runs[name] = dict(record, checkpoint=str(path), study=study)
            store.add(runs[name], study=study)
    return SimpleNamespace(root=root, **runs)


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
