"""What each CLI command does, given its parsed arguments; returns the exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .cli import config_from_args, write_json
from .data import load
from .errors import UserError
from .inference import Classifier, best_checkpoint
from .models import count_params, create_model, list_models, model_entry
from .preprocess import load_image, to_mnist
from .snapshot import epochs_done, snapshot_path
from .store import Store, check_writable, load_checkpoint
from .studies import Study, expand, load_study
from .train import evaluate, input_stats, resolve_device, train


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run, save its checkpoint, store its record."""
    cfg = config_from_args(args).validate()
    model_entry(cfg.model)  # unknown model: fail before loading anything
    runs_dir = check_writable(args.runs_dir)  # a read-only or full disk: fail before training
    data = load(cfg.dataset, args.data_dir)
    record, model = train(cfg, data, progress=not (args.no_progress or args.json))
    torch_model = model if isinstance(model, torch.nn.Module) else None
    with Store(runs_dir) as store:
        record = store.add_run(record, torch_model, cfg)
    if args.json:
        write_json(record)
    else:
        print(f"run {record['id']}: {record['status']}, {record['model']} "
              f"({record['params']:,} params), test accuracy {_pct(record['test_accuracy'])} "
              f"(best {_pct(record['best_test_accuracy'])}), {record['wall_seconds']:.1f} s")
        if record.get("checkpoint"):
            print(f"checkpoint: {record['checkpoint']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on its dataset's test set."""
    from .metrics import classification_metrics

    model, cfg = load_checkpoint(args.checkpoint)
    data = load(cfg.dataset, args.data_dir)
    device = resolve_device("auto")
    loss, acc, pred = evaluate(model.to(device), data.test, *input_stats(cfg), device)
    metrics = classification_metrics(data.test.labels.numpy(), pred)
    result = {"checkpoint": args.checkpoint, "model": cfg.model, "dataset": cfg.dataset,
              "test_loss": loss, "test_accuracy": acc, "params": count_params(model), **metrics}
    if args.json:
        write_json(result)
        return 0
    print(f"{cfg.model} on {cfg.dataset} test: accuracy {_pct(acc)}, loss {loss:.4f}, "
          f"macro F1 {metrics['macro_f1']:.4f}")
    pairs = ", ".join(f"{p['true']}→{p['pred']} ({p['count']})" for p in metrics["most_confused"])
    print(f"most confused (true→predicted): {pairs}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify image files with a checkpoint (default: the best stored run)."""
    images = [to_mnist(load_image(path)) for path in args.images]  # all checked before output
    checkpoint = args.checkpoint or best_checkpoint(Store(args.runs_dir))
    probs = Classifier(checkpoint).probabilities(np.stack(images))
    results = [{"file": path, "digit": int(p.argmax()), "probabilities": p.round(6).tolist()}
               for path, p in zip(args.images, probs, strict=False)]
    if args.json:
        write_json({"checkpoint": checkpoint, "predictions": results})
        return 0
    for r in results:
        top = " ".join(f"{d}:{p:.2f}" for d, p in enumerate(r["probabilities"]))
        print(f"{r['file']}: {r['digit']} ({r['probabilities'][r['digit']]:.1%})  [{top}]")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the model zoo."""
    rows = []
    for name in list_models():
        e = model_entry(name)
        params = count_params(create_model(name)) if e.kind == "torch" else None
        rows.append({"name": name, "kind": e.kind, "params": params, "source": e.source})
    if args.json:
        write_json({"models": rows})
        return 0
    for r in rows:
        params = f"{r['params']:>11,}" if r["params"] is not None else f"{'(fitted)':>11}"
        print(f"{r['name']:<16} {r['kind']:<9} {params}  {r['source']}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List stored runs, or show one."""
    store = Store(args.runs_dir)
    if args.action == "show":
        if not args.run_id:
            raise UserError("runs show needs a run id")
        record = store.get(args.run_id)
        if args.json:
            write_json(record)
            return 0
        keys = ("id", "status", "model", "dataset", "params", "test_accuracy",
                "best_test_accuracy", "epochs_run", "wall_seconds", "checkpoint", "created")
        for k in keys:
            print(f"{k:>20}: {record.get(k)}")
        for h in record["history"]:
            print(f"  epoch {h['epoch']:>3}: train {_pct(h.get('train_acc'))} "
                  f"test {_pct(h.get('test_acc'))} loss {h.get('train_loss') or 0:.4f}")
        return 0
    records = store.runs(study=args.study)
    if args.json:
        write_json({"runs": records})
        return 0
    for r in records:
        print(f"{r['id']}  {r['status']:<9} {r['model']:<16} {r['dataset']:<14} "
              f"{_pct(r['test_accuracy']):>7}  {r['wall_seconds'] or 0:8.1f} s  "
              f"{r.get('study') or ''}")
    print(f"{len(records)} run(s) in {store.root}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's or a checkpoint's model to ONNX or TorchScript, checked against PyTorch."""
    from .export import export_model, resolve_source  # onnx is imported only when used

    checkpoint, name = resolve_source(args.source, args.runs_dir)
    result = export_model(checkpoint, args.format, args.out, name)
    if args.json:
        write_json(result)
        return 0
    print(f"exported {result['model']} ({result['format']}): {result['path']}")
    print(f"max |difference| from PyTorch on {result['check_images']} check images: "
          f"{result['max_abs_diff']:.2e}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the draw-a-digit page and the prediction API until interrupted."""
    try:
        from .serve import serve  # FastAPI is an optional extra, imported only here
    except ImportError as e:
        missing = e.name or "FastAPI"
        raise UserError(f"serve needs {missing}: pip install 'mnist-lab[serve]'") from None
    serve(args.runs_dir, args.checkpoint, args.host, args.port)
    return 0


def _study_path(name: str) -> Path:
    path = Path(name)
    if path.suffix != ".toml" and not path.exists():
        path = Path("studies") / f"{name}.toml"
    return path


def _show(study: Study, store: Store, quick: bool) -> None:
    """Print every run of the study as stored or pending (with the epochs a snapshot keeps)."""
    from .runner import pending

    todo, keys = {r.config.key() for r in pending(study, store, quick)}, set()
    for r in expand(study, quick):
        key = r.config.key()
        keys.add(key)
        state = "stored"
        if key in todo:
            done = epochs_done(snapshot_path(store.root, key))
            state = f"pending ({done} of {r.config.epochs} epochs done)" if done else "pending"
        print(f"{r.block:<12} {r.variant:<32} seed {r.seed:<3} {state}")
    print(f"study {study.store_name(quick)}: {len(keys) - len(todo)} of {len(keys)} runs "
          f"stored, {len(todo)} to run")


def cmd_study(args: argparse.Namespace) -> int:
    """Run, report on, or show a study."""
    from .report import write_report
    from .runner import run_study

    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    study = load_study(_study_path(args.study))
    if args.action == "run":
        check_writable(args.runs_dir)  # fail fast on a read-only or full results folder
        if args.executor == "local":
            load(study.base.get("dataset", "mnist"), args.data_dir)  # and on bad data
    store = Store(args.runs_dir)
    name = study.store_name(args.quick)
    if args.action == "show":
        _show(study, store, args.quick)
        return 0
    if args.action == "run":
        counts = run_study(study, store, args.jobs, args.quick, args.executor, args.address,
                           args.data_dir, progress=not args.no_progress)
        print(f"study {name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        if args.json:
            write_json({"study": name, **counts})
        return 0
    out = Path(args.out) if args.out else store.root / "reports" / name.replace(":", "-")
    records = store.runs(study=name)
    if not records:
        raise UserError(f"no stored runs for study {name}; run `mnist-lab study run` first")
    path = write_report(study, records, out, args.quick)
    print(f"report: {path} and {path.with_suffix('.md')}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "models": cmd_models, "runs": cmd_runs, "study": cmd_study, "export": cmd_export,
            "serve": cmd_serve}
