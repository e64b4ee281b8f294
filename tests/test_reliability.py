"""Crash safety and hostile input around the results store and checkpoints.

Untrusted checkpoints must not run code; a killed run, two writers at once, a read-only or
full results folder must all leave the store consistent. The file-system cases mount a real
tmpfs (root only, as in CI), so "disk full" is a real ENOSPC, not a mock.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.store import Store

QUICK = ("--model", "softmax", "--epochs", "1", "--subset", "1000", "--test-subset", "500",
         "--no-progress")


def integrity(runs: Path) -> tuple[str, int]:
    """SQLite's own integrity check and the number of stored runs."""
    db = sqlite3.connect(runs / "runs.db")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0], \
            db.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        db.close()


def quick_train(cli, data_root: Path, runs: Path) -> tuple[int, str, str]:
    return cli("train", *QUICK, "--data-dir", data_root, "--runs-dir", runs)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


# ---------------------------------------------------------------- untrusted checkpoints

class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickled_checkpoint_cannot_run_code(writer, tmp_path, data_root, cli,
                                            assert_one_line_error):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    if writer == "pickle":
        evil.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
        pickle.loads(evil.read_bytes())
    else:
        torch.save({"state_dict": Payload(marker)}, evil)
        torch.load(evil, weights_only=False)  # what an unsafe loader would do
    assert marker.exists(), "the payload must be live for this test to mean anything"
    marker.unlink()

    digit = tmp_path / "digit.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(digit)
    for argv in (["evaluate", evil, "--data-dir", data_root],
                 ["predict", "--checkpoint", evil, digit]):
        code, _, err = cli(*argv)
        assert_one_line_error(code, err, "not an mnist-lab checkpoint")
        assert not marker.exists()


def test_checkpoint_config_cannot_name_arbitrary_code(tmp_path, data_root, cli,
                                                      assert_one_line_error):
    """The config in a safetensors header only ever selects a registered model."""
    from safetensors.torch import save_file

    evil = tmp_path / "evil.safetensors"
    save_file({"w": torch.zeros(1)}, str(evil),
              metadata={"mnist_lab_config": json.dumps({"model": "os.system"})})
    code, _, err = cli("evaluate", evil, "--data-dir", data_root)
    assert_one_line_error(code, err, "os.system")


# ---------------------------------------------------------------- crashes and concurrency

def test_killed_training_leaves_the_store_consistent(tmp_path, data_root, script, cli):
    runs = tmp_path / "runs"
    assert quick_train(cli, data_root, runs)[0] == 0
    cmd = [script, "train", "--model", "mlp", "--epochs", "50", "--data-dir", str(data_root),
           "--runs-dir", str(runs), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stderr.read(1)  # the progress bar appears: training has started
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert integrity(runs) == ("ok", 1)
    assert len(list((runs / "checkpoints").iterdir())) == 1  # no stray or partial file
    assert quick_train(cli, data_root, runs)[0] == 0
    assert integrity(runs) == ("ok", 2)


WRITER = """
import sys, time, uuid
from mnist_lab.config import TrainConfig
from mnist_lab.metrics import Epoch
from mnist_lab.record import RunRecord
from mnist_lab.store import Store
store, start = Store(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # both processes begin together
for i in range(40):
    cfg = TrainConfig(model="softmax", seed=i, lr=0.1 if sys.argv[3] == "a" else 0.2)
    store.add(RunRecord(id=uuid.uuid4().hex, key=cfg.key(), status="complete", config=cfg,
                        created="2026-01-01T00:00:00", history=[Epoch(1, test_accuracy=0.9)]))
"""


def test_two_processes_write_the_same_store_at_once(tmp_path, data_root, script):
    runs = tmp_path / "runs"
    Store(runs)
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(runs), str(start), name])
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert integrity(runs) == ("ok", 80)
    assert len(Store(runs).runs()) == len({r.key for r in Store(runs).runs()}) == 80

    cmd = [script, "train", *QUICK, "--data-dir", str(data_root), "--runs-dir", str(runs),
           "--threads", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert integrity(runs) == ("ok", 82)


# ---------------------------------------------------------------- read-only and full disks

def test_read_only_results_folder_fails_before_training(tmpfs, data_root, cli,
                                                        assert_one_line_error):
    runs = tmpfs("size=1024k")
    assert quick_train(cli, data_root, runs)[0] == 0
    remount(runs, "ro")
    started = time.perf_counter()
    code, _, err = quick_train(cli, data_root, runs)
    assert_one_line_error(code, err, "not writable: [Errno 30] Read-only file system")
    assert "disk full" not in err  # the tmpfs is nearly empty, but that is not the cause
    assert time.perf_counter() - started < 5  # refused up front, not after training
    code, _, err = cli("study", "run", "augmentation", "--quick", "--runs-dir", runs,
                       "--data-dir", data_root)
    assert_one_line_error(code, err, "not writable")
    remount(runs, "rw")
    assert integrity(runs) == ("ok", 1)


# Measured on tmpfs: with 8 KiB free, opening the store fails; 48, the checkpoint; 72, the record
# (after the checkpoint was written, which must then be removed again).
@pytest.mark.parametrize("free_kb", [8, 48, 72], ids=["store", "checkpoint", "record"])
def test_disk_full_while_training(free_kb, tmpfs, data_root, assert_one_line_error, cli):
    """The disk fills up during training: whatever write fails, the store stays as it was."""
    runs = tmpfs("size=2048k")
    assert quick_train(cli, data_root, runs)[0] == 0
    filler = runs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk, then give back `free_kb`
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - free_kb * 1024)
    code, _, err = quick_train(cli, data_root, runs)
    assert_one_line_error(code, err, "disk full")
    filler.unlink()
    assert integrity(runs) == ("ok", 1)
    assert [p.name for p in (runs / "checkpoints").iterdir()] == \
        [Path(Store(runs).runs()[0].checkpoint).name]
    assert quick_train(cli, data_root, runs)[0] == 0  # room again: it just works
    assert integrity(runs) == ("ok", 2)
