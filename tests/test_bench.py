"""The time-to-accuracy benchmark runs end to end in its tiny mode, so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

from mnist_lab.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_time_to_accuracy_tiny(tmp_path, data_root):
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--tiny",
         "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_root)],
        capture_output=True, text=True, timeout=600, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["pipeline"] for r in rows} == {"mnist-lab", "reference/examples", "reference/tuomaso"}
    assert all(r["reached_target"] and r["seconds_to_target"] > 0 for r in rows)
    # Our row is read from the run record `train --json` printed, and that run is stored
    (ours,) = [r for r in rows if r["pipeline"] == "mnist-lab"]
    (record,) = Store(tmp_path / "runs").runs()
    assert ours["model"] == record.config.model == "compact_step3"
    assert ours["test_accuracy"] == record.metric("test_accuracy") >= ours["target"]
    assert ours["seconds_to_target"] == record.timing.seconds_to_target
    assert ours["epochs_run"] == record.metric("epochs_run") == len(record.history)
    assert "| mnist-lab | compact_step3 | 1/1 |" in proc.stdout
    assert "Speed-up over reference/examples" in proc.stdout and "ref. epochs" in proc.stdout


def test_load_test_quick(tmp_path, data_root):
    """The /predict load test runs end to end against a real server, with no failed request."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load_test.py"), "--quick", "--requests", "200",
         "--concurrency", "16", "--data-dir", str(data_root)],
        capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["requests"] == 200 and result["errors"] == 0, result
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_pack_speed_runs(data_root):
    """bench/pack_speed.py end to end on a few hundred images: both sides train, a row each."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pack_speed.py"), "--models", "mlp",
         "compact_step2", "--subset", "500", "--data-dir", str(data_root)],
        capture_output=True, text=True, timeout=600, check=True)
    assert "| mlp | 3 |" in proc.stdout and "does not pack: dropout" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pack_speed.py"), "--models", "conv_1k",
         "compact_step2", "--step"], capture_output=True, text=True, timeout=600, check=True)
    assert "| conv_1k | 3 |" in proc.stdout and "does not pack: dropout" in proc.stdout


def test_startup_bench_and_lean_training_path(data_root):
    """bench/startup.py runs; the training path imports none of the heavy optional modules."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "startup.py"), "--repeats", "1",
         "--data-dir", str(data_root)], capture_output=True, text=True, timeout=600, check=True)
    assert "| decoded cache | 1 |" in proc.stdout
    assert "heavy modules imported by the training path: none" in proc.stdout
