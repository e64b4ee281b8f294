"""`mnist-lab evaluate RUN --suite ...` on real stored runs: measured once and stored, read back,
plotted; bad input gets one line."""

from __future__ import annotations

import json

import pytest

from mnist_lab import suites
from mnist_lab.metrics import METRICS, SUITE_COLUMNS
from mnist_lab.store import Store
from mnist_lab.suites import SUITES, TORCH_ONLY

FAST = ["--attack-images", "50", "--pgd-steps", "5"]


def test_every_suite_has_its_metrics_registered():
    assert set(SUITES) == set(SUITE_COLUMNS)
    for suite, columns in SUITE_COLUMNS.items():
        assert all(METRICS[m].suite == suite for m in columns)


def test_calibration_and_explanations_are_stored_and_read_back(cli, suite_runs, monkeypatch):
    run, root = suite_runs.val_run, suite_runs.root
    code, out, err = cli("evaluate", run.id, "--suite", "calibration,explanations",
                         "--runs-dir", root, "--json")
    assert code == 0, err
    first = json.loads(out)
    cal = first["suites"]["calibration"]["metrics"]
    assert 0 <= cal["ece"] < 0.2 and cal["temperature"] > 0 and cal["ece_scaled"] is not None
    ex = first["suites"]["explanations"]["details"]
    assert len(ex["mistakes"]) == 16 and len(ex["saliency"]) == 8
    assert [m["probability"] for m in ex["mistakes"]] == sorted(
        (m["probability"] for m in ex["mistakes"]), reverse=True)
    assert all(m["true"] != m["pred"] for m in ex["mistakes"])
    assert {p.rsplit("/", 1)[1] for p in first["figures"]} == {
        "calibration.png", "mistakes.png", "saliency.png"}
    with Store(root) as store:  # stored with the run: the record reads it as a metric
        assert store.get(run.id).metric("ece") == pytest.approx(cal["ece"])

    def fail(*a, **k):
        raise AssertionError("a stored suite was measured again")
    monkeypatch.setattr(suites, "subject", fail)
    code, out, _ = cli("evaluate", run.id, "--suite", "calibration", "--runs-dir", root,
                       "--json")
    assert code == 0 and json.loads(out)["suites"]["calibration"] == first["suites"][
        "calibration"]


def test_force_and_new_options_measure_again(cli, suite_runs):
    run, root = suite_runs.val_run, suite_runs.root
    _, out, _ = cli("evaluate", run.id, "--suite", "adversarial", *FAST, "--runs-dir", root,
                    "--json")
    first = json.loads(out)["suites"]["adversarial"]
    _, out, _ = cli("evaluate", run.id, "--suite", "adversarial", "--attack-images", "40",
                    "--pgd-steps", "5", "--runs-dir", root, "--json")
    second = json.loads(out)["suites"]["adversarial"]
    assert first["details"]["images"] == 50 and second["details"]["images"] == 40
    _, out, _ = cli("evaluate", run.id, "--suite", "adversarial", "--attack-images", "40",
                    "--pgd-steps", "5", "--force", "--runs-dir", root, "--json")
    third = json.loads(out)["suites"]["adversarial"]
    assert third["created"] >= second["created"] and third["metrics"] == second["metrics"]
    pgd = [third["metrics"][f"pgd_accuracy_{e}"] for e in (0.05, 0.1, 0.2, 0.3)]
    assert pgd == sorted(pgd, reverse=True)


def test_the_table_names_each_metric(cli, suite_runs):
    code, out, _ = cli("evaluate", suite_runs.val_run.id, "--suite", "calibration",
                       "--runs-dir", suite_runs.root)
    assert code == 0
    assert "ece_scaled" in out and "temperature" in out and "figures:" in out


def test_a_scikit_learn_run_gets_calibration_but_not_attacks(cli, suite_runs,
                                                              assert_one_line_error):
    run, root = suite_runs.classical, suite_runs.root
    code, out, err = cli("evaluate", run.id, "--suite", "calibration", "--runs-dir", root,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["suites"]["calibration"]["metrics"]["ece"] >= 0
    assert "adversarial" in TORCH_ONLY
    code, _, err = cli("evaluate", run.id, "--suite", "adversarial", "--runs-dir", root)
    assert_one_line_error(code, err, "needs a torch model")


@pytest.mark.parametrize("args, phrase", [
    (["--suite", "noise"], "unknown suite 'noise'"),
    (["--suite", "adversarial", "--attack-images", "0"], "--attack-images must be in 1..10000"),
    (["--suite", "adversarial", "--epsilon", "1.5"], "--epsilon values must be in (0, 1]"),
    (["--suite", "adversarial", "--pgd-steps", "0"], "--pgd-steps must be >= 1"),
    (["--suite", "masking", "--restarts", "0"], "--restarts must be >= 1"),
    (["--suite", "masking", "--strong-steps", "-1"], "--strong-steps must be >= 1"),
])
def test_bad_suite_options_get_one_line(cli, suite_runs, assert_one_line_error, args, phrase):
    code, _, err = cli("evaluate", suite_runs.val_run.id, *args, "--runs-dir", suite_runs.root)
    assert_one_line_error(code, err, phrase)


def test_a_checkpoint_file_or_unknown_run_is_refused(cli, suite_runs, assert_one_line_error):
    code, _, err = cli("evaluate", suite_runs.val_run.checkpoint, "--suite", "calibration",
                       "--runs-dir", suite_runs.root)
    assert_one_line_error(code, err, "give a stored run's id")
    code, _, err = cli("evaluate", "nosuchrun", "--suite", "all", "--runs-dir", suite_runs.root)
    assert_one_line_error(code, err, "no run matches 'nosuchrun'")
