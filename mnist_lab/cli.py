"""The `mnist-lab` command: train, evaluate, predict, export, serve, models, runs, study.

Every bad input ends in one line on stderr and exit code 2 (UserError or an argparse error);
nothing is written to the store unless a run finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from . import __version__
from .config import TTA_VIEWS, TrainConfig
from .errors import UserError
from .presets import PRESETS, describe, list_presets


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_kv(text: str) -> tuple[str, object]:
    """'hidden=128' -> ('hidden', 128); values parse as JSON when they can."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help text and default taken from the dataclass, and
    --preset. A flag not given is left out of the namespace (SUPPRESS), so that a preset's
    value holds unless the flag is given, even when given at the default."""
    presets = "; ".join(f"{name}: {describe(PRESETS[name])}" for name in list_presets())
    p.add_argument("--preset", choices=list_presets(), help="a named recipe; flags given "
                   "beside it override it. " + presets.replace("%", "%%"))
    for f in dataclasses.fields(TrainConfig):
        flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.metadata.get("cli") is False:  # filled in by mnist-lab (model_source)
            continue
        if f.name == "model_kwargs":
            p.add_argument("--model-arg", dest="model_kwargs", action="append",
                           default=argparse.SUPPRESS, type=_parse_kv, metavar="KEY=VALUE",
                           help=help_)
        elif f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"{help_} (default: {f.default})")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                           choices=f.metadata.get("choices"),
                           help=f"{help_} (default: {f.default})")


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data-dir", help="folder with the dataset files, or holding "
                       "mnist/ and fashion-mnist/ (else $MNIST_LAB_DATA, the cache, a download)")
    p.add_argument("--runs-dir", help="results store folder (default: $MNIST_LAB_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface."""
    parser = _Parser(prog="mnist-lab", description="Run, compare and explain experiments on "
                     "MNIST-family digit classification.")
    parser.add_argument("--version", action="version", version=f"mnist-lab {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    _add_run_commands(sub)
    _add_catalogue_commands(sub)
    _add_sharing_commands(sub)
    _add_study_command(sub)
    _add_compare_command(sub)
    return parser


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """train, evaluate, predict."""
    p = sub.add_parser("train", help="train one model and store the run",
                       description="Train one model on real data; store the run record and "
                       "checkpoint. Defaults: the compact CNN recipe (< 8k params, ~99.4% "
                       "test accuracy in 15 epochs).")
    _add_config_flags(p)
    _common(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_mlflow_flag(p, "the run")

    p = sub.add_parser("evaluate", help="evaluate a stored model: test set, or robustness "
                       "suites", description="Evaluate a stored run's model (or a checkpoint "
                       "file's) on the test set of its dataset; with --suite, how it fails "
                       "beyond clean accuracy (stored with the run, measured once).")
    p.add_argument("source", metavar="RUN_ID_OR_CHECKPOINT",
                   help="run id (or unique prefix), or a .safetensors checkpoint")
    p.add_argument("--tta", choices=TTA_VIEWS, default="none", help="test-time augmentation: "
                   "average the softmax over the image and fixed copies: rot5 (rotations by "
                   "±5°, 3 views), shift1 (one-pixel shifts, 5 views), rot5+shift1 (7 views); "
                   "each view costs a forward pass (default: none)")
    _add_suite_flags(p)
    _common(p)

    p = sub.add_parser("predict", help="classify PNG/JPEG images of digits",
                       description="Classify images (photos or scans of a digit, any polarity). "
                       "Each is preprocessed as MNIST was made: grayscale, invert dark-on-light, "
                       "crop, fit into 20x20, centre by mass in 28x28.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", help="run id (or unique prefix) or checkpoint file "
                   "(default: the best stored run)")
    _common(p, data=False)


def _add_catalogue_commands(sub: argparse._SubParsersAction) -> None:
    """models, runs: what is registered and what is stored."""
    p = sub.add_parser("models", help="list the model zoo, or check a model of your own",
                       description="List the model zoo and installed packages' models with "
                       "parameter counts; `models check MODEL` runs the checks every model "
                       "must pass (shape, finite output and gradients, rebuild), exit 1 if "
                       "one fails.")
    p.add_argument("action", nargs="?", choices=("list", "check"), default="list")
    p.add_argument("model", nargs="?", metavar="MODEL", help="check: path/to/file.py:Name, "
                   "or a model name")
    p.add_argument("--model-arg", dest="model_kwargs", action="append", default=[],
                   type=_parse_kv, metavar="KEY=VALUE", help="check: a model argument "
                   "(repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("runs", help="list stored runs, show one, or export them to MLflow",
                       description="List stored runs (newest last), show one by id prefix, "
                       "or `export --mlflow URI` them (all, --study's, or those named) as MLflow "
                       "runs: params, metric histories, tags, the study's report; each once.")
    p.add_argument("action", nargs="?", choices=("list", "show", "export"), default="list")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID",
                   help="run id (or unique prefix): one for `show`, any for `export`; right "
                   "after the action")
    p.add_argument("--study", help="only runs of this study")
    p.add_argument("--mlflow", metavar="URI", help="export: the MLflow tracking server "
                   "(http://HOST:PORT) or sqlite:///PATH/mlflow.db")
    p.add_argument("--experiment", help="export: the MLflow experiment (default: each run's "
                   "study, mnist-lab for single runs)")
    p.add_argument("--checkpoints", action="store_true",
                   help="export: log each run's checkpoint as an artifact too")
    _common(p, data=False)


def _add_mlflow_flag(p: argparse.ArgumentParser, what: str) -> None:
    """--mlflow URI: live logging to MLflow (mnist_lab/tracking.py)."""
    p.add_argument("--mlflow", metavar="URI", help=f"also log {what} to MLflow as soon as it is "
                   "stored: a tracking server (http://HOST:PORT) or sqlite:///PATH/mlflow.db "
                   "(needs `pip install 'mnist-lab[mlflow]'`)")


def _add_suite_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("robustness suites (docs/USAGE.md, 'how a model fails')")
    g.add_argument("--suite", help="corruptions (15 MNIST-C-style corruptions), calibration "
                   "(ECE, NLL, Brier, temperature scaling), adversarial (FGSM, PGD; torch "
                   "models), explanations (confident mistakes, saliency), or all of these; "
                   "masking (gradient-masking checks of the adversarial figures, slow) only "
                   "by name; comma-separated for several")
    g.add_argument("--force", action="store_true", help="measure again even if stored")
    g.add_argument("--attack-images", type=int, default=1000, help="adversarial: attack the "
                   "first N test images (default: 1000, up to 10000)")
    g.add_argument("--epsilon", type=float, action="append", help="adversarial: an L-inf "
                   "radius in pixel scale [0, 1] (repeatable; default: 0.05 0.1 0.2 0.3)")
    g.add_argument("--pgd-steps", type=int, default=40, help="adversarial: PGD steps "
                   "(default: 40)")
    g.add_argument("--strong-steps", type=int, default=100, help="masking: PGD steps of the "
                   "stronger attack (default: 100)")
    g.add_argument("--restarts", type=int, default=5, help="masking: random starts of the "
                   "stronger attack (default: 5)")
    g.add_argument("--corruption-seed", type=int, default=0, help="corruptions: the seed of "
                   "the corrupted test set (default: 0)")
    g.add_argument("--out", help="folder for the suites' figures (default: "
                   "<runs-dir>/reports/runs/<run id>)")


def _add_sharing_commands(sub: argparse._SubParsersAction) -> None:
    """export, serve: a trained model leaves the lab."""
    p = sub.add_parser("export", help="export a trained model to ONNX or TorchScript",
                       description="Export a run's model (or a checkpoint's) with the training "
                       "standardisation built in: it takes raw pixels in [0, 1], float32 "
                       "[N, 1, 28, 28], and returns logits [N, 10]. The file is checked against "
                       "PyTorch before it is written.")
    p.add_argument("source", metavar="RUN_ID_OR_CHECKPOINT",
                   help="run id (or unique prefix), or a .safetensors checkpoint")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (needs `pip install 'mnist-lab[export]'`) or torchscript "
                   "(default: onnx)")
    p.add_argument("--out", help="output file or folder (default: ./<run id or checkpoint "
                   "name>.onnx or .pt)")
    _common(p, data=False)

    p = sub.add_parser("serve", help="web page to draw a digit, and a JSON prediction API",
                       description="Serve a page to draw a digit and watch the prediction, a "
                       "page of stored runs and study reports, and a JSON API (POST /predict, "
                       "GET /models; docs at /docs). Needs `pip install 'mnist-lab[serve]'`.")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--checkpoint", help="run id (or unique prefix) or checkpoint file "
                   "(default: the best stored run)")
    p.add_argument("--runs-dir", help="results store folder (default: $MNIST_LAB_RUNS or ./runs)")


def _add_study_command(sub: argparse._SubParsersAction) -> None:
    """study list | new | run | report | show."""
    p = sub.add_parser("study", help="run a study file, or report on its stored runs",
                       description="Studies: `list` names the studies shipped with mnist-lab, "
                       "`run` trains every variant x seed not yet stored (resumable), `report` "
                       "writes Markdown + HTML with tables and plots from the stored runs, "
                       "`show` lists the runs and their state, `new NAME` writes a commented "
                       "starter study NAME.toml here (`--from STUDY`: a copy of a shipped one).")
    p.add_argument("action", choices=("list", "new", "run", "report", "show"))
    p.add_argument("study", nargs="?", help="a shipped study's name (see `study list`, e.g. "
                   "compact-cnn) or a study file")
    p.add_argument("-j", "--jobs", type=int, default=1, help="runs in parallel (default: 1)")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=True,
                   help="train each variant's seeds as one packed model where the config "
                   "allows (no dropout, layers that pack; the rest train alone): on by "
                   "default, --no-pack trains every run alone (docs/PERFORMANCE.md)")
    p.add_argument("--quick", action="store_true",
                   help="1 epoch, 200 training / 500 test images, one seed: a smoke run")
    p.add_argument("--block", action="append", metavar="NAME",
                   help="run or show only this block (repeatable); its runs are stored "
                   "under the study as usual, so the study's report includes them")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes, or Ray (local instance, or --address)")
    p.add_argument("--address", help="Ray cluster address, HOST:PORT of its head (default: "
                   "start Ray in this process); see docs/USAGE.md, 'a study on a cluster'")
    p.add_argument("--gpus-per-run", type=float, default=0.0,
                   help="Ray: GPUs each run asks for (1: one run per GPU; default: 0)")
    p.add_argument("--out", help="report folder (default: <runs-dir>/reports/<study>)")
    p.add_argument("--from", dest="source", metavar="STUDY",
                   help="new: start from a copy of this shipped study")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_mlflow_flag(p, "each run (study run)")
    _common(p)


