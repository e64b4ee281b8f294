"""The typed run record: one vocabulary, JSON round trip, and stores written before it."""

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.data import load
from mnist_lab.errors import UserError
from mnist_lab.metrics import METRICS, Epoch, Timing
from mnist_lab.record import SCHEMA, RunRecord, StudyLabel, upgrade
from mnist_lab.report import write_report
from mnist_lab.store import Store
from mnist_lab.study import find_study, load_study
from mnist_lab.worker import execute

# Records as mnist-lab 0.1.0 (schema 0, untyped dicts) stored them: torch, classical,
# diverged, failed, study and single runs, one with a validation split.
LEGACY = json.loads((Path(__file__).parent / "fixtures" / "store_v0.json").read_text())["records"]


@pytest.fixture
def legacy_store(tmp_path) -> Store:
    """A store whose rows were written by the release before the typed record."""
    store = Store(tmp_path / "runs")
    with store.db:
        for r in LEGACY:
            store.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (r["id"], r["key"], r.get("study"), r["status"], r["model"],
                              r["dataset"], r["test_accuracy"], r["created"], json.dumps(r)))
    return store


def test_legacy_records_load_with_the_same_figures(legacy_store):
    loaded = {r.id: r for r in legacy_store.runs()}
    assert len(loaded) == len(LEGACY)
    for old in LEGACY:
        new = loaded[old["id"]]
        assert (new.status, new.model, new.dataset, new.study) == (
            old["status"], old["model"], old["dataset"], old.get("study"))
        for name in ("test_accuracy", "train_accuracy", "val_accuracy", "best_test_accuracy",
                     "best_train_accuracy", "wall_seconds", "params", "test_loss"):
            assert new.metric(name) == old.get(name), name
        assert [e.to_dict() for e in new.history] == [
            {k.replace("_acc", "_accuracy") if k.endswith("_acc") else k: v
             for k, v in e.items() if v is not None} for e in old["history"]]
        if old.get("metrics"):
            assert new.classification.to_dict() == old["metrics"]
        if old.get("block"):
            assert new.label == StudyLabel(old["study"], old["block"], old["variant"],
                                           old["seed"])
    failed = next(r for r in loaded.values() if r.status == "failed")
    assert failed.error.startswith("RuntimeError: Trying to create") and failed.history == []


def test_legacy_keys_do_not_change(legacy_store):
    """Stored keys are kept, and today's config hashes to them: no stored run is orphaned."""
    for old in LEGACY:
        assert TrainConfig.from_dict(old["config"]).key() == old["key"]
    assert legacy_store.done_keys() == {r["key"] for r in LEGACY if r["status"] != "failed"}


def test_legacy_study_run_reports(legacy_store, tmp_path):
    study = load_study(find_study("augmentation"))
    records = legacy_store.runs(study="augmentation:quick")
    write_report(study, records, tmp_path / "report", quick=True)
    assert "| augmented | 1/1 |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("old", LEGACY, ids=lambda r: f"{r['status']}-{r['model']}")
def test_round_trip_through_json(old):
    record = RunRecord.from_dict(old)
    again = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert record.to_dict()["schema"] == SCHEMA


def test_upgrade_refuses_unknown_history_fields():
    old = dict(LEGACY[0], history=[{"epoch": 1, "train_acc": 0.5, "mystery": 1.0}])
    with pytest.raises(ValueError, match="mystery"):
        upgrade(old)


def test_the_one_lookup():
    history = [Epoch(1, train_accuracy=0.90, test_accuracy=0.95, test_loss=0.2),
               Epoch(2, train_accuracy=0.97, test_accuracy=0.94, test_loss=0.3)]
    r = RunRecord("x", "k", "complete", TrainConfig(), "2026", 7432, history,
                  timing=Timing(wall_seconds=12.5))
    assert r.metric("test_accuracy") == 0.94  # per-epoch names: the last epoch's
    assert r.metric("best_test_accuracy") == 0.95
    assert r.metric("params") == 7432 and r.metric("epochs_run") == 2
    assert r.metric("wall_seconds") == 12.5 and r.metric("val_accuracy") is None
    with pytest.raises(UserError, match="unknown metric 'test_acc'"):
        r.metric("test_acc")


def test_failed_record_keeps_the_error():
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        r = RunRecord.failed(TrainConfig(), e, StudyLabel("s", "b", "v", 1))
    assert r.status == "failed" and r.error == "RuntimeError: boom" and "boom" in r.traceback
    assert r.metric("test_accuracy") is None and r.study == "s"


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_formats(name):
    m = METRICS[name]
    assert m.format(None) == "—"
    shown = m.format(0.987654)
    assert shown and shown != "—"
    assert m.format_spread(shown, 0.0123)
    if m.kind == "fraction":
        assert shown == "98.77%" and m.format_spread(shown, 0.0123) == "1.23"


@pytest.mark.parametrize("model", ["softmax", "logreg"])
def test_test_outputs_are_stored_with_the_run(tmp_path, data_root, model):
    """Class probabilities on the test set, float16, written in the record's transaction."""
    cfg = TrainConfig(model=model, epochs=1, subset=1000, test_subset=500, rotate=0,
                      translate=0, **({"model_kwargs": {"max_iter": 20}} if model == "logreg"
                                      else {}))
    record, _ = execute(cfg, RunContext(data_dir=str(data_root)))
    store = Store(tmp_path / "runs")
    store.add(record)
    outputs = store.outputs(record.id)
    probs, labels = outputs.probabilities, outputs.labels
    assert probs.dtype == np.float16 and probs.shape == (500, 10)
    assert np.allclose(probs.astype(np.float32).sum(1), 1, atol=1e-2)
    again = Store(tmp_path / "runs").runs()[0]  # read back: the JSON holds no outputs
    assert again.outputs is None and "outputs" not in again.to_dict()
    assert np.array_equal(labels, load("mnist", data_root, download=False).test.labels[:500])
    correct = np.trace(np.array(record.classification.confusion_matrix))
    # the argmax of float16 probabilities may break a near-tie the other way, rarely
    assert abs(int((probs.argmax(1) == labels).sum()) - correct) <= 2


def test_runs_without_outputs_say_so(legacy_store):
    assert all(legacy_store.outputs(r["id"]) is None for r in LEGACY)
