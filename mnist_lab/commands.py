"""What each single-run CLI command does, given its parsed arguments; returns the exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from .config import RunContext, TrainConfig
from .data import input_stats, load
from .errors import UserError
from .evaluate import evaluate, resolve_device
from .inference import Classifier
from .metrics import METRICS, classify
from .models import build_model, count_params, create_model, list_models, model_entry
from .preprocess import load_image, to_mnist
from .presets import preset_settings
from .record import RunRecord
from .store import Store, check_writable, find_checkpoint, load_checkpoint
from .tracking import LiveLog
from .user_models import resolve_model
from .worker import dataset, execute


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed `train` flags: the defaults, then the preset's settings, then
    the flags given (only those are in the namespace)."""
    values = preset_settings(args.preset) if getattr(args, "preset", None) else {}
    values |= {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if hasattr(args, f.name)}  # not model_source: no flag sets it
    if "model_kwargs" in values:
        values["model_kwargs"] = dict(values["model_kwargs"])
    return TrainConfig(**values)


def write_json(obj: object) -> None:
    """One JSON object on stdout."""
    json.dump(obj, sys.stdout, default=str)
    sys.stdout.write("\n")


def _show(name: str, x: float | None) -> str:
    return METRICS[name].format(x)


def table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Rows under a header, columns padded to their widest cell (right-aligned where asked)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(header)] + [line(r) for r in rows])


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run, save its checkpoint, store its record."""
    cfg = resolve_model(config_from_args(args)).validate()  # a model file: its path and hash
    build_model(cfg)  # unknown model, bad arguments, a model file that fails: before the data
    ctx = RunContext(data_dir=args.data_dir, progress=not (args.no_progress or args.json))
    dataset(cfg.dataset, ctx)  # bad data: fail before the results folder is made
    runs_dir = check_writable(args.runs_dir)  # a read-only or full disk: fail before training
    live = LiveLog(args.mlflow) if args.mlflow else None  # unreachable: fail before training
    record, model = execute(cfg, ctx)
    torch_model = model if isinstance(model, torch.nn.Module) else None
    with Store(runs_dir) as store:
        record = store.add_run(record, torch_model)
    if live:  # after the store: a tracker failure warns and never costs the run
        live(record)
    if args.json:
        write_json(record.to_dict())
        return 0
    print(f"run {record.id}: {record.status}, {record.model} ({record.params:,} params), "
          f"test accuracy {_show('test_accuracy', record.metric('test_accuracy'))} "
          f"(best {_show('best_test_accuracy', record.metric('best_test_accuracy'))}), "
          f"{record.timing.wall_seconds:.1f} s")
    if record.checkpoint:
        print(f"checkpoint: {record.checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a stored run's or a checkpoint file's model on its dataset's test set."""
    name, checkpoint = find_checkpoint(args.source, args.runs_dir)
    model, cfg = load_checkpoint(checkpoint)
    data = load(cfg.dataset, args.data_dir)
    device = resolve_device("auto")
    started = time.perf_counter()
    result = evaluate(model.to(device), data.test, input_stats(cfg.dataset, cfg.normalize),
                      device, args.tta)
    seconds = time.perf_counter() - started
    metrics = classify(data.test.labels.numpy(), result.predictions)
    if args.json:
        write_json({"source": name, "checkpoint": checkpoint, "model": cfg.model,
                    "dataset": cfg.dataset, "tta": args.tta, "test_loss": result.loss,
                    "test_accuracy": result.accuracy, "params": count_params(model),
                    "seconds": seconds, **metrics.to_dict()})
        return 0
    views = "" if args.tta == "none" else f" (TTA {args.tta})"
    print(f"{name}: {cfg.model} on {cfg.dataset} test{views}: accuracy "
          f"{_show('test_accuracy', result.accuracy)}, loss {result.loss:.4f}, "
          f"macro F1 {metrics.macro_f1:.4f}, {seconds:.1f} s")
    pairs = ", ".join(f"{c.true}→{c.pred} ({c.count})" for c in metrics.most_confused)
    print(f"most confused (true→predicted): {pairs}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify image files with a stored model (default: the best stored run)."""
    images = [to_mnist(load_image(path), name=str(path)) for path in args.images]  # checked first
    if args.checkpoint:
        checkpoint = find_checkpoint(args.checkpoint, args.runs_dir)[1]
    else:
        with Store(args.runs_dir) as store:
            checkpoint = store.best_checkpoint()
    probs = Classifier(checkpoint).probabilities(np.stack(images)).astype(np.float64)
    results = [{"file": path, "digit": int(p.argmax()), "probabilities": p.round(6).tolist()}
               for path, p in zip(args.images, probs, strict=True)]
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
        try:
            e = model_entry(name)
            params = count_params(create_model(name)) if e.kind == "torch" else None
            rows.append({"name": name, "kind": e.kind, "params": params, "source": e.source})
        except UserError as error:  # an installed model that fails: listed, saying why
            rows.append({"name": name, "kind": "torch", "params": None, "source": str(error)})
    if args.json:
        write_json({"models": rows})
        return 0
    print(table(["model", "kind", "params", "source"],
                [[r["name"], r["kind"], f"{r['params']:,}" if r["params"] is not None
                  else "(fitted)" if r["kind"] == "classical" else "-", r["source"]]
                 for r in rows], right={2}))
    return 0


def _show_run(record: RunRecord) -> None:
    """A stored run, field by field, then its history."""
    fields = {"id": record.id, "status": record.status, "model": record.model,
              "dataset": record.dataset, "study": record.study,
              "params": _show("params", record.params),
              "test_accuracy": _show("test_accuracy", record.metric("test_accuracy")),
              "best_test_accuracy": _show("best_test_accuracy",
                                          record.metric("best_test_accuracy")),
              "epochs_run": len(record.history),
              "wall_seconds": _show("wall_seconds", record.timing.wall_seconds),
              "checkpoint": record.checkpoint, "error": record.error, "created": record.created}
    for k, v in fields.items():
        if v is not None:
            print(f"{k:>20}: {v}")
    for e in record.history:
        print(f"  epoch {e.epoch:>3}: train {_show('train_accuracy', e.train_accuracy)} "
              f"test {_show('test_accuracy', e.test_accuracy)} "
              f"loss {_show('train_loss', e.train_loss)}")


def cmd_runs(args: argparse.Namespace) -> int:
    """List stored runs, or show one."""
    store = Store(args.runs_dir)
    if args.action == "show":
        if len(args.run_ids) != 1:
            raise UserError(f"runs show needs a run id{', just one' if args.run_ids else ''}")
        record = store.get(args.run_ids[0])
        if args.json:
            write_json(record.to_dict())
        else:
            _show_run(record)
        return 0
    records = store.runs(study=args.study)
    if args.json:
        write_json({"runs": [r.to_dict() for r in records]})
        return 0
    if records:
        print(table(["id", "status", "model", "dataset", "test acc.", "wall", "study"],
                    [[r.id, r.status, r.model, r.dataset,
                      _show("test_accuracy", r.metric("test_accuracy")),
                      _show("wall_seconds", r.timing.wall_seconds) + " s", r.study or ""]
                     for r in records], right={4, 5}))
    hint = ""
    if args.study and not records and f"{args.study}:quick" in store.studies():
        hint = f"; its quick runs are stored as {args.study}:quick (--study {args.study}:quick)"
    print(f"{len(records)} run(s) in {store.root}{hint}", file=sys.stderr)
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
