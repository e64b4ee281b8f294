"""`mnist-lab runs export --mlflow URI`: stored runs logged to MLflow, each once."""

from __future__ import annotations

import argparse

from .commands import write_json
from .errors import UserError
from .store import Store
from .tracking import Tracker, export_runs


def cmd_runs_export(args: argparse.Namespace) -> int:
    """Log stored runs (all, a study's, or the ones named) as MLflow runs not yet there."""
    if not args.mlflow:
        raise UserError("runs export needs --mlflow URI: a tracking server "
                        "(http://HOST:PORT) or a local sqlite:///PATH/mlflow.db")
    if args.study and args.run_ids:
        raise UserError("runs export takes --study NAME or run ids, not both")
    store = Store(args.runs_dir)
    records = ([store.get(run_id) for run_id in args.run_ids] if args.run_ids
               else store.runs(study=args.study))
    if not records:
        which = f" of study {args.study}" if args.study else ""
        raise UserError(f"no stored runs{which} in {store.root}")
    tracker = Tracker(args.mlflow)  # after the records: a bad run id needs no server
    done = export_runs(tracker, records, store.root, args.experiment, args.checkpoints)
    if args.json:
        write_json({"mlflow": args.mlflow, "exported": done.exported,
                    "already_there": done.already, "reports": done.reports})
        return 0
    reports = f"; report of {', '.join(done.reports)}" if done.reports else ""
    print(f"{done.exported} exported, {done.already} already there, to MLflow at "
          f"{args.mlflow}{reports}")
    return 0
