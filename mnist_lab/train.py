"""Training and evaluation of one run: the fast path every command and study uses.

The dataset sits on the device as uint8; each step draws a random index batch, converts,
augments and normalises it as one tensor, and takes an optimiser step. No DataLoader, no
per-sample Python. The function returns a run record (plain dict) and the trained model;
storing them is the caller's business (see store.py).
"""

from __future__ import annotations

import inspect
import math
import resource
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import PROCESS_START
from .augment import Augment, prepare
from .config import TrainConfig
from .data import DATASETS, Dataset, Split, balanced_subset, holdout
from .envinfo import environment
from .errors import UserError
from .metrics import classification_metrics
from .models import count_params, create_model, model_entry
from .optim import learning_rate, make_optimizer
from .snapshot import load_snapshot, save_snapshot

# Evaluation batch: on CPU a large batch's activations spill out of the caches, and conv nets
# evaluate 1.5-2.8x faster in batches of 64 than of 2,000 (bench/eval_batch.py); GPUs want large.
EVAL_BATCH_CPU, EVAL_BATCH_GPU = 64, 2000


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda[:N] or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise UserError(f"device {name!r} is not available on this machine")
    return device


def make_splits(cfg: TrainConfig, data: Dataset) -> tuple[Split, Split | None, Split]:
    """(train, validation or None, test) after hold-out, class-balanced subset, test subset."""
    train, val, test = data.train, None, data.test
    if cfg.val_size:
        train, val = holdout(train, cfg.val_size, cfg.seed)
    if cfg.subset:
        train = balanced_subset(train, cfg.subset, cfg.seed)
    if cfg.test_subset:
        if cfg.test_subset > len(test):
            raise UserError(f"test subset {cfg.test_subset} exceeds the {len(test)} test images")
        test = test.take(torch.arange(cfg.test_subset))
    return train, val, test


