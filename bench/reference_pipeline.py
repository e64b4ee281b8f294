"""The usual PyTorch MNIST pipeline, written the pytorch/examples way, for side-by-side timing.

A map-style Dataset hands out one image at a time through a per-sample transform (ToTensor +
Normalize + optional random affine, written out because torchvision does not import here), a
DataLoader collates batches, and the loops iterate over it. Two recipes:

  examples: pytorch/examples/mnist exactly: its CNN (1.2M params), Adadelta lr 1, StepLR 0.7
            per epoch, batch 64, test batch 1000.
  tuomaso:  tuomaso/train_mnist_fast's recipe, the fastest public one (99.0% in 0.76 s on a
            laptop GPU): its CNN (conv 5x5 24, pool, conv 3x3 32, pool, FC 256; 215k params,
            log-softmax + NLL), Adam lr 1e-2 with betas (0.7, 0.9), torch's OneCycleLR without
            momentum cycling, batch 256, one epoch, test batch 2000. Only the data path is the
            examples' (their notebook keeps the tensors on the GPU; this is the CPU baseline).
  ours:     the same model and recipe as `mnist-lab train` (TrainConfig defaults, or overrides
            given as KEY=VALUE), so only the data pipeline differs.

Prints one JSON object: seconds_to_target (from process start, data load included), epochs,
accuracies, images/s, peak memory.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before the imports, as for mnist-lab)
import json  # noqa: E402
import resource  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from mnist_lab.augment import Augment, random_warp  # noqa: E402
from mnist_lab.cli import _parse_kv  # noqa: E402
from mnist_lab.config import TrainConfig  # noqa: E402
from mnist_lab.data import load  # noqa: E402
from mnist_lab.models import build_model  # noqa: E402
from mnist_lab.optim import learning_rate, make_optimizer  # noqa: E402


class MNISTDataset(Dataset):
    """One sample at a time, transformed in Python, as torchvision.datasets.MNIST does."""

    def __init__(self, split, mean: float, std: float, aug: Augment | None = None):
        self.images, self.labels = split.images.numpy(), split.labels.numpy()
        self.mean, self.std, self.aug = mean, std, aug

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0)  # ToTensor
        if self.aug is not None and self.aug.active:  # RandomAffine, per sample
            x = random_warp(x.unsqueeze(0), self.aug, torch.default_generator)[0]
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def test_accuracy(model, loader) -> float:
    """Accuracy over a DataLoader, the examples' test()."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


class TuomasoNet(nn.Module):
    """tuomaso/train_mnist_fast's final model (8_Final_00s76.ipynb), as written there."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 24, 5, 1), nn.Conv2d(24, 32, 3, 1)
        self.fc1, self.fc2 = nn.Linear(800, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return F.log_softmax(self.fc2(F.relu(self.fc1(torch.flatten(x, 1)))), dim=1)


@dataclass
class Recipe:
    """What a reference trains, and how: the loop below is the same for every recipe."""

    name: str
    model_name: str
    model: nn.Module
    opt: object  # an optimiser with param_groups and step()
    set_lr: Callable[[int], None]  # called before optimiser step i (0-based)
    loss: Callable  # (model output, labels) -> loss
    batch_size: int
    test_batch: int
    epochs: int
    aug: Augment | None = None


def _from_config(name: str, cfg: TrainConfig, steps_per_epoch: Callable[[int], int],
                 test_batch: int) -> Recipe:
    """A recipe of mnist-lab's own parts: its model, optimiser and learning-rate schedule."""
    model = build_model(cfg)
    opt = make_optimizer(cfg, model)
    per_epoch = steps_per_epoch(cfg.batch_size)

    def set_lr(step: int) -> None:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step, cfg.epochs * per_epoch, per_epoch)
    return Recipe(name, cfg.model, model, opt, set_lr, F.cross_entropy, cfg.batch_size, test_batch,
                  cfg.epochs, Augment(cfg.rotate, cfg.translate, cfg.scale, cfg.shear))


def _tuomaso(steps_per_epoch: Callable[[int], int]) -> Recipe:
    """tuomaso/train_mnist_fast: Adam (0.7, 0.9) at 1e-2, one cycle over one epoch of 256s."""
    from torch.optim.lr_scheduler import OneCycleLR

    model, batch, epochs = TuomasoNet(), 256, 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.7, 0.9))
    sched = OneCycleLR(opt, max_lr=1e-2, total_steps=steps_per_epoch(batch) * epochs,
                       cycle_momentum=False)
    # torch's scheduler steps after each optimiser step; the loop asks before: skip step 0
    return Recipe("tuomaso", "tuomaso_net", model, opt, lambda step: sched.step() if step else None,
                  F.nll_loss, batch, 2000, epochs)


def recipe(args: argparse.Namespace, steps_per_epoch: Callable[[int], int]) -> Recipe:
    """The recipe the flags name."""
    if args.recipe == "tuomaso":
        return _tuomaso(steps_per_epoch)
    if args.recipe == "examples":
        cfg = TrainConfig(model="pytorch_example", optimizer="adadelta", lr=1.0, batch_size=64,
                          scheduler="step", step_size=1, gamma=0.7, rotate=0, epochs=args.epochs)
        return _from_config("examples", cfg, steps_per_epoch, 1000)
    cfg = TrainConfig(**dict(args.overrides), seed=args.seed).validate()
    return _from_config("ours", cfg, steps_per_epoch, 1000)


def main() -> None:
    """Train until the target accuracy or the last epoch; print a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=("examples", "tuomaso", "ours"), default="examples")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=14, help="examples: epochs at most")
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--data-dir")
    p.add_argument("overrides", nargs="*", type=_parse_kv, help="ours: TrainConfig KEY=VALUE")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = load(dict(args.overrides).get("dataset", "mnist"), args.data_dir)
    train_split = data.train
    if args.subset:
        train_split = train_split.take(torch.arange(args.subset))
    r = recipe(args, lambda batch: -(-len(train_split) // batch))
    train_loader = DataLoader(MNISTDataset(train_split, data.info.mean, data.info.std, r.aug),
                              batch_size=r.batch_size, shuffle=True)
    test_loader = DataLoader(MNISTDataset(data.test, data.info.mean, data.info.std),
                             batch_size=r.test_batch)
    steps, history, reached, train_s, test_s = 0, [], None, 0.0, 0.0
    for epoch in range(1, r.epochs + 1):
        r.model.train()
        t0 = time.perf_counter()
        for x, y in train_loader:
            r.set_lr(steps)
            r.opt.zero_grad()
            r.loss(r.model(x), y).backward()
            r.opt.step()
            steps += 1
        t1 = time.perf_counter()
        train_s += t1 - t0
        acc = test_accuracy(r.model, test_loader)
        test_s += time.perf_counter() - t1
        history.append({"epoch": epoch, "test_accuracy": acc, "seconds": time.perf_counter() - t0})
        if acc >= args.target:
            reached = time.perf_counter() - START
            break
    print(json.dumps({
        "pipeline": f"reference/{r.name}", "model": r.model_name, "seed": args.seed,
        "target": args.target, "reached_target": reached is not None,
        "seconds_to_target": reached, "epochs_run": len(history),
        "test_accuracy": history[-1]["test_accuracy"], "history": history,
        "params": sum(p.numel() for p in r.model.parameters()),
        "train_images_per_s": steps * r.batch_size / train_s,
        "infer_images_per_s": len(history) * len(data.test) / test_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
