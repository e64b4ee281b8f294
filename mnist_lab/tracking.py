"""MLflow, the tracker people already run: stored runs logged as MLflow runs.

MLflow is an optional extra, imported here only once a command is given `--mlflow`, so importing
mnist_lab never loads it. Each record becomes one MLflow run: every config field a param, every
per-epoch history value a metric at its epoch, the run-level metrics (summary, timing, suites)
at the last epoch, the labels as tags, sent in one batched request. The `mnist_lab.run_id` tag
makes exporting idempotent: a run MLflow holds finished is left alone, one an interrupted export
left RUNNING is replaced. A study's report goes once, to a run of its own in the experiment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .errors import UserError
from .metrics import METRICS, Epoch
from .record import RunRecord

HINT = "MLflow is an optional extra: pip install 'mnist-lab[mlflow]'"
RUN_ID_TAG = "mnist_lab.run_id"
REPORT_TAG = "mnist_lab.report"  # on the one run per experiment that holds a study's report
DEFAULT_EXPERIMENT = "mnist-lab"  # where single runs (no study) go
_EPOCH_METRICS = tuple(f.name for f in dataclasses.fields(Epoch) if f.name != "epoch")
_RUN_METRICS = tuple(name for name in METRICS if name not in _EPOCH_METRICS)
_DONE = ("FINISHED", "FAILED", "KILLED")  # what an export ends with; RUNNING: cut off
_TAGGED = "tags.`{}` LIKE '%'"  # runs that have the tag: matched in Python, no quoting needed
_STATUS = {"complete": "FINISHED", "diverged": "FINISHED", "failed": "FAILED",
           "pruned": "KILLED"}  # pruned: a search trial its pruner stopped


@dataclasses.dataclass(frozen=True)
class Payload:
    """One record as MLflow takes it: what log_batch sends, plus the run's name, times and
    status."""

    name: str
    params: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp (ms), step
    tags: dict[str, str]
    start_ms: int
    end_ms: int
    status: str  # FINISHED | FAILED


def _finite(x: object) -> bool:
    # NaN and inf are stored as null, so a live run logs what a later export of it would
    return isinstance(x, int | float) and math.isfinite(x)


def _ms(iso: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time; now for one that is not."""
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return int(datetime.now(UTC).timestamp() * 1000)


def _param(value: object) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def payload(record: RunRecord) -> Payload:
    """The MLflow run of a record; epochs are timed from the run's start (created is its end)."""
    end_ms = _ms(record.created)
    start_ms = end_ms - round(1000 * (record.timing.wall_seconds or 0))
    metrics, clock = [], start_ms
    for e in record.history:
        clock = min(end_ms, clock + round(1000 * (e.seconds or 0)))
        metrics += [(k, float(v), clock, e.epoch) for k in _EPOCH_METRICS
                    if _finite(v := getattr(e, k))]
    last = record.history[-1].epoch if record.history else 0
    metrics += [(n, float(v), end_ms, last) for n in _RUN_METRICS
                if _finite(v := record.metric(n))]
    tags = {RUN_ID_TAG: record.id, "mnist_lab.status": record.status,
            "mnist_lab.key": record.key, "mnist_lab.model": record.model,
            "mnist_lab.dataset": record.dataset}
    if record.label:
        tags |= {f"mnist_lab.{k}": str(v) for k, v in dataclasses.asdict(record.label).items()}
    if record.error:
        tags["mnist_lab.error"] = record.error[:8000]  # MLflow's limit on a tag's value
    label = record.label
    name = f"{label.block}/{label.variant}/seed {label.seed}" if label else record.id
    return Payload(name, {k: _param(v) for k, v in record.config.to_dict().items()}, metrics,
                   tags, start_ms, end_ms, _STATUS.get(record.status, "FINISHED"))


def experiment_for(record: RunRecord) -> str:
    """The default experiment of a record: its study, else mnist-lab."""
    return record.study or DEFAULT_EXPERIMENT


