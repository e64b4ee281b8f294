"""Shared fixtures: where the real data is, and MNIST loaded once per session."""

import os
from pathlib import Path

import pytest

from mnist_lab.data import load


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$MNIST_LAB_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("MNIST_LAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist(data_root):
    """Real MNIST, in memory."""
    return load("mnist", data_root, download=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test writes into the checkout or the user's cache, or reaches the network."""
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MNIST_LAB_OFFLINE", "1")
