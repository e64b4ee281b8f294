"""A study's runs on a Ray cluster: the data and the code travel with the tasks.

The driver loads and checks each dataset once, puts it in Ray's object store, and passes the
reference to every task, so worker nodes need neither the files, nor the environment variable
that names them, nor a network of their own. The package itself travels as a `py_modules`
runtime environment; what it imports (torch, numpy, scikit-learn, ...) must be installed on
every node. A task whose worker process or node dies is retried by Ray; one that still cannot
finish becomes a `failed` record with the reason, and the study goes on.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from .data import Dataset
from .errors import UserError
from .record import RunRecord
from .worker import PackTask, Task, run_task

MAX_RETRIES = 2  # times a run is restarted after its worker process or node died
PACKAGE = str(Path(__file__).resolve().parent)  # shipped to the workers as py_modules
AUTH_HINT = ("the cluster requires token authentication: set RAY_AUTH_MODE=token (the token "
             "is read from RAY_AUTH_TOKEN or ~/.ray/auth_token; copy it from the head node)")


def _ray() -> ModuleType:
    """The ray module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'mnist-lab[ray]'") from None
    return ray


@contextlib.contextmanager
def _output_to(file) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, where Ray's C++ core
    logs a failed connection in some fifty lines) to a file."""
    saved = os.dup(1), os.dup(2)
    for fd in (1, 2):
        os.dup2(file.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _listening(address: str) -> bool:
    """Whether anything accepts connections at HOST:PORT: Ray itself waits 14 minutes."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except (OSError, ValueError):
        return False


def connect(address: str | None) -> None:
    """Join the cluster at address (None: start Ray in this process); one line if it fails."""
    ray = _ray()
    if ray.is_initialized():
        return
    if address is not None and not _listening(address):
        raise UserError(f"cannot connect to the Ray cluster at {address}: nothing listens "
                        "there (is its head started? `ray start --head --port PORT`)")
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
               "runtime_env": {"py_modules": [PACKAGE]}}  # our code travels to the workers
    if address is None:
        options["num_cpus"] = os.cpu_count()
    with tempfile.TemporaryFile("w+") as log:
        try:
            with _output_to(log):
                ray.init(address=address, **options)
        except Exception as e:  # noqa: BLE001 - Ray raises several types; all mean "no cluster"
            log.seek(0)
            raise UserError(_why(address, e, log.read())) from None


def _why(address: str | None, error: BaseException, log: str) -> str:
    """One line: which cluster, and why it could not be joined."""
    text = f"{error} {error.__cause__} {log}"
    if "InvalidAuthToken" in text or isinstance(error, _ray().exceptions.AuthenticationError):
        return f"cannot connect to the Ray cluster at {address}: {AUTH_HINT}"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot connect to the Ray cluster at {address or '(local)'}: {first}"


def _one_line_cluster_errors(ray: ModuleType) -> None:
    """Ray prints each cluster error to the driver's stdout, a dead node's with the last lines
    of its raylet's log (some fifty lines); keep the sentence that says what happened, on
    stderr, so the study's own output stays readable. (Ray has no switch for this: its driver
    prints through `print_to_stdstream`, which is replaced here if it exists.)"""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if worker is None or not hasattr(worker, "print_to_stdstream"):
        return

    def first_sentence(data: dict, ignore_prefix: bool = False) -> None:
        for message in data.get("lines", [])[:1]:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(message)).strip()
            if text:
                first = text.splitlines()[0].split(" Possible reasons")[0]
                print(f"ray: {first[:200]}", file=sys.stderr)

    worker.print_to_stdstream = first_sentence


class RayPool:
    """A pool (pools.Pool) of Ray tasks on the cluster at `address` (None: a local Ray)."""

    def __init__(self, data: dict[str, Dataset], address: str | None,
                 gpus_per_run: float = 0.0):
        self.ray = _ray()
        connect(address)
        _one_line_cluster_errors(self.ray)
        self.refs = {name: self.ray.put(d) for name, d in data.items()}  # once, for every task
        self.remote, self.gpus, self.todo = self.ray.remote(run_task), gpus_per_run, {}

    def submit(self, tag: object, task: Task | PackTask) -> None:
        """Start a run, or a pack, on the cluster."""
        cfg = task[0][0] if isinstance(task[0], list) else task[0]
        options = {"num_cpus": cfg.threads, "num_gpus": self.gpus, "max_retries": MAX_RETRIES}
        ref = self.remote.options(**options).remote(task, self.refs[cfg.dataset])
        self.todo[ref] = (tag, task)

    def next(self) -> tuple[object, RunRecord | list[RunRecord]]:
        """The next task to finish; a run whose worker died too often is a failed record."""
        (ready,), _ = self.ray.wait(list(self.todo), num_returns=1)
        tag, task = self.todo.pop(ready)
        try:
            return tag, self.ray.get(ready)
        except self.ray.exceptions.RayError as e:  # its worker or node died past the retries
            if isinstance(task[0], list):
                cfgs, _, labels = task
                return tag, [RunRecord.failed(c, e, la) for c, la in zip(cfgs, labels, strict=True)]
            return tag, RunRecord.failed(task[0], e, task[2])

    def __len__(self) -> int:
        return len(self.todo)

    def close(self) -> None:
        """Nothing to stop: the cluster outlives the driver."""