def report_folder(runs_dir: Path, study: str) -> Path:
    """Where `study report` writes a study's report by default (quick runs: NAME-quick)."""
    return runs_dir / "reports" / study.replace(":", "-")


def _import():
    """The mlflow module, or the one-line hint to install it."""
    # a lab tool does not send usage data on its user's behalf; MLFLOW_DISABLE_TELEMETRY=false
    # still turns it on. Read when mlflow is imported, so set before.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # set_terminated would print two links to stdout (ours: --json), fetching the run to do so
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        import mlflow
        import mlflow.entities
    except ImportError:
        raise UserError(HINT) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines among ours
    return mlflow


@contextlib.contextmanager
def patience(retries: int, timeout: int) -> Iterator[None]:
    """MLflow's HTTP retries and timeout for a block: its own (7 retries with backoff) wait
    minutes on a dead server. A user's own MLFLOW_HTTP_REQUEST_* settings win."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries, "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout}
    unset = [k for k in names if k not in os.environ]
    os.environ.update({k: str(names[k]) for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


def _reason(e: Exception) -> str:
    """What went wrong, in a few words: MLflow's messages run to paragraphs."""
    text = " ".join(str(e).split())
    if "MLFLOW_ALLOW_FILE_STORE" in text:
        return ("MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true; use "
                "sqlite:///PATH/mlflow.db or a tracking server")
    if cause := re.search(r"\[Errno -?\d+\] [^'\")]+|Failed to resolve '[^']+'|Read timed out",
                          text):
        return cause[0].strip()
    if "unsupported URI" in text:
        return ("not a tracking URI MLflow takes (http://HOST:PORT, https://..., "
                "sqlite:///PATH, postgresql://..., databricks)")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first if len(first) <= 200 else first[:197] + "..."


class Tracker:
    """A checked connection to one MLflow tracking URI that logs records as MLflow runs."""

    def __init__(self, uri: str):
        mlflow = _import()
        self.uri, self._entities = uri, mlflow.entities
        # OSError: also requests' errors, which MLflow does not always wrap, and artifacts'
        self._errors = (mlflow.exceptions.MlflowException, OSError, ValueError)
        self._experiments: dict[str, str] = {}  # name -> id
        self._known: dict[str, dict[str, tuple[str, str]]] = {}  # id -> ours -> (theirs, status)
        with patience(retries=0, timeout=10), self._calling():  # unreachable: fail now
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """MLflow's and the transport's errors as one line naming the URI."""
        try:
            yield
        except self._errors as e:
            raise UserError(f"MLflow at {self.uri}: {_reason(e)}") from None

    def experiment_id(self, name: str) -> str:
        """The id of an experiment, created if MLflow has none of that name."""
        if name not in self._experiments:
            with self._calling():
                found = self.client.get_experiment_by_name(name)
                if found is not None and found.lifecycle_stage == "deleted":
                    raise UserError(f"MLflow experiment {name!r} at {self.uri} is deleted; "
                                    "restore it, or pick another with --experiment")
                self._experiments[name] = (found.experiment_id if found else
                                           self.client.create_experiment(name))
        return self._experiments[name]

    def _runs(self, experiment_id: str) -> dict[str, tuple[str, str]]:
        """Our run id -> (MLflow run id, status) of the experiment's exported runs, one search
        (paged) per experiment rather than one per run."""
        if experiment_id not in self._known:
            known, token = {}, None
            with self._calling():
                while True:
                    page = self.client.search_runs([experiment_id], _TAGGED.format(RUN_ID_TAG),
                                                   max_results=1000, page_token=token)
                    for run in page:
                        ours = run.data.tags[RUN_ID_TAG]
                        if known.get(ours, ("", ""))[1] not in _DONE:  # a finished one wins
                            known[ours] = (run.info.run_id, run.info.status)
                    if not (token := page.token):
                        break
            self._known[experiment_id] = known
        return self._known[experiment_id]

    def export(self, record: RunRecord, experiment: str | None = None,
               checkpoint: bool = False) -> bool:
        """Log one record as an MLflow run; False if MLflow holds it, finished, already."""
        eid = self.experiment_id(experiment or experiment_for(record))
        known = self._runs(eid)
        if known.get(record.id, ("", ""))[1] in _DONE:
            return False
        p, e = payload(record), self._entities
        with self._calling():
            if record.id in known:  # an export that was cut off: replaced whole
                self.client.delete_run(known.pop(record.id)[0])
            # the id tag goes with the run's creation, so no run of ours is ever untagged
            run_id = self.client.create_run(eid, p.start_ms, {RUN_ID_TAG: record.id},
                                            p.name).info.run_id
            self.client.log_batch(run_id, [e.Metric(*m) for m in p.metrics],
                                  [e.Param(k, v) for k, v in p.params.items()],
                                  [e.RunTag(k, v) for k, v in p.tags.items()])
            if checkpoint and record.checkpoint:
                self.client.log_artifact(run_id, record.checkpoint, "checkpoint")
            self.client.set_terminated(run_id, p.status, p.end_ms)
        known[record.id] = (run_id, p.status)
        return True

    def log_report(self, study: str, folder: Path, experiment: str | None = None) -> None:
        """Log a study's report (Markdown, HTML, plots) to the experiment's report run, made
        once; logging again replaces its files with the report as it is now."""
        eid = self.experiment_id(experiment or study)
        files = sorted(folder.glob("*.png")) + [folder / "report.md", folder / "report.html"]
        with self._calling():
            runs = self.client.search_runs([eid], _TAGGED.format(REPORT_TAG))
            run = next((r for r in runs if r.data.tags[REPORT_TAG] == study), None)
            run_id = run.info.run_id if run else self.client.create_run(
                eid, tags={REPORT_TAG: study}, run_name=f"report: {study}").info.run_id
            for path in files:
                if path.is_file():
                    self.client.log_artifact(run_id, str(path), "report")
            self.client.set_terminated(run_id, "FINISHED")


