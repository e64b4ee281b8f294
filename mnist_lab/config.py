"""TrainConfig: every knob of a run, with its default and why. One place, no exec, no YAML magic.

The defaults are the recipe of the default model (compact_step3, < 8k parameters), which reaches
99.4% on MNIST within 15 epochs; every other model is one set of overrides away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from .errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULERS = ("none", "step", "onecycle", "cosine")
TTA_VIEWS = ("none", "rot5", "shift1", "rot5+shift1")  # the view sets of tta.py, by name
ADVERSARIAL = ("none", "fgsm", "pgd")  # "none" and the attacks of robust/attacks.py
FLOAT32_MAX = 3.4028234663852886e38  # torch trains in float32: a larger number cannot be used
# What a field of each annotated type accepts (an int is a float too), and its name in an error.
FIELD_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"),
               "str": (str, "a string"), "bool": (bool, "true or false"), "dict": (dict, "a table")}


def _f(default, help: str, **kw):  # noqa: A002 - mirrors argparse's name
    """A dataclass field whose help text doubles as the CLI flag's help."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Hyperparameters and settings of one training run (parameters, never learned state)."""

    dataset: str = _f("mnist", "dataset: mnist or fashion-mnist")
    model: str = _f("compact_step3", "model name (see `mnist-lab models`), or your own: "
                                     "path/to/file.py:Name")
    model_kwargs: dict = _f({}, "extra model arguments, e.g. hidden=128 (repeatable)")
    epochs: int = _f(15, "passes over the training set")
    batch_size: int = _f(128, "images per optimiser step")
    optimizer: str = _f("sgd", "optimiser", choices=OPTIMIZERS)
    lr: float = _f(0.1, "peak learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum for SGD")
    weight_decay: float = _f(0.0, "decoupled (AdamW) or coupled (others) weight decay")
    l2: float = _f(0.0, "explicit penalty l2 * sum(w^2) added to the loss (the linear/MLP "
                        "study's regularisation coefficient)")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss")
    dropout: float = _f(-1.0, "dropout probability for models that take one (-1: model default)")
    scheduler: str = _f("onecycle", "learning-rate schedule", choices=SCHEDULERS)
    warmup: float = _f(0.2, "onecycle: fraction of steps spent warming up")
    step_size: int = _f(5, "step schedule: epochs between decays")
    gamma: float = _f(0.1, "step schedule: decay factor")
    rotate: float = _f(7.0, "augmentation: max rotation in degrees (0: off)")
    translate: float = _f(0.05, "augmentation: max shift as a fraction of the side (0: off)")
    scale: float = _f(0.0, "augmentation: max relative zoom (0: off)")
    shear: float = _f(0.0, "augmentation: max shear in degrees (0: off)")
    val_size: int = _f(0, "hold out this many training images for validation (0: none)")
    subset: int = _f(0, "train on a class-balanced subset of this many images (0: all)")
    test_subset: int = _f(0, "evaluate on the first N test images only (0: all 10,000)")
    seed: int = _f(0, "seed for init, batch order, augmentation and splits")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    stop_at_accuracy: float = _f(0.0, "stop at the first epoch whose test accuracy >= this "
                                      "fraction (0: off)")
    # Fields added after runs were first stored carry late=True: they enter the key only when
    # changed from their default, so adding a setting does not orphan every stored run.
    normalize: bool = _f(True, "standardise pixels with the dataset's mean and std (false: "
                               "raw [0, 1] pixels, as the linear/MLP source)", late=True)
    adversarial: str = _f("none", "adversarial training: train on attack examples made against "
                                  "the current model (none: clean images)",
                          choices=ADVERSARIAL, late=True)
    epsilon: float = _f(0.3, "adversarial training: L-infinity radius in pixel space [0, 1] "
                             "(0.3: Madry et al.'s MNIST threat model)", late=True)
    # 7, not Madry et al.'s 40: each attack step costs about a training step, so 40 would make
    # training ~40x slower on 2 CPU cores; 7 steps of 2.5*eps/7 still cross the whole ball.
    attack_steps: int = _f(7, "adversarial training: PGD steps per batch, each of "
                              "2.5*epsilon/steps (Madry et al.'s MNIST model: 40 steps of "
                              "0.01; 7 keeps a step ~8x, not ~40x, a clean one)", late=True)
    # Evaluated (and checkpointed) is the average, not the last step's weights; see ema.py.
    ema: float = _f(0.0, "evaluate an exponential moving average of the weights with this "
                         "decay per step, e.g. 0.999 (0: off)", late=True)
    # The last epoch's evaluation only: k views cost k forward passes, and the curves (and a
    # stop_at_accuracy check before the last epoch) need no more than one.
    tta: str = _f("none", "test-time augmentation of the last epoch's evaluation (validation "
                          "and test): the view set of tta.py whose softmax is averaged",
                  choices=TTA_VIEWS, late=True)
    # Simard et al. (2003): alpha 34 with their sigma of 4 pixels, which elastic keeps fixed.
    elastic: float = _f(0.0, "augmentation: elastic distortion, the scale alpha in pixels of a "
                             "random displacement field smoothed by a Gaussian of sigma 4 "
                             "pixels (Simard et al. 2003: 34; 0: off)", late=True)
    # A model file's absolute path and the sha256 of its bytes, filled in when a config naming
    # one is resolved (user_models.resolve_model), never a flag. The hash enters the key, the
    # path does not: editing the file is a new experiment, moving it is not.
    model_source: dict = _f({}, "model file: its path and sha256 (set by mnist-lab)",
                            late=True, cli=False)

    def validate(self) -> TrainConfig:
        """Raise UserError on values no run could use; return self."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.l2 >= 0, f"l2 must be >= 0, got {self.l2}"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (self.dropout == -1.0 or 0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}"),
            (0 <= self.warmup < 1, "warmup must be in [0, 1)"),
            (self.step_size >= 1 and self.gamma > 0, "step schedule: step_size >= 1, gamma > 0"),
            (min(self.rotate, self.translate, self.scale, self.shear, self.elastic) >= 0,
             "augmentation ranges must be >= 0"),
            (self.translate < 1 and self.scale < 1, "translate and scale must be < 1"),
            (min(self.val_size, self.subset, self.test_subset) >= 0,
             "val_size, subset and test_subset must be >= 0"),
            (0 <= self.stop_at_accuracy <= 1, "stop_at_accuracy is a fraction in [0, 1]"),
            (self.threads >= 0, "threads must be >= 0"),
            (self.adversarial in ADVERSARIAL,
             f"adversarial must be one of {', '.join(ADVERSARIAL)}, got {self.adversarial!r}"),
            (0 <= self.epsilon <= 1, "epsilon is an L-infinity radius on [0, 1] pixels: it must "
                                     f"be in [0, 1], got {self.epsilon:g}"),
            (0 <= self.ema < 1, f"ema is a decay per step in [0, 1), got {self.ema:g}"),
            (self.tta in TTA_VIEWS, f"tta must be one of {', '.join(TTA_VIEWS)}, got {self.tta!r}"),
            (self.attack_steps >= 1, f"attack steps must be >= 1, got {self.attack_steps}"),
            (self.model_source == {} or set(self.model_source) == {"path", "sha256"},
             "model_source holds a model file's path and sha256, and nothing else"),
        ]
        for ok, message in self._float_checks() + checks:
            if not ok:
                raise UserError(message)
        return self

    def views_at(self, epoch: int) -> str:
        """The TTA view set of the evaluation after `epoch`: `tta` for the last, else none."""
        return self.tta if epoch == self.epochs else "none"

    def _float_checks(self) -> list[tuple[bool, str]]:
        """Every float field finite and within float32's range (torch's optimisers fail on
        1e40 with an overflow deep inside a step, not with a message)."""
        return [(math.isfinite(v) and abs(v) <= FLOAT32_MAX,
                 f"{f.name.replace('_', ' ')} must be a finite number within float32's range "
                 f"(|x| <= 3.4e38), got {v:g}")
                for f in dataclasses.fields(self) if f.type in ("float", float)
                for v in [getattr(self, f.name)] if isinstance(v, int | float)]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict, rejecting unknown keys and values of the wrong type (a study
        file's `lr = "fast"`) with a UserError."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(types))
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}")
        for name, value in d.items():
            want, words = FIELD_TYPES[types[name]]
            # bool is an int to Python, never to a config: `epochs = true` is a slip
            if not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
                raise UserError(f"config key {name!r} must be {words}, got "
                                f"{type(value).__name__} {value!r}")
        return cls(**d)

    def key(self) -> str:
        """Content hash of the resolved config: equal configs are the same experiment.

        Settings that change speed but not results (device, threads) are left out, and so are
        late fields at their default.
        """
        late = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(self) if f.metadata.get("late")}
        d = {k: v for k, v in self.to_dict().items()
             if k not in ("device", "threads") and not (k in late and v == late[k])}
        if "model_source" in d:  # the file's bytes are the experiment, not where it lies
            d["model_source"] = {"sha256": self.model_source.get("sha256")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunContext:
    """What a run needs beyond its hyper-parameters: never part of its results or its key."""

    data_dir: str | None = None  # dataset folder; None: $MNIST_LAB_DATA, the cache, a download
    snapshot: str | None = None  # file to resume from and keep progress in (see snapshot.py)
    progress: bool = False  # draw a progress bar and a line per epoch
    pause_after: int | None = None  # search trials: stop after this many epochs (train.py)
