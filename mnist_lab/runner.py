"""Execute a study's runs: in this process, in a local process pool, or on a Ray cluster.

Workers only compute: each returns its run record to the driver, which alone writes the store,
so no shared filesystem is needed. Runs whose config key is already stored (complete or
diverged) are skipped, so re-running resumes; local runs also keep a snapshot after every epoch,
so a killed study loses at most an epoch of each run in flight (Ray runs restart theirs).
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from .config import TrainConfig
from .data import Dataset, load
from .snapshot import snapshot_path
from .store import Store
from .studies import Run, Study, expand

_DATA: dict[str, Dataset] = {}  # per worker process: load each dataset once
TRAIN_IMAGES = 60_000  # training set size of MNIST and Fashion-MNIST alike


def run_one(config: dict, data_dir: str | None = None, snapshot: str | None = None) -> dict:
    """Train one config and return its record; an exception becomes a 'failed' record.

    snapshot: the file that keeps the run's progress between epochs (see snapshot.py).
    """
    from .train import train  # imported in the worker, after its thread count is set

    cfg = TrainConfig.from_dict(config)
    try:
        if cfg.threads:
            import torch
            torch.set_num_threads(cfg.threads)
        if cfg.dataset not in _DATA:
            _DATA[cfg.dataset] = load(cfg.dataset, data_dir)
        record, _ = train(cfg, _DATA[cfg.dataset], snapshot=Path(snapshot) if snapshot else None)
        return record
    except Exception as e:  # noqa: BLE001 - a failed run is data, not a crash of the study
        return failed_record(cfg, e)


def failed_record(cfg: TrainConfig, error: BaseException) -> dict:
    """A record for a run that raised: the config, the error, no results."""
    now = datetime.now(UTC)
    return {
        "id": now.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex(), "key": cfg.key(),
        "status": "failed", "model": cfg.model, "dataset": cfg.dataset, "params": None,
        "test_accuracy": None, "history": [], "config": cfg.to_dict(),
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(limit=5), "wall_seconds": None,
        "created": now.isoformat(timespec="seconds"),
    }


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


def _local(runs: list[Run], jobs: int, data_dir: str | None,
           root: Path) -> Iterator[tuple[Run, dict]]:
    def args(run: Run) -> tuple[dict, str | None, str]:
        return run.config.to_dict(), data_dir, str(snapshot_path(root, run.config.key()))
    if jobs == 1:
        for run in runs:
            yield run, run_one(*args(run))
        return
    # spawn, not fork: a forked child inherits torch's thread pool in an unusable state.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_one, *args(r)): r for r in runs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _ray(runs: list[Run], address: str | None, threads: int,
         data_dir: str | None) -> Iterator[tuple[Run, dict]]:
    try:
        import ray
    except ImportError:
        from .errors import UserError
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, **({} if address else {"num_cpus": os.cpu_count()}))
    remote = ray.remote(num_cpus=threads)(run_one)
    refs = {remote.remote(r.config.to_dict(), data_dir): r for r in runs}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        yield refs.pop(ready[0]), ray.get(ready[0])


def run_study(study: Study, store: Store, jobs: int = 1, quick: bool = False,
              executor: str = "local", address: str | None = None,
              data_dir: str | None = None, progress: bool = True) -> dict[str, int]:
    """Run every pending run of the study; store each record as it arrives; count statuses."""
    todo = pending(study, store, quick)
    # N workers share the cores: each gets cores // N threads so they do not oversubscribe.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    for run in todo:
        run.config.threads = threads
    results = (_ray(todo, address, threads, data_dir) if executor == "ray"
               else _local(todo, jobs, data_dir, store.root))
    unique = {r.config.key() for r in expand(study, quick)}  # blocks may share a run
    counts = {"skipped": len(unique) - len(todo)}
    for run, record in tqdm(results, total=len(todo), disable=not progress, desc=study.name,
                            unit="run", dynamic_ncols=True):
        record.update(block=run.block, variant=run.variant, seed=run.seed)
        store.add(record, study=study.store_name(quick))
        snapshot_path(store.root, record["key"]).unlink(missing_ok=True)  # stored: not needed
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts
