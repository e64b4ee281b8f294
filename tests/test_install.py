"""A fresh install works from any folder: the studies ship inside the package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of the checkout, installed into a folder of its
    own (dependencies come from this environment: only mnist-lab itself is fresh)."""
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    shutil.copytree(ROOT / "mnist_lab", src / "mnist_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(build / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = (build / "wheel").glob("mnist_lab-*.whl")
    site = build / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def _lab(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-m", "mnist_lab.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=600)


def test_the_wheel_is_what_runs(installed, tmp_path):
    done = subprocess.run([sys.executable, "-c", "import mnist_lab; print(mnist_lab.__file__)"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(installed)),
                          capture_output=True, text=True, check=True)
    assert Path(done.stdout.strip()).is_relative_to(installed)


def test_shipped_study_runs_from_an_empty_folder(installed, tmp_path, data_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = _lab(installed, empty, "study", "list")
    assert listed.returncode == 0 and "augmentation" in listed.stdout
    done = _lab(installed, empty, "study", "run", "augmentation", "--quick", "--no-progress",
                MNIST_LAB_DATA=str(data_root), MNIST_LAB_RUNS=str(empty / "runs"))
    assert done.returncode == 0, done.stderr
    assert "2 complete" in done.stdout
    report = _lab(installed, empty, "study", "report", "augmentation", "--quick",
                  MNIST_LAB_RUNS=str(empty / "runs"))
    assert report.returncode == 0, report.stderr
    assert (empty / "runs" / "reports" / "augmentation-quick" / "report.html").is_file()


def test_a_study_file_by_path_from_anywhere(installed, tmp_path, data_root):
    mine = tmp_path / "elsewhere" / "mine.toml"
    mine.parent.mkdir()
    mine.write_text('name = "mine"\n[base]\nmodel = "softmax"\nepochs = 1\n'
                    '[[blocks]]\nname = "one"\n')
    done = _lab(installed, tmp_path, "study", "run", str(mine), "--quick", "--no-progress",
                MNIST_LAB_DATA=str(data_root), MNIST_LAB_RUNS=str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert "1 complete" in done.stdout
