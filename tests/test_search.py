"""Search blocks: Optuna ask-and-tell from the driver, trials as stored runs, pruning on
per-epoch validation accuracy, the best re-run over seeds, resume, and bad search blocks."""

from __future__ import annotations

import builtins
import re

import pytest

from mnist_lab.config import RunContext
from mnist_lab.errors import UserError
from mnist_lab.report import write_report
from mnist_lab.runner import Executor, run_study
from mnist_lab.store import Store
from mnist_lab.study import load_study

SEARCH = """
name = "tiny-search"
title = "tiny search"
source = "a test"
seeds = [0, 1]

[base]
model = "softmax"
optimizer = "sgd"
scheduler = "none"
rotate = 0.0
translate = 0.0
epochs = 3
subset = 600
val_size = 1000
test_subset = 500
normalize = false

[[blocks]]
name = "grid"
grid = {{ lr = [0.1, 0.5] }}
table = ["val_accuracy", "test_accuracy"]
select_by = "val_accuracy"

[[blocks]]
name = "search"
table = ["val_accuracy", "test_accuracy"]

[blocks.search]
n_trials = {n_trials}
pruner = "median"
against = "grid"

[blocks.search.space]
lr = {{ low = 0.00001, high = 1.0, log = true }}
batch_size = {{ choices = [32, 128] }}
"""


def _study(tmp_path, n_trials=8, **replace):
    text = SEARCH.format(n_trials=n_trials)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "search.toml"
    path.write_text(text)
    return load_study(path)


def _trials(store):
    return sorted((r for r in store.runs(study="tiny-search") if r.label.variant.startswith(
        "trial-")), key=lambda r: r.label.variant)


def test_a_search_prunes_stores_its_trials_and_reruns_the_best(tmp_path, data_root):
    study, store = _study(tmp_path), Store(tmp_path / "runs")
    ctx = RunContext(data_dir=str(data_root))
    counts = run_study(study, store, ctx)
    trials = _trials(store)
    assert len(trials) == 8 and counts.get("pruned", 0) >= 1, counts
    pruned = [r for r in trials if r.status == "pruned"]
    assert all(len(r.history) < 3 for r in pruned)  # stopped before the last epoch
    assert all(len(r.history) == 3 for r in trials if r.status == "complete")
    best = [r for r in store.runs(study="tiny-search") if r.label.variant == "best"]
    assert [r.label.seed for r in best] == [1]  # seed 0 of the best is its trial, reused
    winner = max((r for r in trials if r.status == "complete"),
                 key=lambda r: r.metric("val_accuracy"))
    assert (best[0].config.lr, best[0].config.batch_size) == (winner.config.lr,
                                                              winner.config.batch_size)
    assert not list((tmp_path / "runs" / "partial").glob("*"))  # no snapshot left behind
    again = run_study(study, store, ctx)  # resumed: nothing left to do
    assert again.get("complete", 0) == 0 and len(_trials(store)) == 8

    more = run_study(_study(tmp_path, n_trials=10), store, ctx)  # a larger budget adds 2
    assert sum(more.get(s, 0) for s in ("complete", "pruned")) >= 2 and len(_trials(store)) == 10

    html = write_report(_study(tmp_path, n_trials=10), store.runs(study="tiny-search"),
                        tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Best of 10 trials" in text and "grid winner" in text
    assert "each trial and the best so far" in text and "each parameter explains" in text
    assert html.exists()


def test_halving_prunes_and_an_int_range_draws_whole_steps(tmp_path, data_root):
    study = _study(tmp_path, n_trials=6, **{
        'pruner = "median"': 'pruner = "halving"',
        "batch_size = { choices = [32, 128] }": "batch_size = { low = 32, high = 128, step = 32 }"})
    store = Store(tmp_path / "runs")
    counts = run_study(study, store, RunContext(data_dir=str(data_root)))
    trials = _trials(store)
    assert len(trials) == 6 and counts.get("pruned", 0) >= 1, counts
    assert all(len(r.history) < 3 for r in trials if r.status == "pruned")
    assert {type(r.config.batch_size) for r in trials} == {int}
    assert {r.config.batch_size for r in trials} <= {32, 64, 96, 128}


def test_a_resumed_search_asks_what_an_uninterrupted_one_would(tmp_path, data_root):
    ctx = RunContext(data_dir=str(data_root))
    whole, parts = Store(tmp_path / "whole"), Store(tmp_path / "parts")
    run_study(_study(tmp_path, n_trials=4), whole, ctx)
    for n in (2, 4):  # stopped after two trials, then started again
        run_study(_study(tmp_path, n_trials=n), parts, ctx)
    keys = [[r.key for r in _trials(store)] for store in (whole, parts)]
    assert keys[0] == keys[1] and len(set(keys[0])) == 4


@pytest.mark.parametrize("replace, phrase", [
    ({'pruner = "median"': 'pruner = "median"\nobjective = "test_accuracy"'},
     "objective must be a validation metric"),
    ({"batch_size = {": "colour = {"}, "'colour' is not a TrainConfig field"),
    ({"n_trials = 8": "n_trials = 0"}, "n_trials >= 1"),
    ({'pruner = "median"': 'pruner = "hyperband"'}, "pruner one of none, median, halving"),
    ({"choices = [32, 128]": "low = 5"}, "search space 'batch_size'"),
    ({"against": "againts"}, "unknown key 'againts'"),
    ({"val_size = 1000": "val_size = 0"}, "give its runs a validation hold-out"),
    ({'against = "grid"': 'against = "search"'}, "name a block with select_by (grid)"),
    # the trials' configs are checked when the file is read, before the grid trains
    ({'name = "search"\n': 'name = "search"\nbase = { model = "nope" }\n'},
     "block 'search': unknown model 'nope'"),
    ({'name = "search"\n': 'name = "search"\nbase = { lrr = 1.0 }\n'},
     "block 'search': unknown config key(s): lrr"),
    ({"choices = [32, 128]": "low = 16, high = 64.5"},
     "block 'search': config key 'batch_size' must be an integer, got float 64.5"),
])
def test_a_bad_search_block_is_refused(tmp_path, replace, phrase):
    with pytest.raises(UserError, match=re.escape(phrase)):
        _study(tmp_path, **replace)


def test_without_optuna_a_search_says_how_to_install_it(tmp_path, data_root, monkeypatch):
    real = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(UserError, match=r"pip install 'mnist-lab\[search\]'"):
        run_study(_study(tmp_path), Store(tmp_path / "runs"), RunContext(data_dir=str(data_root)))


def test_a_search_on_ray_asks_and_stores_what_the_local_pool_does(tmp_path, data_root):
    ray = pytest.importorskip("ray")
    ctx = RunContext(data_dir=str(data_root))
    local, remote = Store(tmp_path / "local"), Store(tmp_path / "ray")
    run_study(_study(tmp_path, n_trials=3), local, ctx)
    try:  # no snapshots on Ray: each rung trains again from the start, to the same weights
        run_study(_study(tmp_path, n_trials=3), remote, ctx, executor=Executor("ray"))
    finally:
        ray.shutdown()
    seen = [[(r.key, r.status, [e.val_accuracy for e in r.history]) for r in _trials(store)]
            for store in (local, remote)]
    assert seen[0] == seen[1] and len(seen[0]) == 3
