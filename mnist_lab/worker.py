"""What a worker does with one run: find its data, train it, hand back its record.

The same code trains a single `mnist-lab train` run in this process, a study's run in a local
worker process, and one on a Ray node, where the driver ships the dataset with the task.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from .config import RunContext, TrainConfig
from .data import Dataset, load
from .record import RunRecord, StudyLabel
from .train import train

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


def run_one(cfg: TrainConfig, ctx: RunContext, label: StudyLabel,
            data: Dataset | None = None) -> RunRecord:
    """A study worker's task: the run's record, carrying a torch model's weights for the
    driver's checkpoint; an exception becomes a 'failed' record."""
    try:
        record, model = execute(cfg, ctx, label, data)
        if isinstance(model, nn.Module):
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            record = dataclasses.replace(record, weights=weights)
        return record
    except Exception as e:  # noqa: BLE001 - a failed run is data, not a crash of the study
        return RunRecord.failed(cfg, e, label)
