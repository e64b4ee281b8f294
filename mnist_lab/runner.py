"""Execute runs: one in this process, or a study's in a local process pool or on a Ray cluster.

Workers only compute: each returns its run record to the driver, which alone writes the store,
so no shared filesystem is needed. Runs whose config key is already stored (complete or
diverged) are skipped, so re-running resumes; local runs also keep a snapshot after every epoch,
so a killed study loses at most an epoch of each run in flight (Ray runs restart theirs).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from .config import RunContext, TrainConfig
from .data import Dataset, load
from .errors import UserError
from .record import RunRecord, StudyLabel
from .snapshot import snapshot_path
from .store import Store
from .study import Run, Study, expand
from .train import train

_DATA: dict[tuple[str, str | None], Dataset] = {}  # per process: load each dataset once
TRAIN_IMAGES = 60_000  # training set size of MNIST and Fashion-MNIST alike


def dataset(name: str, ctx: RunContext) -> Dataset:
    """The dataset a run trains on, loaded once per process."""
    if (name, ctx.data_dir) not in _DATA:
        _DATA[(name, ctx.data_dir)] = load(name, ctx.data_dir)
    return _DATA[(name, ctx.data_dir)]


def execute(cfg: TrainConfig, ctx: RunContext,
            label: StudyLabel | None = None) -> tuple[RunRecord, object]:
    """Train one config on its dataset; return its record and the trained model."""
    cfg.validate()
    snapshot = Path(ctx.snapshot) if ctx.snapshot else None
    outcome = train(cfg, dataset(cfg.dataset, ctx), ctx.progress, snapshot)
    return RunRecord.from_outcome(cfg, outcome, label), outcome.model


def run_one(cfg: TrainConfig, ctx: RunContext, label: StudyLabel) -> RunRecord:
    """A study worker's task: the run's record; an exception becomes a 'failed' record."""
    try:
        return execute(cfg, ctx, label)[0]
    except Exception as e:  # noqa: BLE001 - a failed run is data, not a crash of the study
        return RunRecord.failed(cfg, e, label)


def _images_seen(cfg: TrainConfig) -> int:
    """Training images a run passes over: a rough measure of how long it takes."""
    return cfg.epochs * (cfg.subset or (TRAIN_IMAGES - cfg.val_size))


def pending(study: Study, store: Store, quick: bool) -> list[Run]:
    """Runs of the study not yet stored, one per config key, first seed of every variant first.

    Seed-major order: a study stopped part-way has every variant at least once to report on.
    Within a seed the longest runs go first, so short ones fill the last workers' time
    instead of one long run finishing alone while the other workers sit idle.
    """
    runs, done, todo = expand(study, quick), store.done_keys(study.store_name(quick)), []
    for run in runs:
        key = run.config.key()
        if key not in done:
            done.add(key)
            todo.append(run)
    # Rank seeds by their order in the study, not among the pending runs: once the first
    # variant's first seed is stored, its second seed must not jump ahead of the others.
    rank = {seed: i for i, seed in enumerate(dict.fromkeys(r.seed for r in runs))}
    return sorted(todo, key=lambda r: (rank[r.seed], -_images_seen(r.config)))


Task = tuple[TrainConfig, RunContext, StudyLabel]  # run_one's arguments


def _local(tasks: list[Task], jobs: int) -> Iterator[RunRecord]:
    if jobs == 1:
        for task in tasks:
            yield run_one(*task)
        return
    # spawn, not fork: a forked child inherits torch's thread pool in an unusable state.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for future in as_completed([pool.submit(run_one, *task) for task in tasks]):
            yield future.result()


def _ray(tasks: list[Task], address: str | None, threads: int) -> Iterator[RunRecord]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, **({} if address else {"num_cpus": os.cpu_count()}))
    remote = ray.remote(num_cpus=threads)(run_one)
    # no snapshots: a Ray worker's disk is not the driver's
    refs = [remote.remote(cfg, dataclasses.replace(ctx, snapshot=None), label)
            for cfg, ctx, label in tasks]
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        yield ray.get(ready[0])


def run_study(study: Study, store: Store, ctx: RunContext, jobs: int = 1, quick: bool = False,
              executor: str = "local", address: str | None = None) -> dict[str, int]:
    """Run every pending run of the study; store each record as it arrives; count statuses."""
    todo, name = pending(study, store, quick), study.store_name(quick)
    # N workers share the cores: each gets cores // N threads so they do not oversubscribe.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    tasks = [(dataclasses.replace(run.config, threads=threads),
              dataclasses.replace(ctx, snapshot=str(snapshot_path(store.root, run.config.key())),
                                  progress=False),
              StudyLabel(name, run.block, run.variant, run.seed)) for run in todo]
    results = (_ray(tasks, address, threads) if executor == "ray" else _local(tasks, jobs))
    unique = {r.config.key() for r in expand(study, quick)}  # blocks may share a run
    counts = {"skipped": len(unique) - len(todo)}
    for record in tqdm(results, total=len(todo), disable=not ctx.progress, desc=study.name,
                          unit="run", dynamic_ncols=True):
        store.add(record)
        snapshot_path(store.root, record.key).unlink(missing_ok=True)  # stored: not needed
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts
