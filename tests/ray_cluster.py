"""A real two-node Ray cluster on loopback, driven by `mnist-lab study run --executor ray`.

Run by tests/test_cluster.py as PID 1 of a private network and PID namespace (`unshare --net
--pid --fork --mount-proc`, only `lo` up): Ray has nothing but 127.0.0.1 to bind to, no cluster
traffic can leave the machine, and every process the cluster started dies with the namespace,
whatever the outcome. Prints one JSON object of what happened.

    python tests/ray_cluster.py RUNS_DIR DATA_DIR QUICK_STUDY KILL_STUDY

QUICK_STUDY runs in --quick mode on the whole cluster; KILL_STUDY runs in full while the worker
node's raylet is killed mid-run, then once more to finish what failed.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PORT = 6390


def ray(home: Path, *args: str, **env: str) -> str:
    """A `ray` command with a HOME of its own and no MNIST_LAB_* in its environment: a node
    started so knows nothing of the driver's data."""
    home.mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MNIST_LAB", "RAY_"))}
    done = subprocess.run(["ray", *args], env=dict(environ, HOME=str(home), **env),
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        sys.exit(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def ray_start(home: Path, temp: Path, *args: str, **env: str) -> None:
    """`ray start` on loopback with one CPU and a small object store (the default takes
    7.5 GB of /dev/shm per node)."""
    ray(home, "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir",
        str(temp), "--object-store-memory", "300000000", "--disable-usage-stats", *args, **env)


def lab(runs: Path, study: str, data: str, address: str, *flags: str,
        **env: str) -> tuple[int, str, str, float]:
    """The driver, as a user runs it: (exit code, stdout, stderr, seconds)."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mnist_lab.cli", "study", "run", study, *flags,
                           "-j", "2", "--executor", "ray", "--address", address,
                           "--no-progress", "--runs-dir", str(runs), "--data-dir", data],
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=900)
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - t


def _procs() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process in this PID namespace."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(d.name), ppid, cmd))
    return out


def raylet_of(temp: Path) -> int:
    """The PID of the raylet whose node keeps its files under temp."""
    return next(pid for pid, _, cmd in _procs()
                if "raylet/raylet" in cmd and f"{temp}/" in cmd)


def kill_when_busy(raylet: int, timeout: float = 300) -> float:
    """SIGKILL the raylet once a run is training on its node; return when (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if any(ppid == raylet and cmd.startswith("ray::run_task") for _, ppid, cmd in _procs()):
            time.sleep(2)  # well into the run
            os.kill(raylet, signal.SIGKILL)
            return time.perf_counter()
        time.sleep(0.2)
    raise TimeoutError("no run started on the worker node")


def main() -> None:
    runs, data, quick_study, kill_study = Path(sys.argv[1]), *sys.argv[2:5]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    base = Path(tempfile.mkdtemp(prefix="cluster-"))
    head_home, head_temp, node_temp = base / "head", base / "t-head", base / "t-node"
    result: dict = {}
    t = time.perf_counter()
    ray(head_home, "get-auth-token", "--generate")  # as Ray 2.59+ clusters have: token auth
    token = head_home / ".ray" / "auth_token"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    ray_start(head_home, head_temp, "--head", "--port", str(PORT), "--include-dashboard=false",
              RAY_AUTH_MODE="token")
    ray_start(base / "node", node_temp, "--address", f"127.0.0.1:{PORT}", **auth)
    result["cluster_start_s"] = time.perf_counter() - t
    address = f"127.0.0.1:{PORT}"
    # Bad connections first: each must be one line and leave no store behind.
    result["no_token"] = lab(runs / "bad", quick_study, data, address, "--quick")
    result["wrong_address"] = lab(runs / "bad", quick_study, data, "127.0.0.1:1", "--quick",
                                  **auth)
    os.environ.update(auth)  # this process's own driver, to read the nodes
    import ray as ray_api
    ray_api.init(address=address, log_to_driver=False, logging_level="ERROR")
    result["node_addresses"] = sorted(n["NodeManagerAddress"] for n in ray_api.nodes())
    ray_api.shutdown()
    result["quick"] = lab(runs / "quick", quick_study, data, address, "--quick", **auth)
    result["unkilled"] = lab(runs / "unkilled", kill_study, data, address, **auth)  # for timing
    raylet, killed = raylet_of(node_temp), []
    thread = threading.Thread(target=lambda: killed.append(kill_when_busy(raylet)))
    thread.start()
    t = time.perf_counter()
    result["killed"] = lab(runs / "kill", kill_study, data, address, **auth)
    thread.join()
    result["killed_after_s"] = killed[0] - t
    result["again"] = lab(runs / "kill", kill_study, data, address, **auth)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
