"""Export speed to MLflow: every run of a results store, logged into a local `mlflow server`.

The store's database is copied first with SQLite's backup API (the source is opened read-only),
so a store that studies are still writing to is only read. The bench starts `mlflow server` on
127.0.0.1 (sqlite backend, local artifacts, one worker, no job runner), exports with what
`mnist-lab runs export` runs (tracking.Tracker, export_runs: reports included, checkpoints not),
exports again to time the idempotent pass, and prints one JSON object: runs, seconds, runs/s.

    python bench/mlflow_export.py --runs-dir /work/studyruns              # the real study runs
    python bench/mlflow_export.py --runs-dir /work/studyruns --copies 2   # each twice: new ids
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mnist_lab.store import Store
from mnist_lab.tracking import Tracker, export_runs

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(runs_dir: Path, into: Path) -> Path:
    """A consistent copy of the store's database, read from the source without writing it."""
    source = sqlite3.connect(f"file:{runs_dir.absolute() / 'runs.db'}?mode=ro", uri=True)
    into.mkdir(parents=True)
    with sqlite3.connect(into / "runs.db") as copy:
        source.backup(copy)
    source.close()
    return into


def start_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on loopback in its own process group, once /health answers."""
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **QUIET),
        start_new_session=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"mlflow server exited: {(root / 'server.log').read_text()[-1000:]}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    sys.exit("mlflow server did not come up in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", required=True, help="the results store to export (read)")
    parser.add_argument("--copies", type=int, default=1,
                        help="export each run this many times, under new ids (default: 1)")
    args = parser.parse_args()
    os.environ.update({k: v for k, v in QUIET.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Store(snapshot(Path(args.runs_dir), root / "store")) as store:
            records = store.runs()
        records = [dataclasses.replace(r, id=f"{r.id}-copy{i}" if i else r.id)
                   for i in range(args.copies) for r in records]
        epochs = sum(len(r.history) for r in records)
        (root / "server").mkdir()
        port = free_port()
        t0 = time.perf_counter()
        server = start_server(root / "server", port)
        started = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            tracker = Tracker(f"http://127.0.0.1:{port}")  # imports mlflow, checks the server
            connect = time.perf_counter() - t0
            t0 = time.perf_counter()
            done = export_runs(tracker, records, Path(args.runs_dir))
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = export_runs(Tracker(tracker.uri), records, Path(args.runs_dir))
            again_s = time.perf_counter() - t0
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    assert done.exported == len(records) and again.already == len(records), (done, again)
    print(json.dumps({"runs": len(records), "epochs": epochs, "reports": done.reports,
                      "seconds": round(seconds, 2), "runs_per_s": round(len(records) / seconds, 1),
                      "again_seconds": round(again_s, 2), "connect_seconds": round(connect, 2),
                      "server_start_seconds": round(started, 1), "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
