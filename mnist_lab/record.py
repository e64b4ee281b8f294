"""The run record: one typed object for every run, complete, diverged or failed.

A record holds what was asked (the config), what happened (status, history, final metrics,
timing, environment) and where it belongs (its study label, its checkpoint). It is built here
and only here, read through `metric(name)`, and stored as JSON with a schema version; records
written by earlier versions are upgraded on load by `upgrade`, the one place old names live.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import traceback as tb
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from .config import TrainConfig
from .errors import UserError
from .metrics import METRICS, Classification, Epoch, TestOutputs, Timing, metric

SCHEMA = 1  # 0: the untyped dict of mnist-lab before the record had a schema
# paused: a search trial between rungs, never stored; pruned: a trial its pruner stopped
STATUSES = ("complete", "diverged", "failed", "paused", "pruned")
# Run-level metrics that are not the last epoch's value
_SUMMARY = ("best_test_accuracy", "best_train_accuracy", "params", "epochs_run")
_CLASSIFICATION = ("macro_precision", "macro_recall", "macro_f1")
_TIMING = tuple(f.name for f in dataclasses.fields(Timing))
_MFLOPS: dict[str, float | None] = {}  # config key -> FLOPs per image: the architecture's


def _mflops(cfg: TrainConfig) -> float | None:
    """The config's model's forward FLOPs per image (None: classical, or cannot be built)."""
    from .models import build_model, forward_mflops, model_entry

    if cfg.key() not in _MFLOPS:
        try:
            torch_model = model_entry(cfg.model).kind == "torch"
            _MFLOPS[cfg.key()] = forward_mflops(build_model(cfg)) if torch_model else None
        except UserError:  # e.g. a model file that is gone: the figure is unknown, not an error
            _MFLOPS[cfg.key()] = None
    return _MFLOPS[cfg.key()]


@dataclass(frozen=True)
class SuiteResult:
    """What one evaluation suite measured on a run (suites.py): registered metrics for
    tables and comparisons, details (per corruption, per bin, per epsilon) for plots."""

    suite: str
    options: dict  # what it ran with (seed, images, epsilons): same options, not recomputed
    metrics: dict[str, float | None]
    details: dict  # JSON-ready
    created: str = ""

    def to_dict(self) -> dict:
        """JSON-ready."""
        return _json_safe(dataclasses.asdict(self))


@dataclass(frozen=True)
class StudyLabel:
    """Which study, block, variant and seed a run was trained for."""

    study: str
    block: str = ""
    variant: str = ""
    seed: int = 0


class _Outcome(Protocol):
    """What training hands over (train.Outcome), as this module needs it."""

    status: str
    params: int
    history: list[Epoch]
    classification: Classification | None
    test_outputs: TestOutputs | None
    timing: Timing
    env: dict


def new_run_id() -> str:
    """A sortable, unique run id: UTC time to the second, then 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunRecord:
    """One run: parameters (config), what was learned and measured, and where it belongs."""

    id: str
    key: str  # TrainConfig.key(): equal configs are the same experiment
    status: str  # complete | diverged | failed | pruned (a search trial stopped early)
    config: TrainConfig
    created: str  # ISO 8601, UTC
    params: int | None = None
    history: list[Epoch] = field(default_factory=list)
    classification: Classification | None = None  # final model on the test set
    timing: Timing = field(default_factory=Timing)
    env: dict = field(default_factory=dict)
    label: StudyLabel | None = None  # None for a single `mnist-lab train` run
    checkpoint: str | None = None  # absolute path of the safetensors weights
    error: str | None = None  # failed runs: the exception, one line
    traceback: str | None = None
    # What the model said about each test image: carried from the worker to the store, which
    # keeps it apart from the JSON (Store.outputs); None on records read back.
    outputs: TestOutputs | None = field(default=None, repr=False, compare=False)
    # A study worker's trained weights (a torch state dict), carried to the driver, which
    # writes them as the checkpoint; None once stored
    weights: dict | None = field(default=None, repr=False, compare=False)
    # Evaluation suites run on the stored model, by suite name; the store keeps them in a
    # table of their own and attaches them on reading
    suites: dict[str, SuiteResult] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_outcome(cls, cfg: TrainConfig, outcome: _Outcome,
                     label: StudyLabel | None = None) -> RunRecord:
        """The record of a run that trained to the end (complete or diverged)."""
        return cls(new_run_id(), cfg.key(), outcome.status, cfg, _now(), outcome.params,
                   outcome.history, outcome.classification, outcome.timing, outcome.env, label,
                   outputs=outcome.test_outputs)

    @classmethod
    def failed(cls, cfg: TrainConfig, error: BaseException,
               label: StudyLabel | None = None) -> RunRecord:
        """The record of a run that raised: the config and the error, no results."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return cls(new_run_id(), cfg.key(), "failed", cfg, _now(), label=label,
                   error=f"{type(error).__name__}: {first}",
                   traceback="".join(tb.format_exception(error, limit=5)))

    @property
    def model(self) -> str:
        """The model's registry name."""
        return self.config.model

    @property
    def dataset(self) -> str:
        """The dataset's name."""
        return self.config.dataset

    @property
    def study(self) -> str | None:
        """The study name the run is stored under, if any."""
        return self.label.study if self.label else None

    def metric(self, name: str) -> float | None:
        """A metric of the run, by its registered name; None where the run has none.

        Run-level metrics (best epoch, parameters, timing, macro scores) come from their
        fields; every per-epoch metric gives the last epoch's value.
        """
        if metric(name).suite:  # unknown names are an error, not a silent None
            result = self.suites.get(metric(name).suite)
            return result.metrics.get(name) if result else None
        if name in _TIMING:
            return getattr(self.timing, name)
        if name in _CLASSIFICATION:
            return getattr(self.classification, name) if self.classification else None
        if name == "params":
            return self.params
        if name == "mflops":
            return _mflops(self.config)
        if name == "epochs_run":
            return len(self.history)
        if name.startswith("best_"):
            values = [v for e in self.history if (v := getattr(e, name[5:])) is not None]
            return max(values, default=None)
        return getattr(self.history[-1], name) if self.history else None

    def summary(self) -> dict[str, float | None]:
        """The run-level figures by name: what tables and `--json` readers want first."""
        names = ("test_accuracy", "test_loss", "train_accuracy", "val_accuracy") + _SUMMARY
        return {n: self.metric(n) for n in names + ("wall_seconds",)}

    def to_dict(self) -> dict:
        """JSON-ready (NaN and inf become null), with `final`, the summary, for readers."""
        d = {"schema": SCHEMA, **{f.name: getattr(self, f.name)
                                  for f in dataclasses.fields(self)
                                  if f.name not in ("outputs", "weights", "suites")}}
        d |= {"config": self.config.to_dict(), "history": [e.to_dict() for e in self.history],
              "classification": self.classification and self.classification.to_dict(),
              "timing": dataclasses.asdict(self.timing),
              "label": self.label and dataclasses.asdict(self.label), "final": self.summary()}
        if self.suites:
            d["suites"] = {name: s.to_dict() for name, s in self.suites.items()}
        return _json_safe(d)

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        """Rebuild a record from its JSON, whichever schema version wrote it."""
        d = upgrade(d)
        return cls(
            id=d["id"], key=d["key"], status=d["status"],
            config=TrainConfig.from_dict(d["config"]), created=d["created"],
            params=d.get("params"), history=[Epoch(**e) for e in d.get("history") or []],
            classification=(Classification.from_dict(d["classification"])
                            if d.get("classification") else None),
            timing=Timing(**(d.get("timing") or {})), env=d.get("env") or {},
            label=StudyLabel(**d["label"]) if d.get("label") else None,
            checkpoint=d.get("checkpoint"), error=d.get("error"), traceback=d.get("traceback"),
            suites={k: SuiteResult(**v) for k, v in (d.get("suites") or {}).items()})


