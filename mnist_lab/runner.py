"""Execute runs: one in this process, or a study's in a local process pool or on a Ray cluster.

Workers only compute: each returns its run record to the driver, which alone writes the store,
so no shared filesystem is needed. Runs whose config key is already stored (complete or
diverged) are skipped, so re-running resumes; local runs also keep a snapshot after every epoch,
so a killed study loses at most an epoch of each run in flight (Ray runs restart theirs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import RunContext, TrainConfig
from .pools import LocalPool, Pool
from .record import RunRecord, StudyLabel
from .search import run_search
from .snapshot import epochs_done, snapshot_path
from .store import Store
from .study import Run, Study, expand
from .suites import SuiteOptions, evaluate_run
from .train_pack import pack_problem
from .worker import PackTask, Task, dataset

# --quick: the suites shrink as the runs do, so CI measures every one in seconds
QUICK_SUITES = SuiteOptions(attack_images=100, pgd_steps=10, strong_steps=10, restarts=2,
                            saliency_images=2)
MAX_PACK = 8  # seeds trained as one packed model at most (train_pack.py)
TRAIN_IMAGES = 60_000  # training set size of MNIST and Fashion-MNIST alike


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


@dataclass(frozen=True)
class Executor:
    """Where a study's runs train: local processes, or a Ray cluster."""

    kind: str = "local"  # local | ray
    jobs: int = 1  # local: runs in parallel, sharing the cores
    address: str | None = None  # ray: the cluster (None: start Ray in this process)
    gpus_per_run: float = 0.0  # ray: GPUs each run asks for
    # Train a variant's seeds as one packed model where the config allows (pack_problem); the
    # rest alone. On 1 CPU thread a pack of 3 compact CNNs trained 1.08x as fast as its runs
    # one after another, conv_2k's 1.37x, fast_cnn's and the MLP's 0.91x (bench/pack_speed.py,
    # docs/PERFORMANCE.md); on a GPU it is what fills the device.
    pack: bool = True


def make_pool(executor: Executor, ctx: RunContext, datasets: set[str]) -> Pool:
    """The executor's pool of workers."""
    if executor.kind == "local":
        return LocalPool(executor.jobs)
    from .cluster import RayPool  # Ray is an optional extra

    # The driver loads and checks each dataset once and ships it: Ray workers need neither
    # the files nor the environment that names them.
    return RayPool({name: dataset(name, ctx) for name in datasets}, executor.address,
                   executor.gpus_per_run)


def packed(tasks: list[Task], snapshots: bool) -> list[Task | PackTask]:
    """The tasks with each config's seeds gathered into packs where they can train as one
    (train_pack.pack_problem) and, with snapshots, have trained equally far; the rest alone.

    The most work first, a pack counting as all its members: a pack of three queued behind
    single runs would finish alone while the other workers sit idle (packs already give up
    the seed-major order, finishing variant by variant).
    """
    groups: dict[str, list[Task]] = {}
    for task in tasks:  # by config less its seed, in the order the runs come
        groups.setdefault(dataclasses.replace(task[0], seed=0).key(), []).append(task)
    out: list[Task | PackTask] = []
    for group in groups.values():
        for i in range(0, len(group), MAX_PACK):
            chunk = group[i:i + MAX_PACK]
            done = {epochs_done(Path(t[1].snapshot)) for t in chunk} if snapshots else {0}
            if len(chunk) > 1 and len(done) == 1 and pack_problem([t[0] for t in chunk]) is None:
                out.append(tuple(list(column) for column in zip(*chunk, strict=True)))
            else:
                out.extend(chunk)
    return sorted(out, key=lambda task: -_work(task))


def _work(task: Task | PackTask) -> int:
    """Training images a task passes over, all members of a pack together."""
    cfgs = task[0] if isinstance(task[0], list) else [task[0]]
    return sum(_images_seen(cfg) for cfg in cfgs)


def _results(tasks: list[Task | PackTask], pool: Pool) -> Iterator[RunRecord]:
    for task in tasks:
        pool.submit(None, task)
    while len(pool):
        result = pool.next()[1]
        yield from result if isinstance(result, list) else [result]


def run_study(study: Study, store: Store, ctx: RunContext, quick: bool = False,
              executor: Executor = Executor(),
              on_stored: Callable[[RunRecord], None] | None = None) -> dict[str, int]:
    """Run every pending run of the study; store each record as it arrives (then hand it to
    `on_stored`, e.g. a tracker); count statuses."""
    todo, name = pending(study, store, quick), study.store_name(quick)
    # N workers share the cores this process may use (taskset, cgroups): each gets cores // N
    # threads so they do not oversubscribe.
    threads = max(1, len(os.sched_getaffinity(0)) // executor.jobs)
    local = executor.kind == "local"  # a Ray worker's disk is not the driver's: no snapshots
    tasks = [(dataclasses.replace(run.config, threads=threads),
              dataclasses.replace(ctx, progress=False, snapshot=str(
                  snapshot_path(store.root, run.config.key())) if local else None),
              StudyLabel(name, run.block, run.variant, run.seed)) for run in todo]
    if executor.pack:
        tasks = packed(tasks, snapshots=local)
    unique = {r.config.key() for r in expand(study, quick)}  # blocks may share a run
    counts = {"skipped": len(unique) - len(todo)}
    searches = [b for b in study.blocks if "search" in b]
    if not tasks and not searches:
        return counts | _evaluated(study, store, ctx, quick)
    datasets = {run.config.dataset for run in todo} | {
        (b.get("base", {}) | study.base).get("dataset", "mnist") for b in searches}
    pool = make_pool(executor, ctx, datasets)
    try:
        for record in tqdm(_results(tasks, pool), total=len(todo), disable=not ctx.progress,
                           desc=study.name, unit="run", dynamic_ncols=True):
            stored = store.add_run(record)
            snapshot_path(store.root, record.key).unlink(missing_ok=True)  # stored: not needed
            counts[record.status] = counts.get(record.status, 0) + 1
            if on_stored:
                on_stored(stored)
        for block in searches:
            found = run_search(study, block, store, ctx, pool, threads, executor.jobs, quick,
                               snapshots=local, on_stored=on_stored)
            counts = {k: counts.get(k, 0) + found.get(k, 0) for k in counts | found}
    finally:
        pool.close()
    return counts | _evaluated(study, store, ctx, quick)


def _evaluated(study: Study, store: Store, ctx: RunContext, quick: bool) -> dict[str, int]:
    evaluated = evaluate_study(study, store, ctx, quick)
    return {"evaluated": evaluated} if evaluated else {}


def evaluate_study(study: Study, store: Store, ctx: RunContext, quick: bool = False) -> int:
    """Measure each block's `evaluate` suites on its complete runs, in the driver (results
    already stored with the same options are kept); return how many runs were measured."""
    wanted: dict[str, list[str]] = {}  # run key -> suites, merged over the blocks sharing it
    for run in expand(study, quick):
        for suite in next(b for b in study.blocks if b["name"] == run.block).get("evaluate", []):
            wanted.setdefault(run.config.key(), [])
            if suite not in wanted[run.config.key()]:
                wanted[run.config.key()].append(suite)
    if not wanted:
        return 0
    stored = [r for r in store.runs(study=study.store_name(quick), status="complete")
              if r.key in wanted]
    options = QUICK_SUITES if quick else SuiteOptions()
    for record in tqdm(stored, disable=not ctx.progress, desc=f"{study.name} suites",
                       unit="run", dynamic_ncols=True):
        evaluate_run(store, record, wanted[record.key], options, ctx.data_dir, skip_unfit=True)
    return len(stored)
