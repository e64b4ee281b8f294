"""MLflow: stored runs exported as MLflow runs (local stores and a real tracking server), each
once, and runs logged live by `train --mlflow` and `study run --mlflow`.

Skipped when mlflow is missing (`pip install -e '.[mlflow]'`), unless MNIST_LAB_REQUIRE_MLFLOW
is set; the missing-extra hint and the no-import checks run either way.
"""

import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.metrics import Epoch
from mnist_lab.record import RunRecord, StudyLabel, SuiteResult, new_run_id
from mnist_lab.store import Store
from mnist_lab.tracking import HINT, RUN_ID_TAG, Tracker
from mnist_lab.worker import execute

MISSING = (None if importlib.util.find_spec("mlflow") else
           "mlflow is not installed (pip install -e '.[mlflow]')")
needs_mlflow = pytest.mark.skipif(bool(MISSING) and not os.environ.get("MNIST_LAB_REQUIRE_MLFLOW"),
                                  reason=str(MISSING))
SERVER_START_S = 60  # a busy 2-core machine starts it in ~15 s
TINY = ["--epochs", "1", "--subset", "1000", "--test-subset", "500", "--batch-size", "64",
        "--rotate", "0", "--translate", "0", "--no-progress"]
# MLflow's sqlite store trips a SQLAlchemy deprecation of its own making
pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}  # no usage data sent


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    """No telemetry; and a sqlite store's artifacts (./mlruns) land in tmp_path."""
    for k, v in QUIET.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def client_class():
    """mlflow's MlflowClient (a failure when mlflow is missing under MNIST_LAB_REQUIRE_MLFLOW)."""
    if MISSING:
        pytest.fail(f"{MISSING}, and MNIST_LAB_REQUIRE_MLFLOW is set", pytrace=False)
    from mlflow import MlflowClient
    return MlflowClient


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root) -> SimpleNamespace:
    """A store of four runs: a single one and a study ("tiny") run, both trained (1,000
    images, 1 epoch, checkpoints), a 3-epoch one with calibration results and a failed one
    (made up: long histories need no training); and the study's report folder."""
    root = tmp_path_factory.mktemp("mlflow_runs")
    cfg = TrainConfig(epochs=1, batch_size=64, rotate=0, translate=0, subset=1000,
                      test_subset=500)
    ctx = RunContext(data_dir=str(data_root))
    with Store(root) as store:
        single = store.add_run(*execute(cfg, ctx))
        trained = store.add_run(*execute(dataclasses.replace(cfg, seed=1), ctx,
                                         StudyLabel("tiny", "main", "a", 1)))
        history = [Epoch(i, train_loss=1 / i, train_accuracy=0.8 + i / 100, test_loss=0.5 / i,
                         test_accuracy=0.85 + i / 100, lr=0.1 / i, seconds=0.5)
                   for i in (1, 2, 3)]
        long = dataclasses.replace(trained, id=new_run_id(), key="k-long", history=history,
                                   label=StudyLabel("tiny", "main", "b", 0), checkpoint=None)
        store.add(long)
        store.add_suite(long.id, SuiteResult("calibration", {}, {"ece": 0.05, "nll": 0.3}, {}))
        store.add(RunRecord.failed(dataclasses.replace(cfg, lr=2.0), ValueError("boom"),
                                   StudyLabel("tiny", "main", "c", 0)))
        records = {r.id: r for r in store.runs()}
    report = root / "reports" / "tiny"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# tiny\n")
    (report / "report.html").write_text("<h1>tiny</h1>\n")
    Image.new("L", (8, 8)).save(report / "plot01.png")
    return SimpleNamespace(root=root, records=records, single=single)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, direct
    try:
        with opener.open(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory, client_class) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, local artifacts, one worker, no job
    runner) in its own process group, killed at teardown; its URL."""
    root = tmp_path_factory.mktemp("mlflow_server")
    url = f"http://127.0.0.1:{(port := _free_port())}"
    env = dict(os.environ, **QUIET, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with (root / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"mlflow server not up in {SERVER_START_S} s"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _exported(client, experiment: str) -> dict:
    """Our run id -> the MLflow run, checking there is one MLflow run per record."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`{RUN_ID_TAG}` LIKE '%'")
    ids = [r.data.tags[RUN_ID_TAG] for r in runs]
    assert len(ids) == len(set(ids)), "a record exported twice"
    return dict(zip(ids, runs, strict=True))


def _assert_same(client, run, record: RunRecord) -> None:
    """The MLflow run holds the record: params, metric histories with their steps, tags."""
    for k, v in record.config.to_dict().items():
        assert run.data.params[k] == (json.dumps(v, sort_keys=True) if isinstance(v, dict)
                                      else str(v)), k
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
        want = [(e.epoch, getattr(e, name)) for e in record.history
                if getattr(e, name) is not None]
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(got) == want, name
    for name, value in record.summary().items():
        if value is not None:
            assert run.data.metrics[name] == pytest.approx(value), name
    tags = run.data.tags
    assert tags["mnist_lab.status"] == record.status and tags["mnist_lab.key"] == record.key
    assert tags["mnist_lab.model"] == record.model and tags["mnist_lab.dataset"] == "mnist"
    if record.label:
        assert tags["mnist_lab.study"] == record.label.study
        assert (tags["mnist_lab.variant"], tags["mnist_lab.seed"]) == (record.label.variant,
                                                                      str(record.label.seed))
    assert run.info.status == ("FAILED" if record.status == "failed" else "FINISHED")


def _check_export(client, runs: SimpleNamespace) -> None:
    """Every record once in its experiment, as stored; suite metrics too."""
    study, single = _exported(client, "tiny"), _exported(client, "mnist-lab")[runs.single.id]
    assert set(study) == set(runs.records) - {runs.single.id}
    _assert_same(client, single, runs.single)
    for run_id, run in study.items():
        _assert_same(client, run, runs.records[run_id])
    (long,) = (run for run in study.values() if run.data.tags["mnist_lab.variant"] == "b")
    assert [m.step for m in client.get_metric_history(long.info.run_id, "test_accuracy")] == [
        1, 2, 3]
    assert long.data.metrics["ece"] == 0.05 and long.data.metrics["nll"] == 0.3


# ---------------------------------------------------------------- export

@needs_mlflow
@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_export_to_a_local_store_twice_keeps_one_run_each(kind, runs, cli, client_class,
                                                          tmp_path, monkeypatch):
    if kind == "file":  # MLflow 3 keeps file stores only for those who opt in
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"sqlite:///{tmp_path}/mlflow.db" if kind == "sqlite" else f"file://{tmp_path}/mlruns"
    code, out, err = cli("runs", "export", "--mlflow", uri, "--runs-dir", runs.root)
    assert code == 0, err
    assert out.strip() == f"4 exported, 0 already there, to MLflow at {uri}; report of tiny"
    code, out, _ = cli("runs", "export", "--mlflow", uri, "--runs-dir", runs.root, "--json")
    assert code == 0
    assert json.loads(out) == {"mlflow": uri, "exported": 0, "already_there": 4,
                               "reports": ["tiny"]}
    _check_export(client_class(tracking_uri=uri), runs)


@needs_mlflow
def test_export_to_a_tracking_server(server, runs, cli, client_class):
    """A real server: the records, the checkpoints, the report once; again: nothing new."""
    args = ("runs", "export", "--mlflow", server, "--runs-dir", runs.root, "--checkpoints")
    assert cli(*args)[:2] == (0, f"4 exported, 0 already there, to MLflow at {server}; "
                                 "report of tiny\n")
    assert cli(*args)[1].startswith("0 exported, 4 already there")
    client = client_class(tracking_uri=server)
    _check_export(client, runs)
    single = _exported(client, "mnist-lab")[runs.single.id]
    assert [a.path for a in client.list_artifacts(single.info.run_id, "checkpoint")] == [
        f"checkpoint/{runs.single.id}.safetensors"]
    tiny = client.get_experiment_by_name("tiny").experiment_id
    (report,) = client.search_runs([tiny], "tags.`mnist_lab.report` = 'tiny'")
    assert {a.path for a in client.list_artifacts(report.info.run_id, "report")} == {
        "report/report.md", "report/report.html", "report/plot01.png"}


@needs_mlflow
def test_export_a_study_or_named_runs_into_an_experiment(runs, cli, client_class, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    one = next(r for r in runs.records.values() if r.status == "failed")
    # The id less its last character: still a prefix, and never shared by two runs made in
    # the same second (id[:17] was, one time in sixteen).
    code, out, _ = cli("runs", "export", one.id[:-1], "--mlflow", uri, "--runs-dir", runs.root,
                       "--experiment", "mine")
    assert code == 0 and out.startswith("1 exported, 0 already there")
    assert cli("runs", "export", "--study", "tiny", "--mlflow", uri, "--runs-dir", runs.root,
               "--experiment", "mine")[1].startswith("2 exported, 1 already there")
    client = client_class(tracking_uri=uri)
    assert len(_exported(client, "mine")) == 3 and client.get_experiment_by_name("tiny") is None


@needs_mlflow
def test_an_export_cut_off_is_replaced(runs, client_class, tmp_path):
    """A run MLflow holds unfinished (the export died part-way) is logged again, whole."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = client_class(tracking_uri=uri)
    cut = client.create_run(client.create_experiment("mnist-lab"),
                            tags={RUN_ID_TAG: runs.single.id})
    assert Tracker(uri).export(runs.single)
    assert client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"
    _assert_same(client, _exported(client, "mnist-lab")[runs.single.id], runs.single)


# ---------------------------------------------------------------- live logging

@needs_mlflow
def test_train_logs_live(server, cli, client_class, tmp_path):
    code, out, err = cli("train", *TINY, "--runs-dir", tmp_path / "runs", "--mlflow", server,
                         "--json")
    assert code == 0, err
    record = RunRecord.from_dict(json.loads(out))  # MLflow printed nothing on stdout
    run = _exported(client_class(tracking_uri=server), "mnist-lab")[record.id]
    _assert_same(client_class(tracking_uri=server), run, record)


@needs_mlflow
def test_study_run_logs_each_run_live(cli, client_class, tmp_path):
    (tmp_path / "live.toml").write_text(
        'name = "live"\nseeds = [0]\n[base]\nmodel = "softmax"\nepochs = 1\nsubset = 500\n'
        'test_subset = 500\nval_size = 500\nrotate = 0.0\ntranslate = 0.0\n[[blocks]]\n'
        'name = "lr"\ngrid = { lr = [0.01, 0.1] }\n[[blocks]]\nname = "search"\n'
        '[blocks.search]\nn_trials = 2\npruner = "none"\n'
        'space = { lr = { low = 0.01, high = 0.5, log = true } }\n')
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, _, err = cli("study", "run", "live.toml", "--no-progress", "--runs-dir",
                       tmp_path / "runs", "--mlflow", uri)
    assert code == 0, err
    stored = Store(tmp_path / "runs").runs(study="live")
    logged = _exported(client_class(tracking_uri=uri), "live")
    assert len(stored) == 4 and set(logged) == {r.id for r in stored}  # the trials too


@needs_mlflow
def test_a_tracker_failing_after_the_run_is_stored_warns_and_keeps_it(cli, client_class,
                                                                      tmp_path, monkeypatch):
    uri, export = f"sqlite:///{tmp_path}/mlflow.db", Tracker.export

    def refuse(self, record, *args, **kw):
        raise ConnectionError("[Errno 111] Connection refused")
    monkeypatch.setattr(Tracker, "export", refuse)
    code, out, err = cli("train", *TINY, "--runs-dir", tmp_path / "runs", "--mlflow", uri)
    assert code == 0 and out.startswith("run ")
    (record,) = Store(tmp_path / "runs").runs()
    (line,) = err.strip().splitlines()
    assert f"run {record.id} is stored but not logged to MLflow" in line
    assert "Connection refused" in line and f"runs export {record.id} --mlflow {uri}`" in line
    monkeypatch.setattr(Tracker, "export", export)  # back: the export it names catches up
    assert cli("runs", "export", record.id, "--mlflow", uri, "--runs-dir",
               tmp_path / "runs")[0] == 0
    assert set(_exported(client_class(tracking_uri=uri), "mnist-lab")) == {record.id}


# ---------------------------------------------------------------- bad input, one line each

@needs_mlflow
@pytest.mark.parametrize("uri, phrase", [
    ("http://127.0.0.1:{port}", "Connection refused"),
    ("nonsense://x", "not a tracking URI MLflow takes"),
    ("file://{tmp}/mlruns", "MLFLOW_ALLOW_FILE_STORE=true"),
], ids=["unreachable", "scheme", "file-store"])
def test_a_bad_tracker_is_one_line_and_nothing_is_trained(uri, phrase, cli, runs, tmp_path,
                                                          assert_one_line_error,
                                                          assert_nothing_stored, client_class):
    uri = uri.format(port=_free_port(), tmp=tmp_path)
    code, _, err = cli("train", *TINY, "--runs-dir", tmp_path / "runs", "--mlflow", uri)
    assert_one_line_error(code, err, f"error: MLflow at {uri}: ")
    assert phrase in err
    assert_nothing_stored(tmp_path / "runs")
    code, _, err = cli("runs", "export", "--mlflow", uri, "--runs-dir", runs.root)
    assert_one_line_error(code, err, f"error: MLflow at {uri}: ")
    assert phrase in err


@pytest.mark.parametrize("args, phrase", [
    (("runs", "export", "--runs-dir", "{runs}"), "runs export needs --mlflow URI"),
    (("runs", "export", "x", "--study", "tiny", "--mlflow", "u", "--runs-dir", "{runs}"),
     "--study NAME or run ids, not both"),
    (("runs", "export", "--study", "nope", "--mlflow", "u", "--runs-dir", "{runs}"),
     "no stored runs of study nope"),
    (("runs", "show", "a", "b", "--runs-dir", "{runs}"), "needs a run id, just one"),
    (("study", "report", "compact-cnn", "--mlflow", "u"), "--mlflow goes with `study run`"),
], ids=["no-uri", "study-and-ids", "no-runs", "show-two", "study-report"])
def test_export_bad_input(args, phrase, cli, runs, assert_one_line_error):
    code, _, err = cli(*(str(a).format(runs=runs.root) for a in args))
    assert_one_line_error(code, err, phrase)


@pytest.mark.parametrize("command", ["train", "export"])
def test_missing_mlflow_gives_the_install_hint(command, cli, runs, tmp_path, monkeypatch,
                                               assert_one_line_error, assert_nothing_stored):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if not installed
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = (("train", *TINY, "--runs-dir", tmp_path / "runs") if command == "train" else
            ("runs", "export", "--runs-dir", runs.root))
    code, _, err = cli(*args, "--mlflow", uri)
    assert_one_line_error(code, err, HINT)
    assert_nothing_stored(tmp_path / "runs")
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_is_imported_only_when_asked_for(tmp_path):
    code = ("import sys\nfrom mnist_lab import cli, commands, study_commands, tracking, "
            "tracking_command\ncli.main(['runs', '--runs-dir', sys.argv[1]])\n"
            "sys.exit('mlflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_extra_is_declared():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'mlflow = ["mlflow>=3.0"]' in text
