"""Training and evaluation of one run: the fast path every command and study uses.

The dataset sits on the device as uint8; each step draws a random index batch, converts,
augments and normalises it as one tensor, and takes an optimiser step. No DataLoader, no
per-sample Python. `train` returns an Outcome (history, final metrics, timing, the model);
turning it into a stored run record is the caller's business (see record.py, store.py).
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import PROCESS_START
from .allocator import keep_freed_memory
from .augment import Augment, pixels, prepare
from .config import TrainConfig
from .data import Dataset, Split, balanced_subset, holdout, input_stats
from .ema import WeightAverage
from .envinfo import environment
from .errors import UserError
from .evaluate import Evaluation, measure_epoch, resolve_device
from .metrics import Classification, Epoch, TestOutputs, Timing, classify
from .models import Standardised, build_model, count_params, model_entry
from .optim import learning_rate, make_optimizer
from .robust.attacks import frozen, run_attack
from .snapshot import load_snapshot, save_snapshot

SNAPSHOT_FORMAT = 2  # 2: history in the metric vocabulary of metrics.py


@dataclass
class Outcome:
    """What training produced: the learned state and what was measured on the way."""

    status: str  # complete, diverged (a NaN loss) or paused (pause_after reached)
    model: object  # the trained nn.Module or scikit-learn estimator
    params: int
    history: list[Epoch]
    classification: Classification | None  # of the last finished epoch's model on test
    test_outputs: TestOutputs | None  # what that model said about each test image
    timing: Timing
    env: dict  # versions, device, threads (envinfo.environment)


# Per process, the splits of the last few (dataset, hold-out, subset, seed): a search trains
# each trial one epoch per rung, and drawing a 60k hold-out again for every rung cost more
# than a small model's epoch. The dataset is kept with its splits, so its id cannot be reused.
_SPLITS: dict[tuple, tuple[Dataset, tuple[Split, Split | None, Split]]] = {}


def make_splits(cfg: TrainConfig, data: Dataset) -> tuple[Split, Split | None, Split]:
    """(train, validation or None, test) after hold-out, class-balanced subset, test subset."""
    key = (id(data), cfg.val_size, cfg.subset, cfg.test_subset, cfg.seed)
    if key not in _SPLITS or _SPLITS[key][0] is not data:
        if len(_SPLITS) >= 4:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = (data, _split(cfg, data))
    return _SPLITS[key][1]


def _split(cfg: TrainConfig, data: Dataset) -> tuple[Split, Split | None, Split]:
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Trainer:
    """State of one torch run while it trains; `run()` is the only entry point."""

    def __init__(self, cfg: TrainConfig, data: Dataset, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        self.stats = input_stats(cfg.dataset, cfg.normalize)
        self.train_split, self.val_split, self.test_split = make_splits(cfg, data)
        self.aug = Augment.of(cfg)
        torch.manual_seed(cfg.seed)
        # Channels-last: oneDNN vectorises convolutions, pooling and batch norm over channels
        # in NHWC. On 2 CPU cores inference is ~1.5x faster for every conv model and training
        # 1.1x for the large ones (a wash for the compact CNN); see docs/PERFORMANCE.md.
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)
        self.opt = make_optimizer(cfg, self.model)
        self.ema = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # Attacks perturb pixels in [0, 1]: they see the model with its standardisation inside,
        # as robust_accuracy does at test time, so epsilon means the same in both.
        self.attacked = (Standardised(self.model, self.stats) if cfg.adversarial != "none"
                         else None)
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
            x, y = self.batch(idx), self.labels[idx]
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            penalty = cfg.l2 * sum((w ** 2).sum() for w in weights) if cfg.l2 else 0.0
            self.opt.zero_grad(set_to_none=True)
            (loss + penalty).backward()
            if not optimizer_step(self.opt):
                return math.nan, math.nan, lr
            if self.ema:
                self.ema.update()
            loss_sum += loss.detach() * len(idx)
            # under adversarial training: loss and accuracy on the attack examples, not clean
            correct += (out.argmax(1) == y).sum()
            self.step += 1
            self.images_seen += len(idx)
            bar.update(1)
            if not math.isfinite(loss.item()):
                return math.nan, math.nan, lr
        n = len(perm)
        return float(loss_sum) / n, float(correct) / n, lr

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The model input for the training images at idx: augmented and standardised, and
        under adversarial training replaced by attack examples against the current model."""
        if self.attacked is None:
            return prepare(self.images[idx], self.stats, self.aug, self.gen)
        cfg = self.cfg
        x = pixels(self.images[idx], self.aug, self.gen)
        # The attack runs in eval mode, as in the Madry lab's robustness library and TRADES:
        # in train mode its forward passes would pull batch norm's running statistics towards
        # the half-made attack images, and dropout would attack a different net at each step.
        # The random start draws from self.gen, after the augmentation: runs stay reproducible
        # and resume exactly.
        with frozen(self.attacked):
            x = run_attack(cfg.adversarial, self.attacked, x, self.labels[idx], cfg.epsilon,
                           steps=cfg.attack_steps, generator=self.gen)
        return self.stats.standardise(x).contiguous(memory_format=torch.channels_last)

    def state(self, history: list[Epoch], clock: dict) -> dict:
        """Everything a resumed run needs to go on exactly as if it had never stopped."""
        cuda = self.device.type == "cuda"
        return {"format": SNAPSHOT_FORMAT, "key": self.cfg.key(),
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "ema": self.ema.state_dict() if self.ema else None,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "step": self.step, "images_seen": self.images_seen,
                "history": [e.to_dict() for e in history], "clock": clock}

    def restore(self, state: dict) -> tuple[list[Epoch], dict]:
        """Load a snapshot written by state(); return its history and clocks."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step, self.images_seen = state["step"], state["images_seen"]
        return [Epoch(**e) for e in state["history"]], state["clock"]

    @property
    def evaluated(self) -> nn.Module:
        """The model that is measured and kept: the weight average where there is one."""
        return self.ema.model if self.ema else self.model

    def measure(self, entry: Epoch, clock: dict) -> Evaluation:
        """Evaluate after an epoch (see measure_epoch); return the test evaluation."""
        return measure_epoch(self.evaluated, self.val_split, self.test_split, self.stats,
                             self.device, entry, clock, self.cfg.views_at(entry.epoch))

    def run(self, progress: bool, snapshot: Path | None = None,
            pause_after: int | None = None) -> Outcome:
        """Train for cfg.epochs (or until the target / divergence / `pause_after` epochs).

        With a snapshot path, resume from the snapshot there if it is this run's, and write
        one after every epoch but the last (see snapshot.py).
        """
        cfg, status, seconds_to_target, test = self.cfg, "complete", None, None
        state = load_snapshot(snapshot, cfg.key(), SNAPSHOT_FORMAT) if snapshot else None
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
            entry = Epoch(epoch, train_loss=train_loss, train_accuracy=train_acc)
            test = self.measure(entry, clock)
            entry.lr, entry.seconds = lr, seconds
            history.append(entry)
            if progress:
                bar.write(epoch_line(entry, cfg.epochs))
            if cfg.stop_at_accuracy and entry.test_accuracy >= cfg.stop_at_accuracy:
                seconds_to_target = time.perf_counter() - PROCESS_START
                break
            if snapshot and epoch < cfg.epochs:  # the last epoch always runs to the record
                clock["wall_s"] = time.perf_counter() - started
                save_snapshot(snapshot, self.state(history, clock))
            if pause_after is not None and pause_after <= epoch < cfg.epochs:
                status = "paused"  # a search trial's rung: the driver decides whether to go on
                break
        bar.close()
        timing = self.timing(clock, time.perf_counter() - started, seconds_to_target, resumed_at)
        labels = self.test_split.labels.numpy()
        return Outcome(status, self.evaluated, count_params(self.model), history,
                       classify(labels, test.predictions) if test else None,
                       stored_outputs(test.probabilities, labels) if test else None, timing,
                       environment(self.device, cfg.threads))

    def timing(self, clock: dict, wall: float, seconds_to_target: float | None,
               resumed_at: int) -> Timing:
        """The run's clocks as stored: wall time, throughputs, when it reached its target."""
        train_s, eval_s = clock["train_s"], clock["eval_s"]
        return Timing(wall_seconds=wall,
                      train_images_per_s=self.images_seen / train_s if train_s else None,
                      infer_images_per_s=clock["eval_n"] / eval_s if eval_s else None,
                      seconds_to_target=seconds_to_target,
                      resumed_at_epoch=resumed_at or None, peak_rss_mb=peak_rss_mb())


