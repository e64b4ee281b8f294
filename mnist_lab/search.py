"""A study block's hyperparameter search, driven by Optuna with ask-and-tell from this process.

The driver asks Optuna for a trial, trains it as an ordinary run in a pool (this process, local
workers or Ray), one epoch per rung: after each it reports the validation objective and asks the
pruner whether to go on (the next rung resumes from the run's snapshot). Only the driver talks
to Optuna and writes the store, so trials are stored runs like any other (resumable: a search
started again rebuilds Optuna's history from them), and Optuna needs no storage of its own.
The best trial is then trained over the study's seeds as variant `best`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import RunContext, TrainConfig
from .errors import UserError
from .metrics import METRICS
from .record import RunRecord, StudyLabel
from .snapshot import snapshot_path
from .store import Store
from .study import QUICK, QUICK_SUBSET, Run, Study, expand
from .user_models import resolve_model

if TYPE_CHECKING:  # a type only: reading a search's results needs no workers
    from .pools import Pool

QUICK_TRIALS = 2  # --quick: a smoke test of the search


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("search blocks need Optuna, an optional extra: pip install "
                        "'mnist-lab[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(block: dict) -> dict:
    """The search space of a block as Optuna distributions (types from TrainConfig)."""
    optuna = _optuna()
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for name, dim in block["search"]["space"].items():
        if "choices" in dim:
            out[name] = optuna.distributions.CategoricalDistribution(dim["choices"])
        elif fields[name] == "int":
            out[name] = optuna.distributions.IntDistribution(
                dim["low"], dim["high"], log=dim.get("log", False), step=dim.get("step", 1))
        else:
            out[name] = optuna.distributions.FloatDistribution(
                dim["low"], dim["high"], log=dim.get("log", False), step=dim.get("step"))
    return out


def sampler(block: dict, trial: int):
    """The block's sampler, seeded for trial number `trial`.

    A sampler seeded once would, in a search resumed from the store, draw its first random
    points again (and repeat trials); seeded per trial, a resumed search asks what an
    uninterrupted one would have asked.
    """
    optuna, spec = _optuna(), block["search"]
    kind = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return kind[spec.get("sampler", "tpe")](seed=spec.get("seed", 0) * 100_003 + trial)


def new_study(block: dict):
    """An in-memory Optuna study with the block's sampler, pruner and direction."""
    optuna, spec = _optuna(), block["search"]
    pruner = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
              "halving": optuna.pruners.SuccessiveHalvingPruner}[spec.get("pruner", "median")]()
    direction = "maximize" if METRICS[objective(block)].higher_is_better else "minimize"
    return optuna.create_study(direction=direction, sampler=sampler(block, 0), pruner=pruner)


def objective(block: dict) -> str:
    """The validation metric the search optimises."""
    return block["search"].get("objective", "val_accuracy")


def trials_of(block: dict, records: list[RunRecord]) -> list[RunRecord]:
    """The block's stored trials, in trial order."""
    return sorted((r for r in records if r.label and r.label.block == block["name"]
                   and r.label.variant.startswith("trial-")), key=lambda r: r.label.variant)


def rebuild(block: dict, records: list[RunRecord]):
    """An Optuna study holding the block's stored trials: for resuming, importances, plots."""
    optuna, dists = _optuna(), distributions(block)
    study, name = new_study(block), objective(block)
    state = optuna.trial.TrialState
    for r in trials_of(block, records):
        steps = {e.epoch: getattr(e, name) for e in r.history if getattr(e, name) is not None}
        value = r.metric(name) if r.status == "complete" else None
        done = state.COMPLETE if value is not None else state.FAIL
        study.add_trial(optuna.trial.create_trial(
            params={k: getattr(r.config, k) for k in dists}, distributions=dists,
            value=value, intermediate_values=steps,
            state={"complete": done, "pruned": state.PRUNED}.get(r.status, state.FAIL)))
    return study


@dataclass
class _Trial:
    """A trial in flight: Optuna's handle, the run it trains, its label."""

    trial: object
    cfg: TrainConfig
    label: StudyLabel


def _config(study: Study, block: dict, params: dict, seed: int, quick: bool) -> TrainConfig:
    values = {**study.base, **block.get("base", {}), **params, "seed": seed}
    if quick:
        values.update(QUICK, subset=min(values.get("subset") or QUICK_SUBSET, QUICK_SUBSET))
    return resolve_model(TrainConfig.from_dict(values), study.folder()).validate()