def build_model(cfg: TrainConfig) -> object:
    """The model the config names, with --dropout and the seed passed where it applies."""
    kw = dict(cfg.model_kwargs)
    params = inspect.signature(model_entry(cfg.model).build).parameters
    if cfg.dropout >= 0:
        if "dropout" not in params:
            raise UserError(f"model {cfg.model!r} has no dropout to set")
        kw["dropout"] = cfg.dropout
    if "seed" in params:
        kw.setdefault("seed", cfg.seed)
    return create_model(cfg.model, **kw)


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters taken together."""
    return float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters())))


def input_stats(cfg: TrainConfig) -> tuple[float, float]:
    """(mean, std) that pixels in [0, 1] are standardised with before entering the model."""
    info = DATASETS[cfg.dataset]
    return (info.mean, info.std) if cfg.normalize else (0.0, 1.0)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, mean: float, std: float,
             device: torch.device) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, predictions) of the model on a split."""
    model.eval().to(memory_format=torch.channels_last)
    loss, preds, batch = 0.0, [], EVAL_BATCH_CPU if device.type == "cpu" else EVAL_BATCH_GPU
    for i in range(0, len(split), batch):
        x = prepare(split.images[i:i + batch].to(device), mean, std)
        out = model(x).float()
        y = split.labels[i:i + batch].to(device)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        preds.append(out.argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    return loss / len(split), float((pred == split.labels.numpy()).mean()), pred


class _Trainer:
    """State of one torch run while it trains; `run()` is the only entry point."""

    def __init__(self, cfg: TrainConfig, data: Dataset, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        self.mean, self.std = input_stats(cfg)
        self.train_split, self.val_split, self.test_split = make_splits(cfg, data)
        self.aug = Augment(cfg.rotate, cfg.translate, cfg.scale, cfg.shear)
        torch.manual_seed(cfg.seed)
        # Channels-last: oneDNN vectorises convolutions, pooling and batch norm over channels
        # in NHWC. On 2 CPU cores inference is ~1.5x faster for every conv model and training
        # 1.1x for the large ones (a wash for the compact CNN); see docs/PERFORMANCE.md.
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)
        self.opt = make_optimizer(cfg, self.model)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.images = self.train_split.images.to(device)
        self.labels = self.train_split.labels.to(device)
        self.steps_per_epoch = math.ceil(len(self.train_split) / cfg.batch_size)
        self.step, self.images_seen = 0, 0

    def train_epoch(self, bar: tqdm) -> tuple[float, float, float]:
        """One pass in random order: (mean loss, accuracy, last lr); NaN loss if diverged."""
        cfg, model = self.cfg, self.model
        model.train()
        total = cfg.epochs * self.steps_per_epoch
        weights = [p for p in model.parameters() if p.ndim > 1]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        perm = torch.randperm(len(self.labels), generator=self.gen).to(self.device)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            lr = learning_rate(cfg, self.step, total, self.steps_per_epoch)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x = prepare(self.images[idx], self.mean, self.std, self.aug, self.gen)
            y = self.labels[idx]
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            penalty = cfg.l2 * sum((w ** 2).sum() for w in weights) if cfg.l2 else 0.0
            self.opt.zero_grad(set_to_none=True)
            (loss + penalty).backward()
            self.opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == y).sum()
            self.step += 1
            self.images_seen += len(idx)
            bar.update(1)
            if not math.isfinite(loss.item()):
                return math.nan, math.nan, lr
        n = len(perm)
        return float(loss_sum) / n, float(correct) / n, lr

    def state(self, history: list[dict], clock: dict) -> dict:
        """Everything a resumed run needs to go on exactly as if it had never stopped."""
        cuda = self.device.type == "cuda"
        return {"key": self.cfg.key(), "model": self.model.state_dict(),
                "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "step": self.step, "images_seen": self.images_seen,
                "history": history, "clock": clock}

    def restore(self, state: dict) -> tuple[list[dict], dict]:
        """Load a snapshot written by state(); return its history and clocks."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step, self.images_seen = state["step"], state["images_seen"]
        return state["history"], state["clock"]

    def measure(self, entry: dict, clock: dict) -> np.ndarray:
        """Evaluate after an epoch: add validation and test loss and accuracy, the gap and the
        weight norm to the history entry; return the test predictions."""
        t = time.perf_counter()
        if self.val_split is not None:
            entry["val_loss"], entry["val_acc"], _ = evaluate(
                self.model, self.val_split, self.mean, self.std, self.device)
            clock["eval_n"] += len(self.val_split)
        entry["test_loss"], entry["test_acc"], pred = evaluate(
            self.model, self.test_split, self.mean, self.std, self.device)
        clock["eval_n"] += len(self.test_split)
        clock["eval_s"] += time.perf_counter() - t
        entry |= {"gap": entry["train_acc"] - entry["test_acc"],
                  "weight_norm": weight_norm(self.model)}
        return pred

    def run(self, progress: bool, snapshot: Path | None = None) -> dict:
        """Train for cfg.epochs (or until the target / divergence); return the run record.

        With a snapshot path, resume from the snapshot there if it is this run's, and write
        one after every epoch but the last (see snapshot.py).
        """
        cfg, status, seconds_to_target, pred = self.cfg, "complete", None, None
        state = load_snapshot(snapshot, cfg.key()) if snapshot else None
        history, clock = (self.restore(state) if state else
                          ([], {"wall_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "eval_n": 0}))
        resumed_at, started = len(history), time.perf_counter() - clock["wall_s"]
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=self.step,
                   disable=not progress, desc=cfg.model, unit="step", dynamic_ncols=True,
                   leave=False)
        for epoch in range(resumed_at + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc, lr = self.train_epoch(bar)
            seconds = time.perf_counter() - t0
            clock["train_s"] += seconds
            if not math.isfinite(train_loss):
                status = "diverged"
                break
            entry = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            pred = self.measure(entry, clock)
            history.append(entry | {"lr": lr, "seconds": seconds})
            if progress:
                bar.write(_epoch_line(history[-1], cfg.epochs))
            if cfg.stop_at_accuracy and history[-1]["test_acc"] >= cfg.stop_at_accuracy:
                seconds_to_target = time.perf_counter() - PROCESS_START
                break
            if snapshot and epoch < cfg.epochs:  # the last epoch always runs to the record
                clock["wall_s"] = time.perf_counter() - started
                save_snapshot(snapshot, self.state(history, clock))
        bar.close()
        train_s, eval_s = clock["train_s"], clock["eval_s"]
        timing = {"wall_seconds": time.perf_counter() - started,
                  "train_images_per_s": self.images_seen / train_s if train_s else None,
                  "infer_images_per_s": clock["eval_n"] / eval_s if eval_s else None,
                  "seconds_to_target": seconds_to_target,
                  "resumed_at_epoch": resumed_at or None}
        return make_record(cfg, status, count_params(self.model), history, pred,
                           self.test_split, timing, self.device)


def _epoch_line(h: dict, epochs: int) -> str:
    val = f" | val {h['val_acc']:.2%}" if "val_acc" in h else ""
    return (f"epoch {h['epoch']:>2}/{epochs}  train loss {h['train_loss']:.4f} "
            f"acc {h['train_acc']:.2%}{val} | test loss {h['test_loss']:.4f} "
            f"acc {h['test_acc']:.2%} | {h['seconds']:.1f} s")


def make_record(cfg: TrainConfig, status: str, params: int, history: list[dict],
                pred: np.ndarray | None, test: Split, timing: dict,
                device: torch.device) -> dict:
    """The run record stored and printed by `--json`: config, environment, results."""
    last = history[-1] if history else {}
    metrics = classification_metrics(test.labels.numpy(), pred) if pred is not None else None
    record = {
        "id": datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        "key": cfg.key(), "status": status, "model": cfg.model, "dataset": cfg.dataset,
        "params": params,
        "test_accuracy": last.get("test_acc"), "test_loss": last.get("test_loss"),
        "train_accuracy": last.get("train_acc"), "val_accuracy": last.get("val_acc"),
        "best_test_accuracy": max((h["test_acc"] for h in history), default=None),
        "best_train_accuracy": max((h["train_acc"] for h in history), default=None),
        "epochs_run": len(history), "target": cfg.stop_at_accuracy or None,
        "reached_target": timing["seconds_to_target"] is not None, **timing,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics": metrics, "history": history, "config": cfg.to_dict(),
        "env": environment(device, cfg.threads),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return record


def _fit_classical(cfg: TrainConfig, data: Dataset) -> tuple[dict, object]:
    """Fit a scikit-learn model on flattened pixels; one 'epoch' of history."""
    train, val, test = make_splits(cfg, data)
    model = build_model(cfg)

    def features(split: Split) -> np.ndarray:
        return prepare(split.images, *input_stats(cfg)).flatten(1).numpy()

    started = time.perf_counter()
    model.fit(features(train), train.labels.numpy())
    fit_s = time.perf_counter() - started
    t0 = time.perf_counter()
    pred = model.predict(features(test))
    infer_s = time.perf_counter() - t0
    entry = {"epoch": 1, "train_acc": float(model.score(features(train), train.labels.numpy())),
             "test_acc": float((pred == test.labels.numpy()).mean()), "seconds": fit_s}
    if val is not None:
        entry["val_acc"] = float(model.score(features(val), val.labels.numpy()))
    entry["gap"] = entry["train_acc"] - entry["test_acc"]
    timing = {"wall_seconds": time.perf_counter() - started,
              "train_images_per_s": len(train) / fit_s, "infer_images_per_s": len(pred) / infer_s,
              "seconds_to_target": None}
    params = (model.coef_.size + model.intercept_.size if hasattr(model, "coef_")
              else sum(t.tree_.node_count for t in model.estimators_))
    return make_record(cfg, "complete", int(params), [entry], pred, test, timing,
                       torch.device("cpu")), model


def train(cfg: TrainConfig, data: Dataset, progress: bool = False,
          snapshot: Path | None = None) -> tuple[dict, object]:
    """Train one run; return (record, model). Never raises on divergence (status says so).

    snapshot: a file to resume from and to keep the run's progress in after every epoch.
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if model_entry(cfg.model).kind == "classical":
        return _fit_classical(cfg, data)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # CPU kernels used here are deterministic as they are (tested); cuDNN needs telling.
        # (torch.use_deterministic_algorithms would also do, but importing it costs 1.8 s.)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    trainer = _Trainer(cfg, data, device)
    if cfg.batch_size > len(trainer.train_split):
        raise UserError(f"batch size {cfg.batch_size} exceeds the {len(trainer.train_split)} "
                        "training images")
    return trainer.run(progress, snapshot), trainer.model
