"""Results store: one SQLite database of run records, plus safetensors checkpoints beside it.

A run is written in one transaction when it ends (complete, diverged or failed), so a crash
never leaves half a run. WAL mode and a busy timeout let several processes write at once.
Checkpoints are safetensors files (weights only; loading never executes code) whose metadata
holds the config needed to rebuild the model (a model file's only from the bytes it names).
Records go in and come out as `RunRecord`s.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .config import TrainConfig
from .errors import UserError
from .metrics import TestOutputs
from .models import build_model, model_entry
from .record import RunRecord, SuiteResult
from .user_models import verify_source

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,            -- TrainConfig.key(): equal configs, same experiment
    study TEXT,                   -- study name, NULL for single runs
    status TEXT NOT NULL,         -- complete | diverged | failed
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    test_accuracy REAL,
    created TEXT NOT NULL,
    record TEXT NOT NULL          -- the whole run record as JSON
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (key);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study);
CREATE TABLE IF NOT EXISTS outputs (
    id TEXT PRIMARY KEY,          -- the run's id
    probabilities BLOB NOT NULL,  -- test-set class probabilities, float16 [N, classes], .npy
    labels BLOB NOT NULL          -- the test images' true classes, uint8 [N], .npy
);
CREATE TABLE IF NOT EXISTS suites (
    id TEXT NOT NULL,             -- the run's id
    suite TEXT NOT NULL,          -- corruptions | calibration | adversarial | explanations
    result TEXT NOT NULL,         -- the SuiteResult as JSON
    PRIMARY KEY (id, suite)
);
"""


def default_runs_dir() -> Path:
    """$MNIST_LAB_RUNS, else ./runs."""
    return Path(os.environ.get("MNIST_LAB_RUNS", "runs"))


def _why(root: Path, e: Exception) -> str:
    """The error, plus the likely cause SQLite hides behind 'disk I/O error': a full disk."""
    if isinstance(e, OSError) and e.errno not in (None, errno.ENOSPC):
        return str(e)  # read-only, permission denied...: the error already says it all
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return str(e)
    return f"{e} (disk full: {free // 1024} KiB free)" if free < 1 << 20 else str(e)


def check_writable(root: str | Path | None = None) -> Path:
    """Fail now, not after hours of training, if the results folder cannot take a run."""
    root = Path(root) if root is not None else default_runs_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root) as f:  # a real write: root ignores mode bits
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"results folder {root} is not writable: {_why(root, e)}") from None
    return root