def stored_outputs(probabilities: np.ndarray, labels: np.ndarray) -> TestOutputs:
    """Test outputs as stored: float16 is precise enough for every comparison (200 KB a run)."""
    return TestOutputs(probabilities.astype(np.float16), labels.astype(np.uint8))


def optimizer_step(opt: object) -> bool:
    """One optimiser step; False if its arithmetic overflowed float32, a divergence.

    torch's Adam-family optimisers turn an update too large for float32 (say lr 1e38 over a
    bias correction of 0.1) into a RuntimeError rather than an inf, so it is caught here.
    """
    try:
        opt.step()
    except RuntimeError as e:
        if "without overflow" not in str(e):
            raise
        return False
    return True


def epoch_line(e: Epoch, epochs: int) -> str:
    val = f" | val {e.val_accuracy:.2%}" if e.val_accuracy is not None else ""
    return (f"epoch {e.epoch:>2}/{epochs}  train loss {e.train_loss:.4f} "
            f"acc {e.train_accuracy:.2%}{val} | test loss {e.test_loss:.4f} "
            f"acc {e.test_accuracy:.2%} | {e.seconds:.1f} s")


def _fit_classical(cfg: TrainConfig, data: Dataset) -> Outcome:
    """Fit a scikit-learn model on flattened pixels; one 'epoch' of history."""
    train, val, test = make_splits(cfg, data)
    model = build_model(cfg)
    stats = input_stats(cfg.dataset, cfg.normalize)

    def features(split: Split) -> np.ndarray:
        return prepare(split.images, stats).flatten(1).numpy()

    started = time.perf_counter()
    model.fit(features(train), train.labels.numpy())
    fit_s = time.perf_counter() - started
    t0 = time.perf_counter()
    pred = model.predict(features(test))
    infer_s = time.perf_counter() - t0
    outputs = stored_outputs(model.predict_proba(features(test)), test.labels.numpy())
    entry = Epoch(1, train_accuracy=float(model.score(features(train), train.labels.numpy())),
                  test_accuracy=float((pred == test.labels.numpy()).mean()), seconds=fit_s)
    if val is not None:
        entry.val_accuracy = float(model.score(features(val), val.labels.numpy()))
    entry.gap = entry.train_accuracy - entry.test_accuracy
    timing = Timing(wall_seconds=time.perf_counter() - started,
                    train_images_per_s=len(train) / fit_s,
                    infer_images_per_s=len(pred) / infer_s, peak_rss_mb=peak_rss_mb())
    params = (model.coef_.size + model.intercept_.size if hasattr(model, "coef_")
              else sum(t.tree_.node_count for t in model.estimators_))
    return Outcome("complete", model, int(params), [entry], classify(test.labels.numpy(), pred),
                   outputs, timing, environment(torch.device("cpu"), cfg.threads))


def train(cfg: TrainConfig, data: Dataset, progress: bool = False,
          snapshot: Path | None = None, pause_after: int | None = None) -> Outcome:
    """Train one run. Never raises on divergence (the status says so).

    snapshot: a file to resume from and to keep the run's progress in after every epoch.
    pause_after: stop once this many epochs are done, status "paused" (a search trial's rung;
    with a snapshot, training the same config again goes on from there).
    The thread count and the allocator are set here and nowhere else: every command and
    worker trains through it.
    """
    cfg.validate()
    keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if model_entry(cfg.model).kind == "classical":
        for setting, needs in (("adversarial", "adversarial training"),
                               ("tta", "test-time augmentation")):
            if getattr(cfg, setting) != "none":
                raise UserError(f"{needs} needs a torch model; {cfg.model!r} is a "
                                "scikit-learn one")
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
    return trainer.run(progress, snapshot, pause_after)