def _json_safe(value: object) -> object:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# Names the schema-0 history used for what METRICS now calls *_accuracy
_LEGACY_EPOCH_NAMES = {"train_acc": "train_accuracy", "val_acc": "val_accuracy",
                       "test_acc": "test_accuracy"}


def upgrade(d: dict) -> dict:
    """A stored record's JSON in the current schema: the one place old layouts are read.

    Schema 0 (no `schema` field) kept final metrics, timing and study labels at the top level
    and named per-epoch accuracies `*_acc`. Its key is kept as stored, so no run is orphaned.
    """
    if d.get("schema", 0) >= SCHEMA:
        return d
    history = [{_LEGACY_EPOCH_NAMES.get(k, k): v for k, v in e.items()}
               for e in d.get("history") or []]
    unknown = {k for e in history for k in e} - set(METRICS) - {"epoch"}
    if unknown:
        raise ValueError(f"run {d.get('id')}: unknown history fields {sorted(unknown)}")
    label = None
    if d.get("study"):
        label = {"study": d["study"], "block": d.get("block") or "",
                 "variant": d.get("variant") or "",
                 "seed": d.get("seed", d["config"].get("seed", 0))}
    return {**d, "schema": SCHEMA, "history": history, "classification": d.get("metrics"),
            "timing": {k: d.get(k) for k in _TIMING}, "label": label}
