"""Export a checkpoint to ONNX or TorchScript: one self-contained file, raw pixels in, logits out.

The exported graph is `models.Standardised`, the model with the training standardisation
built in: float32 pixels in [0, 1], shape [N, 1, 28, 28] (any N), give logits [N, classes].
Each file is written under a temporary name, checked against PyTorch, then renamed into place,
so a failure at any step leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import UserError
from .inference import Classifier
from .store import find_checkpoint

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT, OUTPUT = "pixels", "logits"
INPUT_CONVENTION = ("pixels: float32 [N, 1, 28, 28], raw values in [0, 1], white on black as in "
                    "the dataset (standardisation is inside the graph); logits: float32 "
                    "[N, classes], argmax is the class")
EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1; 2 keeps the batch dynamic
CHECK_BATCH = 16  # differs from EXAMPLE_BATCH, so the self-check also proves N is free
CHECK_RTOL = 1e-3  # of the largest logit: far above float32 reordering, far below a changed op


def resolve_source(source: str, runs_dir: str | None) -> tuple[str, str]:
    """(checkpoint path, name for the output file) of a checkpoint file or a stored run id."""
    name, checkpoint = find_checkpoint(source, runs_dir)
    return checkpoint, name


def export_model(checkpoint: str, fmt: str, out: str | None, name: str) -> dict:
    """Export a checkpoint, self-check it against PyTorch, write it; return what was done."""
    _require(fmt)
    path = _output_path(out, name + SUFFIXES[fmt])
    clf = Classifier(checkpoint)
    meta = {"mnist_lab.model": clf.cfg.model, "mnist_lab.dataset": clf.cfg.dataset,
            "mnist_lab.config": json.dumps(clf.cfg.to_dict()), "mnist_lab.source": name,
            "mnist_lab.input": INPUT_CONVENTION, "mnist_lab.version": __version__}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _quiet():
            net = clf.net.eval()  # the wrapper too, not only the model: the exporters check
            (_write_onnx if fmt == "onnx" else _write_torchscript)(net, tmp, meta)
            diff, scale = _self_check(fmt, tmp, net)
        if not diff <= CHECK_RTOL * max(1.0, scale):  # `not <=` also catches NaN
            raise UserError(f"the exported model differs from PyTorch by {diff:.2e} "
                            f"(largest logit {scale:.2f}); nothing written")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "format": fmt, "model": clf.cfg.model, "dataset": clf.cfg.dataset,
            "checkpoint": checkpoint, "max_abs_diff": diff, "check_images": CHECK_BATCH}


def _require(fmt: str) -> None:
    """Fail before any work when the optional ONNX packages are missing."""
    if fmt != "onnx":
        return
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401  (the self-check runs the exported file)
        import onnxscript  # noqa: F401  (torch's dynamo exporter builds the graph with it)
    except ImportError as e:
        raise UserError(f"ONNX export needs the {e.name or 'onnx'} package: "
                        "pip install 'mnist-lab[export]'") from None


def _output_path(out: str | None, default_name: str) -> Path:
    """--out, --out DIR/<default name>, or ./<default name>; its folder must be writable."""
    path = Path(out) if out else Path(default_name)
    if path.is_dir():
        path = path / default_name
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {path}: folder {folder} is not writable")
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecations, 'torchvision is not installed') on stderr."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        onnx_log.setLevel(level)


def _write_onnx(net: torch.nn.Module, path: Path, meta: dict[str, str]) -> None:
    """torch.export-based ONNX with a dynamic batch, metadata, verified by onnx.checker."""
    import onnx

    # dynamo=True (torch.export): the default since torch 2.9. The TorchScript-based exporter
    # (dynamo=False) also exports every registry model exactly, but in 2.13 it warns that it
    # "will be removed"; this one is the path torch maintains.
    program = torch.onnx.export(
        net, (torch.rand(EXAMPLE_BATCH, 1, 28, 28),), dynamo=True, verbose=False,
        input_names=[INPUT], output_names=[OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _write_torchscript(net: torch.nn.Module, path: Path, meta: dict[str, str]) -> None:
    """Traced TorchScript; the metadata goes in as an extra file, mnist_lab.json."""
    # Tracing, not scripting: no registry model has data-dependent control flow, so the trace is
    # the whole model, and it does not require every forward() to be TorchScript-typed.
    traced = torch.jit.trace(net, torch.rand(EXAMPLE_BATCH, 1, 28, 28))
    # Serialised in memory, written by Python: torch.jit.save onto a full disk aborts the whole
    # process (a C++ error thrown in a destructor) instead of raising an OSError.
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"mnist_lab.json": json.dumps(meta)})
    path.write_bytes(buffer.getvalue())


@torch.inference_mode()
def _self_check(fmt: str, path: Path, net: torch.nn.Module) -> tuple[float, float]:
    """(max |exported - PyTorch|, max |PyTorch logit|) on a fixed batch of random pixels."""
    x = torch.rand(CHECK_BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = net(x).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    else:
        got = torch.jit.load(str(path))(x).numpy()
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())