class Store:
    """Run records in `<root>/runs.db`, checkpoints in `<root>/checkpoints/`."""

    def __init__(self, root: str | Path | None = None):
        # absolute: records name their checkpoint by path, and must work from any directory
        self.root = (Path(root) if root is not None else default_runs_dir()).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.root / "runs.db", timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"cannot open the results store in {self.root}: "
                            f"{_why(self.root, e)}") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def checkpoint_path(self, run_id: str) -> Path:
        """Where the checkpoint of a run lives."""
        return self.root / "checkpoints" / f"{run_id}.safetensors"

    def add(self, record: RunRecord) -> None:
        """Insert one finished run and its test outputs in one transaction, replacing failed
        attempts at the same config."""
        study = record.study
        try:
            with self.db:  # one transaction
                self.db.execute("DELETE FROM runs WHERE key = ? AND study IS ? AND "
                                "status = 'failed'", (record.key, study))
                self.db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.key, study, record.status, record.model,
                     record.dataset, record.metric("test_accuracy"), record.created,
                     json.dumps(record.to_dict())))
                if record.outputs is not None:
                    self.db.execute("INSERT INTO outputs VALUES (?, ?, ?)",
                                    (record.id, _npy(record.outputs.probabilities),
                                     _npy(record.outputs.labels)))
        except sqlite3.Error as e:
            raise UserError(f"cannot write to the results store {self.root}: "
                            f"{_why(self.root, e)}") from None

    def add_run(self, record: RunRecord, model: torch.nn.Module | None = None) -> RunRecord:
        """Store a finished run with its weights (the model, or the state dict a study worker
        sent in the record): checkpoint first, then the record that names it; a failure
        leaves neither. Returns the record as stored."""
        path, weights = None, model if model is not None else record.weights
        if weights is not None and record.status == "complete":
            path = self.checkpoint_path(record.id)
            save_checkpoint(path, weights, record.config)
            record = dataclasses.replace(record, checkpoint=str(path), weights=None)
        try:
            self.add(record)
        except UserError:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        return record

    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Run records, oldest first, optionally filtered."""
        sql, args = "SELECT record FROM runs WHERE 1=1", []
        if study is not None:
            sql, args = sql + " AND study = ?", args + [study]
        if status is not None:
            sql, args = sql + " AND status = ?", args + [status]
        rows = self.db.execute(sql + " ORDER BY created, id", args).fetchall()
        suites: dict[str, dict[str, SuiteResult]] = {}
        for run_id, suite, result in self.db.execute("SELECT id, suite, result FROM suites"):
            suites.setdefault(run_id, {})[suite] = SuiteResult(**json.loads(result))
        return [dataclasses.replace(r, suites=suites.get(r.id, {}))
                for r in (RunRecord.from_dict(json.loads(j)) for (j,) in rows)]

    def add_suite(self, run_id: str, result: SuiteResult) -> None:
        """Store (or replace) what one evaluation suite measured on a run."""
        try:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO suites VALUES (?, ?, ?)",
                                (run_id, result.suite, json.dumps(result.to_dict())))
        except sqlite3.Error as e:
            raise UserError(f"cannot write to the results store {self.root}: "
                            f"{_why(self.root, e)}") from None

    def _suites_of(self, run_id: str) -> dict[str, SuiteResult]:
        rows = self.db.execute("SELECT suite, result FROM suites WHERE id = ?", (run_id,))
        return {suite: SuiteResult(**json.loads(result)) for suite, result in rows}

    def outputs(self, run_id: str) -> TestOutputs | None:
        """A run's stored test outputs, or None (runs stored before they were kept, and failed
        runs, have none)."""
        row = self.db.execute("SELECT probabilities, labels FROM outputs WHERE id = ?",
                              (run_id,)).fetchone()
        if row is None:
            return None
        return TestOutputs(*(np.load(io.BytesIO(blob), allow_pickle=False) for blob in row))

    def studies(self) -> list[str]:
        """Names of the studies with stored runs (quick ones as NAME:quick)."""
        rows = self.db.execute("SELECT DISTINCT study FROM runs WHERE study IS NOT NULL")
        return sorted(s for (s,) in rows)

    def get(self, run_id: str) -> RunRecord:
        """One record by id or unique id prefix."""
        rows = self.db.execute("SELECT record FROM runs WHERE substr(id, 1, length(?1)) = ?1",
                               (run_id,)).fetchall()
        if len(rows) != 1:
            raise UserError(f"{'no' if not rows else 'more than one'} run matches {run_id!r}")
        record = RunRecord.from_dict(json.loads(rows[0][0]))
        return dataclasses.replace(record, suites=self._suites_of(record.id))

    def checkpoint_of(self, source: str) -> tuple[str, str]:
        """(run id, checkpoint path) of a stored run's id or unique prefix."""
        try:
            record = self.get(source)
        except UserError as e:
            raise UserError(f"{source}: no such checkpoint file, and {e}") from None
        if model_entry(record.model).kind != "torch":
            raise UserError(f"run {record.id} is a scikit-learn model ({record.model}); only "
                            "torch models have checkpoints")
        if not record.checkpoint:
            raise UserError(f"run {record.id} has no checkpoint (status {record.status})")
        return record.id, record.checkpoint

    def best_checkpoint(self) -> str:
        """Path of the stored checkpoint with the highest test accuracy."""
        runs = [r for r in self.runs(status="complete") if r.checkpoint]
        if not runs:
            raise UserError(f"no stored checkpoint in {self.root}; train one or pass "
                            "--checkpoint")
        return max(runs, key=lambda r: r.metric("test_accuracy") or 0).checkpoint

    def done_keys(self, study: str | None = None) -> set[str]:
        """Keys of runs that need no re-run (complete or diverged; failed ones are retried)."""
        sql = "SELECT key FROM runs WHERE status IN ('complete', 'diverged', 'pruned')"
        args: list = []
        if study is not None:
            sql, args = sql + " AND study = ?", [study]
        return {k for (k,) in self.db.execute(sql, args)}


def _npy(array: np.ndarray) -> bytes:
    """An array as .npy bytes: dtype and shape travel with the data, and load without pickle."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def find_checkpoint(source: str, runs_dir: str | Path | None = None) -> tuple[str, str]:
    """(name, checkpoint path) of a checkpoint file, or of a stored run's id or prefix.

    Every command that loads a model takes either; a file never opens (or creates) a store.
    """
    path = Path(source)
    if path.suffix == ".safetensors" or path.is_file():
        return path.stem, str(path)
    with Store(runs_dir) as store:
        return store.checkpoint_of(source)


def save_checkpoint(path: Path, model: torch.nn.Module | dict, cfg: TrainConfig) -> None:
    """Write weights (a model or its state dict) + config atomically (temporary file, then
    rename)."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={"mnist_lab_config": json.dumps(cfg.to_dict())})
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {path}: {_why(path.parent, e)}") from None


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a model from a checkpoint; a file that is not one gives a UserError."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        cfg = TrainConfig.from_dict(json.loads(meta["mnist_lab_config"])).validate()
        if cfg.model_source:  # a model file: executed only as it was when trained
            verify_source(cfg.model_source, f"checkpoint {path}")
        model = build_model(cfg)
        model.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{path}: not an mnist-lab checkpoint ({type(e).__name__})") from None
    return model.eval(), cfg
