"""What a worker does with one run: find its data, train it, hand back its record.

The same code trains a single `mnist-lab train` run in this process, a study's run in a local
worker process, and one on a Ray node, where the driver ships the dataset with the task. A
task is one run, or a pack: one config's seeds trained as one batched model (train_pack.py).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from torch import nn

from .config import RunContext, TrainConfig
from .data import Dataset, load
from .record import RunRecord, StudyLabel
from .train import train
from .train_pack import train_pack

Task = tuple[TrainConfig, RunContext, StudyLabel]  # run_one's arguments
PackTask = tuple[list[TrainConfig], list[RunContext], list[StudyLabel]]  # run_pack's

_DATA: dict[tuple[str, str | None], Dataset] = {}  # per process: load each dataset once


def dataset(name: str, ctx: RunContext) -> Dataset:
    """The dataset a run trains on, loaded once per process."""
    if (name, ctx.data_dir) not in _DATA:
        _DATA[(name, ctx.data_dir)] = load(name, ctx.data_dir)
    return _DATA[(name, ctx.data_dir)]


def execute(cfg: TrainConfig, ctx: RunContext, label: StudyLabel | None = None,
            data: Dataset | None = None) -> tuple[RunRecord, object]:
    """Train one config; return its record and the trained model.

    data: the dataset when the caller brings it (a Ray driver ships it); else it is loaded.
    """
    cfg.validate()
    snapshot = Path(ctx.snapshot) if ctx.snapshot else None
    outcome = train(cfg, data or dataset(cfg.dataset, ctx), ctx.progress, snapshot,
                    ctx.pause_after)
    return RunRecord.from_outcome(cfg, outcome, label), outcome.model


def _with_weights(record: RunRecord, model: object) -> RunRecord:
    """The record carrying a torch model's weights, for the driver's checkpoint."""
    if not isinstance(model, nn.Module):
        return record
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return dataclasses.replace(record, weights=weights)


def run_one(cfg: TrainConfig, ctx: RunContext, label: StudyLabel,
            data: Dataset | None = None) -> RunRecord:
    """A study worker's task: the run's record, carrying a torch model's weights for the
    driver's checkpoint; an exception becomes a 'failed' record."""
    try:
        return _with_weights(*execute(cfg, ctx, label, data))
    except Exception as e:  # noqa: BLE001 - a failed run is data, not a crash of the study
        return RunRecord.failed(cfg, e, label)


def run_pack(cfgs: list[TrainConfig], ctxs: list[RunContext], labels: list[StudyLabel],
             data: Dataset | None = None) -> list[RunRecord]:
    """A pack's records, each as run_one would return it. If the pack fails as a whole, its
    members train alone, each from its own snapshot, so one bad member costs only itself."""
    snapshots = [Path(c.snapshot) for c in ctxs] if all(c.snapshot for c in ctxs) else None
    try:
        outcomes = train_pack(cfgs, data or dataset(cfgs[0].dataset, ctxs[0]),
                              ctxs[0].progress, snapshots)
    except Exception as e:  # noqa: BLE001 - the members still get their chance alone
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mnist-lab: a pack of {len(cfgs)} {cfgs[0].model} runs failed ({first}); "
              "training them one by one", file=sys.stderr)
        return [run_one(*task, data) for task in zip(cfgs, ctxs, labels, strict=True)]
    return [_with_weights(RunRecord.from_outcome(c, o, label), o.model)
            for c, o, label in zip(cfgs, outcomes, labels, strict=True)]


def run_task(task: Task | PackTask, data: Dataset | None = None) -> RunRecord | list[RunRecord]:
    """A pool's unit of work: one run's record, or a pack's records."""
    return run_pack(*task, data) if isinstance(task[0], list) else run_one(*task, data)
