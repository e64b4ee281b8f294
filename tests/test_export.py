"""`mnist-lab export`: ONNX and TorchScript files that compute what PyTorch computes.

Every torch model of the registry, untrained, on random pixels; one trained checkpoint, exported
through the CLI, on 1,000 real MNIST test images; and every bad input (exit 2, one line on
stderr, nothing written, not even a temporary file).

Tolerance: 1e-4 absolute on logits, scaled down with the logits when they are smaller than 1
(untrained compact CNNs give logits of ~0.01). Exported and PyTorch graphs do the same float32
arithmetic in a different order (onnxruntime's own convolution and matmul kernels): measured, at
most 5e-6 on trained logits up to 18, and 3e-7 to 1e-6 of the largest logit untrained;
TorchScript is bit-identical. A wrong operator, a missing standardisation or a batch norm in
training mode moves logits by a percent or more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnist_lab import export
from mnist_lab.config import TrainConfig
from mnist_lab.inference import Classifier
from mnist_lab.metrics import Epoch
from mnist_lab.models import create_model, list_models, model_entry
from mnist_lab.record import RunRecord
from mnist_lab.store import Store, save_checkpoint

ATOL = 1e-4
# TorchScript is deprecated in torch 2.13, yet it is what libtorch (C++) loads: still tested
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
TORCH_MODELS = [name for name in list_models() if model_entry(name).kind == "torch"]
FORMATS = ("onnx", "torchscript")


# ---------------------------------------------------------------- helpers

def run_exported(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an exported file on float32 pixels [N, 1, 28, 28], without mnist-lab."""
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()


def assert_logits_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Within ATOL, or ATOL of the largest logit when all are below 1."""
    atol = ATOL * min(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@torch.inference_mode()
def pytorch_logits(checkpoint: str | Path, x: np.ndarray) -> np.ndarray:
    """What the checkpoint computes in PyTorch: the same path `predict` takes."""
    return Classifier(checkpoint).net(torch.from_numpy(x)).numpy()


def untrained_checkpoint(folder: Path, name: str) -> Path:
    """A checkpoint of a freshly initialised registry model (seeded), as `train` writes it."""
    torch.manual_seed(0)
    path = folder / f"{name}.safetensors"
    save_checkpoint(path, create_model(name), TrainConfig(model=name))
    return path


# ---------------------------------------------------------------- every registry model

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_untrained_model_matches_pytorch(tmp_path, name, fmt):
    checkpoint = untrained_checkpoint(tmp_path, name)
    result = export.export_model(str(checkpoint), fmt, str(tmp_path), name)
    path = Path(result["path"])
    assert path == tmp_path / f"{name}{export.SUFFIXES[fmt]}"
    assert result["max_abs_diff"] <= ATOL
    rng = np.random.default_rng(0)
    for n in (1, 32):  # the traced/exported batch was 2: the batch dimension must be free
        x = rng.random((n, 1, 28, 28), dtype=np.float32)
        got, expected = run_exported(path, x), pytorch_logits(checkpoint, x)
        assert got.shape == (n, 10)
        assert_logits_close(got, expected)


# ---------------------------------------------------------------- a trained model, real images

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root, train_json):
    """A real compact_step3 run: 1 epoch on 10,000 images, no augmentation (~97%, ~5 s)."""
    runs = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_LAB_OFFLINE", "1")
        mp.setenv("XDG_CACHE_HOME", str(runs / "cache"))
        record = train_json("--subset", 10000, "--batch-size", 32, "--rotate", 0,
                            "--translate", 0, "--test-subset", 1000, "--threads", 1,
                            "--data-dir", data_root, "--runs-dir", runs)
    return SimpleNamespace(runs=runs, id=record["id"], checkpoint=record["checkpoint"])


@pytest.fixture(scope="module")
def test_images(mnist) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 MNIST test images as raw float32 pixels in [0, 1], and their labels."""
    x = mnist.test.images[:1000].float().div(255).unsqueeze(1).numpy()
    return x, mnist.test.labels[:1000].numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_trained_export_matches_pytorch_on_real_images(tmp_path, trained, test_images, fmt, cli):
    code, out, err = cli("export", trained.id[:-2], "--format", fmt,
                         "--out", tmp_path, "--runs-dir", trained.runs)
    assert code == 0, err
    path = tmp_path / f"{trained.id}{export.SUFFIXES[fmt]}"
    assert out.splitlines()[0] == f"exported compact_step3 ({fmt}): {path}"
    assert "max |difference| from PyTorch on 16 check images" in out
    x, labels = test_images
    got, expected = run_exported(path, x), pytorch_logits(trained.checkpoint, x)
    assert_logits_close(got, expected)
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    accuracy = (got.argmax(1) == labels).mean()
    assert accuracy == (expected.argmax(1) == labels).mean()
    assert accuracy > 0.9  # really trained: the comparison is not between two random models