class _Search:
    """One block's search while it runs: Optuna's study, the trials in flight, the pool."""

    def __init__(self, study: Study, block: dict, store: Store, ctx: RunContext, pool: Pool,
                 threads: int, quick: bool, snapshots: bool,
                 on_stored: Callable[[RunRecord], None] | None = None):
        self.on_stored = on_stored  # e.g. a tracker, told of each run once stored
        self.snapshots = snapshots  # a Ray worker's disk is not the driver's: none there
        self.study, self.block, self.store, self.ctx = study, block, store, ctx
        self.pool, self.threads, self.quick = pool, threads, quick
        self.name = study.store_name(quick)
        self.seeds = block.get("seeds", study.seeds)[:1 if quick else None]
        self.optuna = rebuild(block, store.runs(study=self.name))
        self.dists, self.metric = distributions(block), objective(block)
        self.rungs = block["search"].get("pruner", "median") != "none"
        self.flying: dict[object, _Trial] = {}

    def submit(self, t: _Trial, epochs_done: int = 0) -> None:
        """Train the trial's next rung (one epoch more), or all of it without a pruner."""
        ctx = dataclasses.replace(self.ctx, progress=False, snapshot=self.snapshot(t.cfg),
                                  pause_after=epochs_done + 1 if self.rungs else None)
        self.pool.submit(t.label.variant, (dataclasses.replace(t.cfg, threads=self.threads),
                                           ctx, t.label))
        self.flying[t.label.variant] = t

    def snapshot(self, cfg: TrainConfig) -> str | None:
        """Where a run keeps its progress between rungs (on Ray: nowhere, so a rung trains
        again from the start, to the same weights: training is deterministic)."""
        return str(snapshot_path(self.store.root, cfg.key())) if self.snapshots else None

    def ask(self) -> None:
        """A new trial from Optuna, submitted."""
        self.optuna.sampler = sampler(self.block, len(self.optuna.trials))
        trial = self.optuna.ask(self.dists)
        label = StudyLabel(self.name, self.block["name"], f"trial-{trial.number:03d}",
                           self.seeds[0])
        self.submit(_Trial(trial, _config(self.study, self.block, trial.params, self.seeds[0],
                                          self.quick), label))

    def tell(self, t: _Trial, record: RunRecord) -> str | None:
        """Report a finished rung or run; store the run unless it goes on. Its final status."""
        state = _optuna().trial.TrialState
        if record.status == "paused":
            epoch = record.history[-1]
            t.trial.report(getattr(epoch, self.metric), epoch.epoch)
            if not t.trial.should_prune():
                self.submit(t, epoch.epoch)
                return None
            record = dataclasses.replace(record, status="pruned")
            self.optuna.tell(t.trial, state=state.PRUNED)
        elif record.status == "complete":
            self.optuna.tell(t.trial, record.metric(self.metric))
        else:
            self.optuna.tell(t.trial, state=state.FAIL)
        self.stored(record)
        return record.status

    def stored(self, record: RunRecord) -> None:
        """Store a finished run and forget its snapshot; tell `on_stored`."""
        stored = self.store.add_run(record)
        snapshot_path(self.store.root, record.key).unlink(missing_ok=True)
        if self.on_stored:
            self.on_stored(stored)

    def best_runs(self) -> None:
        """The best trial's configuration over every seed (its own seed is already stored)."""
        best = self.optuna.best_trial.params
        done = self.store.done_keys(self.name)
        for seed in self.seeds:
            cfg = _config(self.study, self.block, best, seed, self.quick)
            if cfg.key() not in done:
                label = StudyLabel(self.name, self.block["name"], "best", seed)
                ctx = dataclasses.replace(self.ctx, progress=False, snapshot=self.snapshot(cfg))
                self.pool.submit("best", (dataclasses.replace(cfg, threads=self.threads), ctx,
                                          label))


def search_runs(study: Study, block: dict, records: list[RunRecord],
                quick: bool = False) -> list[Run]:
    """The block's runs as far as the store knows: its trials, then `best` over the seeds."""
    trials = [r for r in trials_of(block, records) if r.study == study.store_name(quick)]
    runs = [Run(block["name"], r.label.variant, r.label.seed, r.config) for r in trials]
    if any(r.status == "complete" for r in trials):
        best = rebuild(block, trials).best_trial.params
        seeds = block.get("seeds", study.seeds)[:1 if quick else None]
        runs += [Run(block["name"], "best", seed, _config(study, block, best, seed, quick))
                 for seed in seeds]
    return runs


def study_runs(study: Study, records: list[RunRecord], quick: bool = False) -> list[Run]:
    """Every run of a study: the file's (expand), then its search blocks' as far as stored."""
    return expand(study, quick) + [run for block in study.blocks if "search" in block
                                   for run in search_runs(study, block, records, quick)]


def run_search(study: Study, block: dict, store: Store, ctx: RunContext, pool: Pool,
               threads: int, jobs: int = 1, quick: bool = False,
               snapshots: bool = True,
               on_stored: Callable[[RunRecord], None] | None = None) -> dict[str, int]:
    """Run the block's remaining trials, `jobs` at a time, then its best configuration over
    the study's seeds; store each run as it ends. Returns counts by status."""
    s = _Search(study, block, store, ctx, pool, threads, quick, snapshots, on_stored)
    todo = (QUICK_TRIALS if quick else block["search"]["n_trials"]) - len(s.optuna.trials)
    counts: dict[str, int] = {}
    while todo > 0 or s.flying:
        while todo > 0 and len(s.flying) < jobs:
            s.ask()
            todo -= 1
        tag, record = pool.next()
        if (status := s.tell(s.flying.pop(tag), record)) is not None:
            counts[status] = counts.get(status, 0) + 1
    if not any(t.state.name == "COMPLETE" for t in s.optuna.trials):
        raise UserError(f"search {block['name']!r}: no trial completed, so there is no best")
    s.best_runs()
    while len(pool):
        record = pool.next()[1]
        s.stored(record)
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts
