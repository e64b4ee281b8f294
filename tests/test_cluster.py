"""`--executor ray` against a real two-node Ray cluster on loopback (tests/ray_cluster.py).

The cluster lives in a private network and PID namespace, so its traffic cannot leave
127.0.0.1 and its processes die with it; its nodes have no MNIST_LAB_DATA and an empty HOME,
so every run trains on the data the driver shipped. The worker node's raylet is killed mid-run.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_lab.config import RunContext
from mnist_lab.runner import Executor, run_study
from mnist_lab.store import Store
from mnist_lab.study import find_study, load_study

pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent
KILL_STUDY = HERE / "fixtures" / "cluster_study.toml"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="network namespaces need root and unshare")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, data_root) -> tuple[dict, Path]:
    """What tests/ray_cluster.py saw, and the store folder its studies wrote to."""
    runs = tmp_path_factory.mktemp("cluster") / "runs"
    # --kill-child: if this test is stopped (timeout, Ctrl-C), the namespace and cluster die too
    done = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
                           sys.executable, str(HERE / "ray_cluster.py"), str(runs),
                           str(data_root), "augmentation", str(KILL_STUDY)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), runs


@pytest.fixture(scope="module")
def local(tmp_path_factory, data_root) -> Path:
    """The same studies on the local executor, with the same thread count (-j 2: 1 each)."""
    runs = tmp_path_factory.mktemp("local") / "runs"
    for path, quick in ((find_study("augmentation"), True), (KILL_STUDY, False)):
        run_study(load_study(path), Store(runs), RunContext(data_dir=str(data_root)), quick,
                  Executor(jobs=2))
    return runs


def _results(runs: Path, study: str) -> dict[str, tuple]:
    """Each run's numbers by key, its time taken out: what must not depend on the executor."""
    return {r.key: ([{k: v for k, v in e.to_dict().items() if k != "seconds"}
                     for e in r.history], r.classification)
            for r in Store(runs).runs(study=study, status="complete")}


def test_the_cluster_is_on_loopback(cluster):
    assert cluster[0]["node_addresses"] == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize("case, phrase", [
    ("no_token", "requires token authentication: set RAY_AUTH_MODE=token"),
    ("wrong_address", "cannot connect to the Ray cluster at 127.0.0.1:1: nothing listens"),
])
def test_a_bad_connection_is_one_line(cluster, case, phrase, assert_one_line_error):
    code, out, err, _ = cluster[0][case]
    assert_one_line_error(code, err, phrase)
    assert out == "" and not (cluster[1] / "bad").exists()  # no store made


def test_quick_study_on_the_cluster_equals_the_local_one(cluster, local):
    code, out, err, _ = cluster[0]["quick"]
    assert code == 0, err
    assert "2 complete" in out
    ray_runs = _results(cluster[1] / "quick", "augmentation:quick")
    assert len(ray_runs) == 2 and ray_runs == _results(local, "augmentation:quick")


def test_a_killed_node_costs_no_run(cluster, local):
    """Runs on the killed node are retried on the head, or failed with a reason and finished by
    the next `study run`; either way every run ends stored once, as the local executor's."""
    result, runs = cluster
    code, out, err, _ = result["killed"]
    assert code == 0, err
    assert "Raylet is terminated" in err and len(err.splitlines()) < 10  # one line per event
    records = Store(runs / "kill").runs(study="cluster")
    failed = [r for r in records if r.status == "failed"]
    assert all(r.error for r in failed)
    code, out, err, _ = result["again"]
    assert code == 0, err
    records = Store(runs / "kill").runs(study="cluster")
    complete = [r for r in records if r.status == "complete"]
    assert len(complete) == 4 and len({r.key for r in complete}) == 4  # no duplicate
    assert _results(runs / "kill", "cluster") == _results(local, "cluster")