def _add_compare_command(sub: argparse._SubParsersAction) -> None:
    """compare."""
    p = sub.add_parser("compare", help="is B better than A? tests on stored runs and variants",
                       description="Compare stored runs or study variants: each side is a run "
                       "id (or unique prefix) or STUDY/VARIANT (all its stored seeds); B, C, "
                       "... are each compared with A. With --baseline, one study name: every "
                       "variant of the baseline's block against it. Over seeds: Welch's t-test "
                       "(paired t when the seeds pair up); with one run a side: McNemar's "
                       "exact test on the test predictions. Several pairs are Holm-corrected.")
    p.add_argument("sides", nargs="+", metavar="SIDE", help="A B [C ...], or STUDY")
    p.add_argument("--baseline", metavar="VARIANT", help="compare every variant of a study "
                   "with this one, or with its own at a grid point (e.g. weight_decay=0.0)")
    p.add_argument("--metric", default="test_accuracy", help="metric to compare over seeds "
                   "(default: test_accuracy)")
    p.add_argument("--test", choices=("auto", "t", "mcnemar"), default="auto",
                   help="auto: t-test with 2+ runs a side, else McNemar (default: auto)")
    p.add_argument("--quick", action="store_true", help="the study's --quick runs")
    _common(p, data=False)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; heavy imports (torch) only once the command line is valid."""
    if args.command == "study":
        from .study_commands import cmd_study
        return cmd_study(args)
    if args.command == "evaluate" and args.suite and args.tta != "none":
        raise UserError("--tta applies to the test-set evaluation, not to --suite")
    if args.command == "evaluate" and args.suite:
        from .suite_command import cmd_evaluate_suites
        return cmd_evaluate_suites(args)
    if args.command == "compare":
        from .compare_command import cmd_compare
        return cmd_compare(args)
    if args.command == "runs" and args.action == "export":
        from .tracking_command import cmd_runs_export
        return cmd_runs_export(args)
    if args.command == "models" and args.action == "check":
        from .model_command import cmd_models_check
        return cmd_models_check(args)
    from . import commands
    return getattr(commands, f"cmd_{args.command}")(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `mnist-lab`: what it can do, not an error
        parser.print_help()
        return 0
    try:
        return _dispatch(args)
    except UserError as e:
        print(f"mnist-lab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnist-lab: interrupted; nothing of the unfinished run was stored", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnist-lab runs | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