def test_onnx_metadata_and_signature(tmp_path, trained, cli):
    code, out, _ = cli("export", trained.id, "--json", "--out", tmp_path / "m.onnx",
                       "--runs-dir", trained.runs)
    assert code == 0
    assert json.loads(out)["path"] == str(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mnist_lab.model"] == "compact_step3"
    assert meta["mnist_lab.dataset"] == "mnist"
    assert meta["mnist_lab.source"] == trained.id
    assert "[0, 1]" in meta["mnist_lab.input"]
    assert TrainConfig.from_dict(json.loads(meta["mnist_lab.config"])).subset == 10000
    (pixels,), (logits,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in pixels.type.tensor_type.shape.dim]
    assert (pixels.name, logits.name) == ("pixels", "logits")
    assert isinstance(dims[0], str) and dims[1:] == [1, 28, 28]


def test_torchscript_metadata(tmp_path, trained, cli):
    code, _, _ = cli("export", trained.checkpoint, "--format", "torchscript",
                     "--out", tmp_path / "m.pt")
    assert code == 0
    files = {"mnist_lab.json": ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    assert json.loads(files["mnist_lab.json"])["mnist_lab.model"] == "compact_step3"


def test_default_output_in_current_folder(tmp_path, monkeypatch, trained, cli):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("export", trained.checkpoint, "--format", "torchscript")
    assert code == 0, err
    code, _, err = cli("export", trained.id[:-2], "--runs-dir", trained.runs)
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {Path(trained.checkpoint).stem + ".pt", trained.id + ".onnx"}


def test_console_script_is_quiet(tmp_path, script):
    """No exporter chatter (deprecations, missing torchvision) in a real process's stderr."""
    checkpoint = untrained_checkpoint(tmp_path, "softmax")
    result = subprocess.run([script, "export", str(checkpoint), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 2


# ---------------------------------------------------------------- bad input

@pytest.fixture
def store(tmp_path) -> Path:
    """A store with a scikit-learn run and a diverged torch run: neither has a checkpoint."""
    runs = tmp_path / "runs"
    logreg, diverged = TrainConfig(model="logreg"), TrainConfig(model="compact_step3", lr=1e3)
    db = Store(runs)
    db.add(RunRecord(id="20260101-000000-aaaaaa", key=logreg.key(), status="complete",
                     config=logreg, created="2026-01-01T00:00:00",
                     history=[Epoch(1, test_accuracy=0.92)]))
    db.add(RunRecord(id="20260101-000000-bbbbbb", key=diverged.key(), status="diverged",
                     config=diverged, created="2026-01-01T00:00:00"))
    return runs


@pytest.fixture
def assert_export_fails(cli, assert_one_line_error):
    """assert_export_fails(out_dir, phrase, *args): one-line error, exit 2, and nothing at all
    written into out_dir."""
    def check(out_dir: Path, phrase: str, *args) -> None:
        code, out, err = cli("export", *args)
        assert_one_line_error(code, err, phrase)
        assert out == ""
        assert not out_dir.exists() or list(out_dir.iterdir()) == []
    return check


@pytest.mark.parametrize("args, phrase", [
    pytest.param(("nosuchid",), "no run matches 'nosuchid'", id="unknown-run"),
    pytest.param(("2026",), "more than one run matches", id="ambiguous-prefix"),
    pytest.param(("20260101-000000-a",), "scikit-learn model (logreg); only torch models",
                 id="sklearn-run"),
    pytest.param(("20260101-000000-b",), "has no checkpoint (status diverged)", id="diverged"),
    pytest.param(("{tmp}/missing.safetensors",), "no such checkpoint", id="missing-checkpoint"),
    pytest.param(("{tmp}/junk.safetensors",), "not an mnist-lab checkpoint", id="junk"),
    pytest.param(("{tmp}/softmax.safetensors", "--out", "{tmp}/nope/m.onnx"), "no folder",
                 id="missing-folder"),
    pytest.param(("{tmp}/softmax.safetensors", "--format", "tflite"), "invalid choice: 'tflite'",
                 id="unknown-format"),
])
def test_bad_input(tmp_path, store, args, phrase, assert_export_fails):
    (tmp_path / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    untrained_checkpoint(tmp_path, "softmax")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in argv:
        argv += ["--out", out_dir]
    assert_export_fails(out_dir, phrase, *argv, "--runs-dir", store)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.pt"))


def test_read_only_folder(tmp_path, tmpfs, assert_export_fails):
    checkpoint = untrained_checkpoint(tmp_path, "softmax")
    folder = tmpfs("size=64k,ro")
    assert_export_fails(folder, "is not writable", checkpoint, "--out", folder)


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_leaves_nothing(tmp_path, tmpfs, fmt, assert_export_fails):
    checkpoint = untrained_checkpoint(tmp_path, "softmax")  # ~32 KB in either format
    folder = tmpfs("size=16k")
    assert_export_fails(folder, "No space left on device", checkpoint,
                        "--format", fmt, "--out", folder)


@pytest.mark.parametrize("package", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_onnx_package(tmp_path, monkeypatch, package, assert_export_fails):
    checkpoint = untrained_checkpoint(tmp_path, "softmax")
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    assert_export_fails(tmp_path / "out", "pip install 'mnist-lab[export]'", checkpoint,
                        "--out", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_self_check_failure_writes_nothing(tmp_path, monkeypatch, assert_export_fails):
    checkpoint = untrained_checkpoint(tmp_path, "softmax")
    monkeypatch.setattr(export, "_self_check", lambda *a: (0.5, 3.0))  # a wrong export
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_export_fails(out_dir, "differs from PyTorch by 5.00e-01", checkpoint,
                        "--format", "torchscript", "--out", out_dir)
