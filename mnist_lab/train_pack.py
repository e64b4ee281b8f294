"""Several seeds of one config trained at once as one packed model (packing.py).

Each member draws its initialisation, splits, batch order and augmentation exactly as the run
trained alone draws them, and is evaluated, snapshotted and recorded as that run: its snapshot
is the single run's, so a pack killed part-way resumes as a pack or member by member. A member
that diverges stops there while the others go on. Anything else going wrong is `PackError`:
the caller trains the members alone (from their snapshots).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .allocator import keep_freed_memory
from .augment import Augment, prepare
from .config import TrainConfig
from .data import Dataset, input_stats
from .envinfo import environment
from .errors import UserError
from .evaluate import Evaluation, measure_epoch, resolve_device
from .metrics import Epoch, Timing, classify
from .models import build_model, count_params, model_entry
from .optim import learning_rate, make_optimizer
from .packing import (
    member_opt_state,
    member_state,
    pack_model,
    packed_opt_state,
    packed_state,
    unpackable,
)
from .snapshot import load_snapshot, save_snapshot
from .train import (
    SNAPSHOT_FORMAT,
    Outcome,
    epoch_line,
    make_splits,
    optimizer_step,
    peak_rss_mb,
    stored_outputs,
)

CHANNELS_LAST = torch.channels_last


class PackError(Exception):
    """The pack cannot go on as one (an optimiser overflow, snapshots out of step)."""


def pack_problem(cfgs: list[TrainConfig]) -> str | None:
    """Why these configs cannot train as one pack (None: they can)."""
    base = cfgs[0]
    if len(cfgs) < 2:
        return "a pack needs two runs or more"
    if any(TrainConfig(**(c.to_dict() | {"seed": base.seed})) != base for c in cfgs):
        return "the configs differ in more than the seed"
    if model_entry(base.model).kind != "torch":
        return "scikit-learn models train alone"
    if base.adversarial != "none" or base.stop_at_accuracy or base.ema:
        return "adversarial training, --stop-at-accuracy and --ema runs train alone"
    try:
        model = build_model(base)
        if resolve_device(base.device).type == "cpu" and _grouped(model):
            # oneDNN's grouped depthwise kernels for K x the channels are slower than K separate
            # ones: a pack of 3 sep_4k trained 0.59x as fast (docs/PERFORMANCE.md)
            return "its grouped (depthwise) convolutions train slower packed on CPU"
        return unpackable(lambda: build_model(base), len(cfgs))
    except Exception as e:  # noqa: BLE001 - alone, each run records its own failure
        return f"its model does not build ({type(e).__name__})"


def _grouped(model: torch.nn.Module) -> bool:
    """Whether the model has a convolution with groups > 1 (a depthwise one, say)."""
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


class _Pack:
    """State of a pack while it trains; `run()` is the only entry point."""

    def __init__(self, cfgs: list[TrainConfig], data: Dataset, device: torch.device):
        self.cfgs, self.k, self.device, cfg = cfgs, len(cfgs), device, cfgs[0]
        self.stats = input_stats(cfg.dataset, cfg.normalize)
        self.splits = [make_splits(c, data) for c in cfgs]
        self.aug = Augment.of(cfg)
        self.members = []
        for c in cfgs:  # seeded as each run alone seeds its model
            torch.manual_seed(c.seed)
            self.members.append(build_model(c).to(device, memory_format=CHANNELS_LAST))
        self.model = pack_model(self.members).to(device, memory_format=CHANNELS_LAST)
        self.opt = make_optimizer(cfg, self.model)
        self.gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
        self.images = [s[0].images.to(device) for s in self.splits]
        self.labels = [s[0].labels.to(device) for s in self.splits]
        # the single run's penalty is over parameters of 2+ dims: the members', not the pack's
        heavy = {n for n, p in self.members[0].named_parameters() if p.ndim > 1}
        self.weights = [p for n, p in self.model.named_parameters() if n in heavy]
        self.steps_per_epoch = math.ceil(len(self.labels[0]) / cfg.batch_size)
        self.step, self.images_seen = 0, 0

    def train_epoch(self, bar: tqdm, alive: list[bool]) -> tuple[list[float], list[float], float]:
        """One pass of every member in its own random order: (mean losses, accuracies, last
        lr); a member whose loss turns non-finite is marked dead in `alive` there."""
        cfg, k, model = self.cfgs[0], self.k, self.model
        model.train()
        total = cfg.epochs * self.steps_per_epoch
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, dtype=torch.long, device=self.device)
        perms = [torch.randperm(len(y), generator=g).to(self.device)
                 for y, g in zip(self.labels, self.gens, strict=True)]
        for i in range(0, len(perms[0]), cfg.batch_size):
            idx = [p[i:i + cfg.batch_size] for p in perms]
            lr = learning_rate(cfg, self.step, total, self.steps_per_epoch)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x = torch.cat([prepare(im[j], self.stats, self.aug, g)
                           for im, j, g in zip(self.images, idx, self.gens, strict=True)], 1)
            y = torch.stack([lab[j] for lab, j in zip(self.labels, idx, strict=True)], 1)
            out = model(x.contiguous(memory_format=CHANNELS_LAST)).view(len(y), k, -1)
            losses = F.cross_entropy(out.permute(0, 2, 1), y, reduction="none",
                                     label_smoothing=cfg.label_smoothing).mean(0)  # [K]
            penalty = cfg.l2 * sum((w ** 2).sum() for w in self.weights) if cfg.l2 else 0.0
            self.opt.zero_grad(set_to_none=True)
            (losses.sum() + penalty).backward()  # each member's gradient is its own loss's
            if not optimizer_step(self.opt):
                raise PackError("the optimiser step overflowed float32")
            loss_sum += losses.detach() * len(y)
            correct += (out.argmax(2) == y).sum(0)
            self.step += 1
            self.images_seen += y.numel()  # every member's images: a single run's count x k
            bar.update(1)
            for m, finite in enumerate(torch.isfinite(losses.detach()).tolist()):
                alive[m] = alive[m] and finite
        n = len(perms[0])
        return (loss_sum / n).tolist(), (correct.float() / n).tolist(), lr

    def member(self, m: int) -> torch.nn.Module:
        """Member m as a model of its own, holding its part of the pack's weights now."""
        model = self.members[m]
        model.load_state_dict(member_state(self.model, model, m, self.k))
        return model

    def measure(self, m: int, entry: Epoch, clock: dict) -> Evaluation:
        """Evaluate member m as train.py evaluates a run; return its test evaluation."""
        _, val_split, test_split = self.splits[m]
        return measure_epoch(self.member(m), val_split, test_split, self.stats, self.device,
                             entry, clock, self.cfgs[m].views_at(entry.epoch))

    def state(self, m: int, history: list[Epoch], clock: dict) -> dict:
        """Member m's snapshot, exactly what the run trained alone would write."""
        return {"format": SNAPSHOT_FORMAT, "key": self.cfgs[m].key(),
                "model": self.member(m).state_dict(), "opt": self._member_opt(m),
                "gen": self.gens[m].get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": None, "step": self.step, "images_seen": self.images_seen // self.k,
                "history": [e.to_dict() for e in history], "clock": clock}

    def _member_opt(self, m: int) -> dict:
        return member_opt_state(self.opt.state_dict(), list(self.members[m].parameters()), m,
                                self.k)

    def restore(self, states: list[dict]) -> tuple[list[list[Epoch]], dict]:
        """Load the members' snapshots into the pack; their histories and the clock."""
        if len({len(s["history"]) for s in states}) > 1:
            raise PackError("the members' snapshots are not at the same epoch")
        self.model.load_state_dict(packed_state(self.model, [s["model"] for s in states]))
        self.opt.load_state_dict(packed_opt_state([s["opt"] for s in states],
                                                  list(self.model.parameters())))
        for g, s in zip(self.gens, states, strict=True):
            g.set_state(s["gen"])
        torch.set_rng_state(states[0]["torch_rng"])
        self.step, self.images_seen = states[0]["step"], states[0]["images_seen"] * self.k
        return [[Epoch(**e) for e in s["history"]] for s in states], states[0]["clock"]

    def run(self, progress: bool, snapshots: list[Path] | None) -> list[Outcome]:
        """Train every member for cfg.epochs (or until it diverges); with snapshot paths,
        resume from the members' snapshots and write theirs after every epoch but the last."""
        cfg, k = self.cfgs[0], self.k
        histories, clock = self._resume(snapshots)
        resumed_at, started = len(histories[0]), time.perf_counter() - clock["wall_s"]
        alive, tests = [True] * k, [None] * k
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=self.step,
                   disable=not progress, desc=f"{cfg.model} x{k}", unit="step",
                   dynamic_ncols=True, leave=False)
        for epoch in range(resumed_at + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            losses, accuracies, lr = self.train_epoch(bar, alive)
            seconds = time.perf_counter() - t0
            clock["train_s"] += seconds
            for m in (m for m in range(k) if alive[m]):
                entry = Epoch(epoch, train_loss=losses[m], train_accuracy=accuracies[m])
                tests[m] = self.measure(m, entry, clock)
                entry.lr, entry.seconds = lr, seconds
                histories[m].append(entry)
                if progress:
                    bar.write(f"seed {self.cfgs[m].seed}: {epoch_line(entry, cfg.epochs)}")
            if not any(alive):
                break
            if snapshots and epoch < cfg.epochs:  # the last epoch always runs to the record
                clock["wall_s"] = time.perf_counter() - started
                for m in (m for m in range(k) if alive[m]):
                    save_snapshot(snapshots[m], self.state(m, histories[m], clock))
        bar.close()
        train_s, eval_s = clock["train_s"], clock["eval_s"]
        timing = Timing(wall_seconds=time.perf_counter() - started,
                        train_images_per_s=self.images_seen / k / train_s if train_s else None,
                        infer_images_per_s=clock["eval_n"] / eval_s if eval_s else None,
                        resumed_at_epoch=resumed_at or None, peak_rss_mb=peak_rss_mb(),
                        packed=k)
        return [self._outcome(m, alive[m], histories[m], tests[m], timing) for m in range(k)]

    def _resume(self, snapshots: list[Path] | None) -> tuple[list[list[Epoch]], dict]:
        """The members' histories and clocks from their snapshots, or a fresh start."""
        states = ([load_snapshot(p, c.key(), SNAPSHOT_FORMAT)
                   for p, c in zip(snapshots, self.cfgs, strict=True)] if snapshots else [])
        if any(states) and not all(states):
            raise PackError("some members have a snapshot and some not")
        if any(states):
            return self.restore(states)
        return [[] for _ in range(self.k)], {"wall_s": 0.0, "train_s": 0.0, "eval_s": 0.0,
                                             "eval_n": 0}

    def _outcome(self, m: int, alive: bool, history: list[Epoch], test, timing: Timing) -> Outcome:
        model, labels = self.member(m), self.splits[m][2].labels.numpy()
        return Outcome("complete" if alive else "diverged", model, count_params(model), history,
                       classify(labels, test.predictions) if test else None,
                       stored_outputs(test.probabilities, labels) if test else None, timing,
                       environment(self.device, self.cfgs[m].threads))


def train_pack(cfgs: list[TrainConfig], data: Dataset, progress: bool = False,
               snapshots: list[Path] | None = None) -> list[Outcome]:
    """Train the configs (one config, several seeds) as one pack: each member's outcome as if
    it had trained alone. Raises PackError where they cannot train as one (pack_problem)."""
    for cfg in cfgs:
        cfg.validate()
    if (problem := pack_problem(cfgs)) is not None:
        raise PackError(problem)
    keep_freed_memory()  # as train.py
    if cfgs[0].threads:
        torch.set_num_threads(cfgs[0].threads)
    device = resolve_device(cfgs[0].device)
    if device.type == "cuda":  # as train.py: cuDNN needs telling
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    pack = _Pack(cfgs, data, device)
    if cfgs[0].batch_size > len(pack.labels[0]):
        raise UserError(f"batch size {cfgs[0].batch_size} exceeds the {len(pack.labels[0])} "
                        "training images")
    return pack.run(progress, snapshots)