@dataclasses.dataclass
class Exported:
    """What an export did: runs logged, runs MLflow had already, studies whose report went."""

    exported: int = 0
    already: int = 0
    reports: list[str] = dataclasses.field(default_factory=list)


def export_runs(tracker: Tracker, records: list[RunRecord], runs_dir: Path,
                experiment: str | None = None, checkpoints: bool = False) -> Exported:
    """Log each record not yet in MLflow, then the report of each of their studies that has
    one in `<runs_dir>/reports/`."""
    done = Exported()
    for record in records:
        if tracker.export(record, experiment, checkpoints):
            done.exported += 1
        else:
            done.already += 1
    for study in sorted({r.study for r in records if r.study}):
        if (report_folder(runs_dir, study) / "report.md").is_file():
            tracker.log_report(study, report_folder(runs_dir, study), experiment)
            done.reports.append(study)
    return done


class LiveLog:
    """`--mlflow` on train and study run: each run logged as soon as it is stored. A tracker
    failure then warns once and stops the logging; the run is stored, and `runs export`
    catches up later."""

    def __init__(self, uri: str):
        self.tracker = Tracker(uri)  # unreachable or not installed: fail before training
        self.failed = False

    def __call__(self, record: RunRecord) -> None:
        if self.failed:
            return
        try:
            with patience(retries=1, timeout=30):  # a dead server must not stall training
                self.tracker.export(record)
        except Exception as e:  # whatever the tracker does, the stored run comes first
            self.failed = True
            later = f"--study {record.study}" if record.study else record.id
            why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            print(f"mnist-lab: warning: run {record.id} is stored but not logged to MLflow "
                  f"({' '.join(why.split())}); logging stops here, log later with "
                  f"`mnist-lab runs export {later} --mlflow {self.tracker.uri}`",
                  file=sys.stderr)
