"""`mnist-lab study list | run | show | report`: studies from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cluster import connect
from .commands import table, write_json
from .config import RunContext
from .data import verify
from .ensemble import study_ensembles
from .errors import UserError
from .report import write_report
from .runner import Executor, pending, run_study
from .snapshot import epochs_done, snapshot_path
from .store import Store, check_writable
from .study import Study, expand, find_study, list_studies, load_study
from .tracking import LiveLog


def _list() -> None:
    """The shipped studies with their titles and sizes."""
    rows = []
    for name in list_studies():
        study = load_study(find_study(name))
        rows.append([name, str(len({r.config.key() for r in expand(study)})), study.title])
    print(table(["study", "runs", "title"], rows, right={1}))


STARTER = '''# A study of your own: `mnist-lab study run {name}.toml --quick` tries it in a minute,
# `mnist-lab study run {name}.toml -j 2` trains it, `mnist-lab study report {name}.toml`
# writes its report. Keys are TrainConfig fields (`mnist-lab train --help` lists them).
name = "{name}"
title = "{name}: what it asks"
source = "where the question comes from"
seeds = [0, 1, 2]            # every variant runs once per seed; reports give mean ± std

[base]                       # what every run shares (overrides of the train defaults)
epochs = 5

[[blocks]]
name = "main"
title = "The question, as a table"
baseline = "default"         # each variant is tested against this one (t-test over seeds)
table = ["test_accuracy", "best_test_accuracy", "wall_seconds"]
plots = [{{ kind = "curves", metrics = ["train_accuracy", "test_accuracy"] }}]

[[blocks.variants]]
name = "default"             # the defaults: compact_step3, SGD + one-cycle, light augmentation

[[blocks.variants]]
name = "no-augmentation"
rotate = 0.0
translate = 0.0

# [blocks.targets]           # a bar per variant: reported met or missed, with a t-test
# default = 0.99

# [[blocks]]                 # trains nothing: combines the stored seeds' test outputs
# name = "ensemble"
# ensembles = [{{ name = "both", members = ["default", "no-augmentation"] }}]
'''


def _new(name: str, source: str | None) -> Path:
    """Write NAME.toml here: a commented starter, or a copy of a shipped study renamed."""
    path = Path(f"{name}.toml")
    if path.exists():
        raise UserError(f"{path} exists; pick another name or remove it")
    if source:
        text = find_study(source).read_text()
        text = text.replace(f'name = "{load_study(find_study(source)).name}"',
                            f'name = "{name}"', 1)
    else:
        text = STARTER.format(name=name)
    path.write_text(text)
    load_study(path)  # what it wrote is a valid study
    return path


def _show(study: Study, store: Store, quick: bool) -> None:
    """Print every run of the study as stored or pending (with the epochs a snapshot keeps)."""
    todo, keys, rows = {r.config.key() for r in pending(study, store, quick)}, set(), []
    for r in expand(study, quick):
        key = r.config.key()
        keys.add(key)
        state = "stored"
        if key in todo:
            done = epochs_done(snapshot_path(store.root, key))
            state = f"pending ({done} of {r.config.epochs} epochs done)" if done else "pending"
        rows.append([r.block, r.variant, str(r.seed), state])
    print(table(["block", "variant", "seed", "state"], rows))
    print(f"study {study.store_name(quick)}: {len(keys) - len(todo)} of {len(keys)} runs "
          f"stored, {len(todo)} to run")


def _run(study: Study, args: argparse.Namespace) -> None:
    """Train what is not yet stored; data and results folder are checked before anything."""
    for name in sorted({r.config.dataset for r in expand(study, args.quick)}):
        verify(name, args.data_dir)  # Ray workers too get the driver's data
    if args.executor == "ray":
        connect(args.address)  # a cluster that cannot be joined: fail before the store is made
    live = LiveLog(args.mlflow) if args.mlflow else None  # so must an unreachable tracker
    store = Store(check_writable(args.runs_dir))
    ctx = RunContext(data_dir=args.data_dir, progress=not args.no_progress)
    executor = Executor(args.executor, args.jobs, args.address, args.gpus_per_run, args.pack)
    counts = run_study(study, store, ctx, args.quick, executor, on_stored=live)
    name = study.store_name(args.quick)
    print(f"study {name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if args.json:
        write_json({"study": name, **counts})


def _report(study: Study, args: argparse.Namespace) -> None:
    """Write the report from stored runs only."""
    store = Store(args.runs_dir)
    name = study.store_name(args.quick)
    records = store.runs(study=name)
    if not records:
        hint = ("; its quick runs are stored: add --quick"
                if not args.quick and f"{name}:quick" in store.studies() else
                "; run `mnist-lab study run` first")
        raise UserError(f"no stored runs for study {name} in {store.root}{hint}")
    out = Path(args.out) if args.out else store.root / "reports" / name.replace(":", "-")
    path = write_report(study, records, out, args.quick,
                        study_ensembles(store, study, args.quick))
    print(f"report: {path} and {path.with_suffix('.md')}")


def cmd_study(args: argparse.Namespace) -> int:
    """List the shipped studies, or run, show or report on one."""
    if args.action == "list":
        _list()
        return 0
    if args.action == "new":
        if not args.study:
            raise UserError("study new needs a name: mnist-lab study new NAME [--from STUDY]")
        print(f"wrote {_new(args.study, args.source)}")
        return 0
    if not args.study:
        raise UserError(f"study {args.action} needs a study: a file, or one of "
                        f"{', '.join(list_studies())}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.gpus_per_run < 0 or (args.gpus_per_run and args.executor != "ray"):
        raise UserError("--gpus-per-run takes a number >= 0, with --executor ray")
    if args.mlflow and args.action != "run":
        raise UserError("--mlflow goes with `study run`; to log stored runs: "
                        "mnist-lab runs export --mlflow URI --study NAME")
    study = load_study(find_study(args.study))
    if args.block:
        if args.action == "report":
            raise UserError("--block goes with `study run` and `study show`; a report "
                            "covers every block")
        study = study.only(args.block)
    if args.action == "run":
        _run(study, args)
    elif args.action == "show":
        _show(study, Store(args.runs_dir), args.quick)
    else:
        _report(study, args)
    return 0
