"""Studies: expansion, resume after a kill, failures that do not stop a study, reports, Ray."""

import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_lab.config import RunContext
from mnist_lab.document import mean_std
from mnist_lab.ensemble import study_ensembles
from mnist_lab.errors import UserError
from mnist_lab.metrics import Epoch
from mnist_lab.models import model_entry
from mnist_lab.record import RunRecord, StudyLabel
from mnist_lab.report import write_report
from mnist_lab.runner import Executor, pending, run_study
from mnist_lab.search import study_runs
from mnist_lab.snapshot import save_snapshot, snapshot_path
from mnist_lab.store import Store
from mnist_lab.study import SHIPPED, expand, find_study, list_studies, load_study
from mnist_lab.suites import TORCH_ONLY

STUDIES = sorted(SHIPPED.glob("*.toml"))

TINY = """
name = "tiny"
seeds = [0, 1]
[base]
model = "softmax"
epochs = 2
subset = 2000
test_subset = 1000
rotate = 0.0
translate = 0.0
scheduler = "none"
[[blocks]]
name = "lr"
grid = { lr = [0.01, 0.03, 0.1, 0.3] }
table = ["test_accuracy"]
plots = [{ kind = "sweep", x = "lr", metrics = ["test_accuracy"] },
         { kind = "curves", metrics = ["test_accuracy"], zoom_from = 2 }]
[[blocks]]
name = "odd"
table = ["test_accuracy"]
[[blocks.variants]]
name = "broken"
model = "mlp"
model_kwargs = { hidden = -5 }   # passes config checks, fails when the model is built
[[blocks.variants]]
name = "diverges"
lr = 1000.0
l2 = 1.0
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_study(path)


def test_expansion(tiny):
    runs = expand(tiny)
    assert len(runs) == (4 + 2) * 2
    assert [r.variant for r in runs[:3]] == ["lr=0.01", "lr=0.01", "lr=0.03"]
    assert runs[0].config.lr == 0.01 and runs[0].config.subset == 2000
    assert {r.seed for r in runs} == {0, 1}
    quick = expand(tiny, quick=True)
    assert len(quick) == 6 and all(r.config.epochs == 1 and r.config.subset == 200
                                   for r in quick)


def test_pending_runs_every_variant_once_before_any_second_seed(tiny, tmp_path):
    todo = pending(tiny, Store(tmp_path / "runs"), quick=False)
    assert len(todo) == 12 and [r.seed for r in todo] == [0] * 6 + [1] * 6
    assert len({r.variant for r in todo[:6]}) == 6
    # With the first variant's first seed stored, the other first seeds still come first.
    store = Store(tmp_path / "runs")
    first = todo[0]
    store.add(RunRecord(id="r0", key=first.config.key(), status="complete", config=first.config,
                        created="0", label=StudyLabel(tiny.store_name(False), first.block,
                                                      first.variant, first.seed)))
    todo = pending(tiny, store, quick=False)
    assert [r.seed for r in todo] == [0] * 5 + [1] * 6


def test_runs_stored_before_the_record_had_a_schema_still_count(tiny, tmp_path):
    """A schema-0 record (plain dict, `*_acc` history, labels at the top level) is read as a
    RunRecord, keeps its key, and is not run again."""
    first = expand(tiny)[0]
    old = {"id": "r0", "key": first.config.key(), "status": "complete", "model": "softmax",
           "dataset": "mnist", "test_accuracy": 0.9, "created": "0", "study": "tiny",
           "block": first.block, "variant": first.variant, "seed": first.seed,
           "config": first.config.to_dict(), "params": 7850, "wall_seconds": 1.5,
           "history": [{"epoch": 1, "train_acc": 0.8, "test_acc": 0.85},
                       {"epoch": 2, "train_acc": 0.88, "test_acc": 0.9}]}
    store = Store(tmp_path / "runs")
    store.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     ("r0", old["key"], "tiny", "complete", "softmax", "mnist", 0.9, "0",
                      json.dumps(old)))
    (record,) = store.runs(study="tiny")
    assert record.label == StudyLabel("tiny", first.block, first.variant, first.seed)
    assert record.config == first.config and record.key == first.config.key()
    assert record.metric("test_accuracy") == 0.9 and record.metric("train_accuracy") == 0.88
    assert record.metric("best_test_accuracy") == 0.9 and record.timing.wall_seconds == 1.5
    assert len(pending(tiny, store, quick=False)) == 11


def test_pending_runs_start_each_seed_with_its_longest_runs(tmp_path):
    study = load_study(next(p for p in STUDIES if p.stem == "weight-decay"))
    todo = pending(study, Store(tmp_path / "runs"), quick=False)
    subsets = [r.config.subset for r in todo if r.seed == 0]
    assert subsets == [5000] * 5 + [1000] * 5 and todo[0].seed == 0 and todo[-1].seed == 2


def test_every_study_file_parses():
    names = [load_study(p).name for p in STUDIES]
    assert names == [p.stem for p in STUDIES] == list_studies()  # a study is named as its file
    assert {"compact-cnn", "linear-mlp", "model-comparison", "weight-decay",
            "augmentation"} <= set(names)  # the five reference studies ship


def test_shipped_studies_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_study("augmentation") == SHIPPED / "augmentation.toml"
    assert load_study(find_study("augmentation")).name == "augmentation"
    (tmp_path / "mine.toml").write_text(TINY)
    assert find_study("mine.toml") == Path("mine.toml")  # a path to a file of one's own
    with pytest.raises(UserError, match="no study 'nosuch'.*augmentation, compact-cnn"):
        find_study("nosuch")


def test_failures_are_recorded_and_the_rest_goes_on(tiny, tmp_path, data_root):
    store = Store(tmp_path / "runs")
    ctx = RunContext(data_dir=str(data_root))
    counts = run_study(tiny, store, ctx, executor=Executor(jobs=2))
    assert counts == {"skipped": 0, "complete": 8, "failed": 2, "diverged": 2}
    failed = store.runs(study="tiny", status="failed")
    assert {r.label.variant for r in failed} == {"broken"} and "hidden" not in failed[0].error
    assert failed[0].traceback and failed[0].checkpoint is None and failed[0].history == []
    diverged = store.runs(study="tiny", status="diverged")
    assert {r.label.variant for r in diverged} == {"diverges"}
    assert {r.label for r in store.runs(study="tiny", status="complete")} == {
        StudyLabel("tiny", "lr", f"lr={lr}", seed) for lr in (0.01, 0.03, 0.1, 0.3)
        for seed in (0, 1)}
    again = run_study(tiny, store, ctx)
    assert again == {"skipped": 10, "failed": 2}  # only the failed runs are retried
    assert len(store.runs(study="tiny")) == 12  # a retried failure replaces the old record


def test_report_from_store(tiny, tmp_path, data_root):
    store = Store(tmp_path / "runs")
    run_study(tiny, store, RunContext(data_dir=str(data_root)))
    html = write_report(tiny, store.runs(study="tiny"), tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Runs stored: 12 of the 12 the study defines (8 complete, 2 diverged, 2 failed)" in md
    assert "| lr=0.1 | 2/2 |" in md and "| broken | 0/2, 2 failed |" in md
    assert html.read_text().count("data:image/png;base64,") == 2
    assert "test_accuracy, from epoch 2" in md
    # targets: each bar reported as met or missed, with a one-sample t-test against it
    lr = {**tiny.blocks[0], "targets": {"lr=0.1": 0.5, "lr=0.01": 0.999}}
    study = dataclasses.replace(tiny, blocks=[lr, *tiny.blocks[1:]])
    write_report(study, store.runs(study="tiny"), tmp_path / "targets")
    md = (tmp_path / "targets" / "report.md").read_text()
    assert re.search(r"lr=0\.1: [\d.]+% against the target 50\.00%, met", md)
    assert re.search(r"lr=0\.01: [\d.]+% against the target 99\.90%, missed", md)
    assert "the target" in md.split("missed", 1)[1] and "| target |" in md


def test_mean_std_shows_the_spread_at_the_means_precision():
    assert mean_std("test_accuracy", [0.99, 0.98]) == "98.50% ± 0.71 (n=2)"
    assert mean_std("weight_norm", [27.0, 28.24]) == "27.62 ± 0.88 (n=2)"
    assert mean_std("test_loss", [0.1, 0.2]) == "0.1500 ± 0.0707 (n=2)"
    assert mean_std("params", [7432, 7432]) == "7,432 ± 0 (n=2)"
    assert mean_std("weight_norm", [1.5]) == "1.5" and mean_std("x", [None]) == "—"


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or its schema not yet written
        return 0


def test_resume_after_kill(tmp_path, data_root):
    study = tmp_path / "resume.toml"
    study.write_text(TINY.split("[[blocks]]\nname = \"odd\"")[0].replace(
        "[0.01, 0.03, 0.1, 0.3]", "[0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5]"))
    runs_dir, db = tmp_path / "runs", tmp_path / "runs" / "runs.db"
    cmd = [sys.executable, "-m", "mnist_lab.cli", "study", "run", str(study), "--no-progress",
           "--runs-dir", str(runs_dir), "--data-dir", str(data_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _stored(db) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stored(db)
    assert 2 <= before < 16, f"the kill should land mid-study ({before} of 16 stored)"
    subprocess.run(cmd, check=True, capture_output=True)
    records = Store(runs_dir).runs(study="tiny")
    assert len(records) == 16 and len({r.key for r in records}) == 16
    assert not list((runs_dir / "partial").glob("*"))  # snapshots go once runs are stored


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_quick(path, tmp_path, data_root):
    study, store = load_study(path), Store(tmp_path / "runs")
    counts = run_study(study, store, RunContext(data_dir=str(data_root)), quick=True)
    assert counts.get("failed", 0) == 0 and counts["skipped"] == 0
    records = store.runs(study=study.store_name(quick=True))
    assert len(records) == len({r.config.key() for r in study_runs(study, records, quick=True)})
    evaluate = {b["name"]: set(b.get("evaluate", [])) for b in study.blocks}
    suites: dict[str, set] = {}  # run key -> its blocks' suites (a search's trials: none)
    for run in expand(study, quick=True):
        suites[run.config.key()] = suites.get(run.config.key(), set()) | evaluate[run.block]
    for r in records:  # every run keeps its model, and its blocks' suites are measured
        torch_run = model_entry(r.model).kind == "torch"
        assert bool(r.checkpoint) == torch_run
        assert set(r.suites) == suites.get(r.key, set()) - (set() if torch_run else TORCH_ONLY)
    html = write_report(study, records, tmp_path / "report", quick=True,
                        ensembles=study_ensembles(store, study, quick=True))
    md = (tmp_path / "report" / "report.md").read_text()
    assert html.exists() and md.startswith("# ")
    if any("ensembles" in block for block in study.blocks):  # formed from the quick runs
        assert "majority vote" in md and "Not formed" not in md


def test_ray_executor(tiny, tmp_path, data_root):
    ray = pytest.importorskip("ray")
    store = Store(tmp_path / "runs")
    try:
        counts = run_study(tiny, store, RunContext(data_dir=str(data_root)), quick=True,
                           executor=Executor("ray", jobs=2))
    finally:
        ray.shutdown()
    assert counts.get("complete", 0) + counts.get("diverged", 0) == 5 and counts["failed"] == 1
    assert len(store.runs(study="tiny:quick")) == 6  # failed runs are stored too


def test_study_cli_run_show_report(tiny, tmp_path, data_root, cli):
    common = ("--runs-dir", str(tmp_path / "runs"))
    code, out, _ = cli("study", "run", str(tiny.path), "--quick", "--no-progress",
                       "--data-dir", str(data_root), *common)
    assert code == 0 and "1 failed" in out
    code, out, _ = cli("study", "show", str(tiny.path), "--quick", *common)
    states = [line.split()[-1] for line in out.splitlines()]
    assert code == 0 and states.count("pending") == 1 and states.count("stored") == 5
    assert out.splitlines()[-1] == "study tiny:quick: 5 of 6 runs stored, 1 to run"
    code, out, _ = cli("study", "report", str(tiny.path), "--quick", *common)
    assert code == 0 and (tmp_path / "runs" / "reports" / "tiny-quick" / "report.html").exists()


def test_block_runs_one_block_stored_under_the_study(tiny, tmp_path, data_root, cli,
                                                     assert_one_line_error):
    common = ("--runs-dir", str(tmp_path / "runs"))
    code, out, _ = cli("study", "run", str(tiny.path), "--block", "odd", "--quick",
                       "--no-progress", "--data-dir", str(data_root), *common)
    assert code == 0 and "1 failed" in out
    stored = Store(tmp_path / "runs").runs(study="tiny:quick")
    assert sorted(r.label.variant for r in stored) == ["broken", "diverges"]
    code, out, _ = cli("study", "show", str(tiny.path), "--quick", *common)
    assert out.splitlines()[-1] == "study tiny:quick: 1 of 6 runs stored, 5 to run"
    for argv, phrase in [(("run", "--block", "nope"), "study tiny has no block 'nope' (its "
                          "blocks: lr, odd)"),
                         (("report", "--block", "lr"), "--block goes with `study run` and")]:
        code, _, err = cli("study", argv[0], str(tiny.path), *argv[1:], *common)
        assert_one_line_error(code, err, phrase)


def test_study_show_counts_the_epochs_a_snapshot_keeps(tiny, tmp_path, cli):
    first = expand(tiny)[0].config
    save_snapshot(snapshot_path(tmp_path / "runs", first.key()),
                  {"key": first.key(), "history": [{"epoch": 1}]})
    code, out, _ = cli("study", "show", str(tiny.path), "--runs-dir", str(tmp_path / "runs"))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["block", "variant", "seed", "state"]
    assert lines[1].split(maxsplit=3) == ["lr", "lr=0.01", "0", "pending (1 of 2 epochs done)"]
    assert lines[2].split(maxsplit=3) == ["lr", "lr=0.01", "1", "pending"]
    assert lines[-1].endswith("0 of 12 runs stored, 12 to run")


@pytest.mark.parametrize("content, phrase", [
    (None, "no such study file"),
    ("name = [", "not valid TOML"),
    ('name = "x"\n[[blocks]]\nname = "b"\nbase = { lr = -1.0 }', "learning rate must be > 0"),
    ('name = "x"\n[[blocks]]\nname = "b"\nbase = { lrr = 1.0 }', "unknown config key(s): lrr"),
    ('name = "x"\n[[blocks]]\nname = "b"\ntable = ["test_acc"]',
     "block 'b': unknown metric 'test_acc'"),
    ('name = "x"\n[[blocks]]\nname = "b"\nplots = [{ kind = "curves", metrics = ["val_acc"] }]',
     "unknown metric 'val_acc'"),
    ('name = "x"\n[[blocks]]\nname = "b"\nselect_by = "metrics.macro_f1"',
     "unknown metric 'metrics.macro_f1'"),
])
def test_study_cli_bad_files(tmp_path, content, phrase, cli):
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_text(content)
    code, _, err = cli("study", "run", str(path), "--runs-dir", str(tmp_path / "r"))
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "runs.db").exists()


GOOD_BLOCK = '[[blocks]]\nname = "b"\n'


@pytest.mark.parametrize("text, phrase", [
    ('name = "s"\nnmae = 1\n' + GOOD_BLOCK, "unknown key 'nmae' (known: name, title"),
    ('name = "s"\nseeds = "0"\n' + GOOD_BLOCK, "'seeds' must be a list, got str '0'"),
    ('name = "s"\n[[blocks]]\nname = "b"\ntabel = ["test_accuracy"]\n',
     "block 'b': unknown key 'tabel'"),
    ('name = "s"\n[[blocks]]\nname = "b"\nbaseline = 3\n', "'baseline' must be a str, got int"),
    ('name = "s"\n[base]\nmodle = "mlp"\n' + GOOD_BLOCK, "unknown config key(s): modle"),
    ('name = "s"\n[base]\nmodel = "resnet9000"\n' + GOOD_BLOCK, "unknown model 'resnet9000'"),
    ('name = "s"\n[base]\nlr = "fast"\n' + GOOD_BLOCK,
     "config key 'lr' must be a number, got str 'fast'"),
    ('name = "s"\n[[blocks]]\nname = "b"\nvariants = [{ name = "v", epochs = true }]\n',
     "config key 'epochs' must be an integer, got bool True"),
    ('name = "s"\n[[blocks]]\nname = "b"\ngrid = { lr = [] }\n',
     "block 'b': grid key 'lr' needs a non-empty list"),
    ('name = "s"\n[[blocks]]\nname = "b"\n[[blocks.variants]]\nname = "v"\n'
     '[[blocks.variants]]\nname = "v"\nlr = 0.2\n', "block 'b': duplicate variant name 'v'"),
    ('name = "s"\n[[blocks]]\nname = "b"\n[[blocks.variants]]\nlr = 0.2\n',
     "every variant needs a name"),
    ('name = "s"\n' + GOOD_BLOCK + '[[blocks]]\nname = "e"\nensembles = [{ name = "x", '
     'members = ["nope"] }]\n', "block 'e': ensemble 'x': no variant 'nope' in this study"),
    ('name = "s"\n[[blocks]]\nname = "e"\ngrid = { lr = [0.1] }\nensembles = []\n',
     "an ensembles block has no grid"),
    ('name = "s"\n' + GOOD_BLOCK + '[[blocks]]\nname = "e"\nensembles = [{ members = ["b"] }]\n',
     "each ensemble is { name = ..., members = [...] }"),
    ('name = "s"\n' + GOOD_BLOCK + '[[blocks]]\nname = "e"\nensembles = [{ name = "x", '
     'members = ["b"] }, { name = "x", members = ["b"] }]\n', "duplicate ensemble name 'x'"),
    ('name = "s"\n[[blocks]]\nname = "b"\ntargets = { nope = 0.99 }\n',
     "block 'b': target for 'nope', which is not one of its variants (b)"),
    ('name = "s"\n[[blocks]]\nname = \n', "not valid TOML (Invalid value (at line 3, column 8))"),
])
def test_a_malformed_study_file_is_one_line(tmp_path, text, phrase, cli, assert_one_line_error):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = cli("study", "run", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert str(path) in err and out == "" and not (tmp_path / "runs").exists()


def test_study_new_writes_a_starter_that_runs(tmp_path, monkeypatch, data_root, cli,
                                              assert_one_line_error):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("study", "new", "mine")
    assert code == 0 and out.strip() == "wrote mine.toml"
    assert load_study("mine.toml").blocks[0]["baseline"] == "default"
    code, out, err = cli("study", "run", "mine.toml", "--quick", "--no-progress",
                         "--data-dir", data_root, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "2 complete" in out, err
    # its commented-out targets and ensemble block are valid once uncommented
    text = re.sub(r"^# (\[|default =|name = \"ensemble|ensembles =)", r"\1",
                  Path("mine.toml").read_text(), flags=re.M)
    Path("both.toml").write_text(text.replace('name = "mine"', 'name = "both"'))
    blocks = load_study("both.toml").blocks
    assert blocks[0]["targets"] == {"default": 0.99} and "ensembles" in blocks[1]
    code, _, err = cli("study", "new", "mine")
    assert_one_line_error(code, err, "mine.toml exists")
    code, _, _ = cli("study", "new", "cc", "--from", "compact-cnn")
    assert code == 0 and load_study("cc.toml").name == "cc"
    assert len(expand(load_study("cc.toml"))) == len(expand(load_study(find_study("compact-cnn"))))


def test_a_selection_tied_on_validation_says_so(tmp_path):
    """Two grid points with the same validation images right: the first is taken, and the
    report names the tie instead of passing off a coin toss as a choice."""
    (tmp_path / "t.toml").write_text('name = "t"\nseeds = [0, 1]\n[[blocks]]\nname = "g"\n'
                                   'grid = { lr = [0.1, 0.3, 0.5] }\nselect_by = "val_accuracy"\n'
                                   'table = ["val_accuracy"]\n')
    study = load_study(tmp_path / "t.toml")
    val = {0.1: [0.9938, 0.9946], 0.3: [0.9942, 0.9942], 0.5: [0.99, 0.99]}
    records = [RunRecord(f"r{i}", run.config.key(), "complete", run.config, "0", history=[
                   Epoch(1, val_accuracy=val[run.config.lr][run.seed], test_accuracy=0.99)],
                   label=StudyLabel("t", run.block, run.variant, run.seed))
               for i, run in enumerate(expand(study))]
    write_report(study, records, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert ("Selected by val_accuracy (99.42%): lr=0.1 (tied with lr=0.3: the first in the "
            "file is taken)") in md
